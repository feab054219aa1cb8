"""The compiled decode path (`tuneloom generate --compile`): a static, bucketed KV cache for one-input calls.

transformers compiles the decode step only on an accelerator, so here (CPU) the static cache runs
eagerly: these tests check that the path gives exactly the default path's answers and which calls
take it; the speed is measured on a GPU by `bench/gpu.sh` (bench.generate's `compiled` variant).
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import run_cli

from tuneloom.generate.compiled import CACHE_BUCKET, cache_length, compile_decode, static_cache_kwargs
from tuneloom.generate.generator import generate, stream
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import InferenceParams

PROMPTS = ["Is the delivery late?", "Summarise: the invoice was paid twice and the customer wants a refund."]


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_for_inference("tiny-random")


def test_the_cache_is_rounded_up_to_a_bucket_within_the_context() -> None:
    assert cache_length(100, None) == CACHE_BUCKET
    assert cache_length(CACHE_BUCKET + 1, None) == 2 * CACHE_BUCKET  # one more graph, not one per length
    assert cache_length(900, 1000) == 1000  # never sized past the model's positions
    assert cache_length(1000, 1000) == 1000


def test_only_single_input_single_beam_calls_take_the_static_cache() -> None:
    greedy = InferenceParams(max_tokens=20)
    assert static_cache_kwargs(True, 1, 30, greedy, 1024) == {"cache_implementation": "static", "max_cache_len": 1024}
    assert static_cache_kwargs(False, 1, 30, greedy, 1024) == {}
    assert static_cache_kwargs(True, 2, 30, greedy, 1024) == {}  # a new batch size would be a new graph
    assert static_cache_kwargs(True, 1, 30, InferenceParams(max_tokens=20, num_beams=2), 1024) == {}


def test_the_static_cache_path_answers_exactly_as_the_default_path(loaded: Any) -> None:
    greedy = InferenceParams(max_tokens=24)
    default = [generate(loaded, [p], greedy)[0] for p in PROMPTS]
    default_stream = ["".join(stream(loaded, p, greedy)) for p in PROMPTS]
    loaded.compiled_decode = True  # what compile_decode sets on a GPU; eager here
    try:
        static = [generate(loaded, [p], greedy)[0] for p in PROMPTS]
        static_stream = ["".join(stream(loaded, p, greedy)) for p in PROMPTS]
    finally:
        loaded.compiled_decode = False
    assert loaded.model._previous_max_cache_length == CACHE_BUCKET  # transformers did build the static cache
    assert [(g.text, g.tokens, g.finish_reason) for g in static] == [
        (g.text, g.tokens, g.finish_reason) for g in default
    ]
    assert any(g.tokens > 0 for g in default)
    assert static_stream == default_stream == [g.text for g in default]


def test_compile_is_refused_quietly_without_a_gpu(loaded: Any) -> None:
    assert compile_decode(loaded) is False and loaded.compiled_decode is False
    result = run_cli("generate", "tiny-random", "Is the delivery late?", "--compile", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert "--compile has no effect without a GPU" in result.stderr
