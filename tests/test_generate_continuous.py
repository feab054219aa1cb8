"""The continuous batch itself (tuneloom.generate.continuous), on the tiny-random template.

Rows join a running batch at different steps and leave at their own max_tokens or stop string;
each must still produce exactly what `generate()` produces for it alone, and sampling knobs apply
per row.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tuneloom.generate.continuous import ContinuousBatch, Row, pick_tokens, supports_continuous
from tuneloom.generate.generator import generate
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import InferenceParams

TEXTS = ["great product, works well", "broke after a day", "I love it", "awful quality", "ok", "hello there, friend"]


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_for_inference("tiny-random")


def test_rows_joining_and_leaving_answer_as_generate_does_alone(loaded: Any) -> None:
    params = [
        InferenceParams(max_tokens=m, temperature=0, stop=s)
        for m, s in [(12, ()), (20, ()), (7, ()), (30, ("e",)), (5, ()), (25, ())]
    ]
    expected = [generate(loaded, [t], p)[0] for t, p in zip(TEXTS, params, strict=True)]
    rows = [Row.create(loaded, t, p) for t, p in zip(TEXTS, params, strict=True)]
    streamed = {id(row): "" for row in rows}
    batch, waiting, steps = ContinuousBatch(loaded), rows[2:], 0
    batch.add(rows[:2])
    while batch.rows or waiting:
        if waiting and steps % 3 == 0:
            batch.add([waiting.pop(0)])  # joins a batch that is mid-generation
        else:
            batch.step()
        steps += 1
        for row in rows:
            streamed[id(row)], row.piece = streamed[id(row)] + row.piece, ""
        batch.drop_finished()
    assert [row.generation(loaded) for row in rows] == expected
    assert [streamed[id(row)] for row in rows] == [g.text for g in expected]  # the pieces add up
    assert expected[3].finish_reason == "stop" and expected[0].finish_reason == "length"


def test_sampling_parameters_apply_per_row() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]] * 4)
    greedy = [1, 1, 1, 1]
    params = [
        InferenceParams(temperature=0),
        InferenceParams(temperature=2.0, top_k=1),  # only the best token is left
        InferenceParams(temperature=2.0, top_p=1e-6),  # the smallest nucleus: the best token
        InferenceParams(temperature=0.01),  # nearly greedy
    ]
    for _ in range(20):
        assert pick_tokens(logits, params).tolist() == greedy
    wide = [InferenceParams(temperature=5.0)] * 4
    drawn = {tuple(pick_tokens(logits, wide).tolist()) for _ in range(20)}
    assert len(drawn) > 1  # a hot row really samples


def test_beam_search_is_left_to_generate(loaded: Any) -> None:
    assert supports_continuous(loaded, InferenceParams())
    assert not supports_continuous(loaded, InferenceParams(num_beams=2))
