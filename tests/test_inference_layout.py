"""The CPU memory layout of a model loaded for inference (`generate.loading._input_major_linears`).

Generation on the CPU stores each float32 linear weight transposed in memory, for speed. A user relies on
that changing nothing else: the same logits and answers as the weights as stored, and exports and
the benchmarks' plain baseline still get the stored layout.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tuneloom.generate.generator import generate
from tuneloom.generate.loading import INPUT_MAJOR_ENV, load_for_inference
from tuneloom.generate.params import InferenceParams

TEXTS = ["great product, works well", "broke after a day", "I love it", "ok"]


def linears(loaded: Any) -> list[torch.nn.Linear]:
    found = [m for m in loaded.model.modules() if type(m) is torch.nn.Linear]
    assert found
    return found


def test_weights_are_input_major_and_answer_exactly_as_stored_weights_do() -> None:
    loaded, stored = load_for_inference("tiny-random"), load_for_inference("tiny-random", as_stored=True)
    assert all(m.weight.t().is_contiguous() and not m.weight.is_contiguous() for m in linears(loaded))
    assert all(m.weight.is_contiguous() for m in linears(stored))
    ids = stored.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**ids).logits, stored.model(**ids).logits)
    for params in (InferenceParams(max_tokens=12, temperature=0), InferenceParams(max_tokens=12, seed=7)):
        assert generate(loaded, TEXTS, params) == generate(stored, TEXTS, params)
        assert generate(loaded, TEXTS[:1], params) == generate(stored, TEXTS[:1], params)


def test_bfloat16_weights_keep_the_stored_layout() -> None:
    """Transposed, bfloat16 weights multiply slower on the CPU: only float32 ones change layout."""
    loaded = load_for_inference("tiny-random", {"model_config": {"torch_dtype": "bfloat16"}})
    assert all(m.weight.dtype == torch.bfloat16 and m.weight.is_contiguous() for m in linears(loaded))


def test_the_environment_switch_keeps_the_stored_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INPUT_MAJOR_ENV, "0")
    assert all(m.weight.is_contiguous() for m in linears(load_for_inference("tiny-random")))
