"""Repetition controls (`repetition_penalty`, `presence_penalty`, `frequency_penalty`) on every path.

tiny-random, greedy, writes one token over and over ("reveal reveal …"): the runaway generation these
knobs exist for. The arithmetic is checked against transformers' own processor; the continuous batch
against `generate()`; a seeded row against itself in a batch.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from tuneloom.cli import main
from tuneloom.errors import SettingsError
from tuneloom.generate.continuous import ContinuousBatch, run_alone, supports_continuous
from tuneloom.generate.generator import generate, stream
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.penalties import OutputPenalty, TokenCounts
from tuneloom.generate.rows import Row

TEXTS = ["I love it", "broke after a day", "hello there, friend"]  # three prompt lengths: a padded batch


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_for_inference("tiny-random")


def continuous(loaded: Any, texts: list[str], params: InferenceParams, top_logprobs: int | None = None) -> list[Row]:
    rows = [Row.create(loaded, text, params, top_logprobs) for text in texts]
    for _ in run_alone(loaded, rows):
        pass
    return rows


def test_the_penalties_are_transformers_and_openais_arithmetic() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0], [1.0, 2.0, -2.0, 3.0, -0.5, 0.25]])
    pad = 5
    prompts = torch.tensor([[pad, pad, 0, 3], [1, 5, 5, 2]])  # row 0 left-padded (pad is token 5); row 1 uses 5
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    counts = TokenCounts.of_prompts(prompts, mask, vocabulary=6)
    counts.count(torch.tensor([1, 4]))
    counts.count(torch.tensor([1, 0]))
    repetition = [InferenceParams(repetition_penalty=p) for p in (1.7, 0.6)]
    penalized = counts.penalize(logits.clone(), repetition)
    seen = torch.cat([prompts, torch.tensor([[1, 1], [4, 0]])], dim=1)
    padding = torch.tensor([2, 0])
    for row, params in enumerate(repetition):
        assert params.repetition_penalty is not None
        theirs = RepetitionPenaltyLogitsProcessor(
            params.repetition_penalty, prompt_ignore_length=padding[row : row + 1]
        )
        expected = theirs(seen[row : row + 1], logits[row : row + 1].clone())  # type: ignore[arg-type]
        assert torch.equal(penalized[row], expected[0]), row
    assert float(penalized[0, 5]) == 0.0  # the padding is no token of the prompt
    output = [InferenceParams(presence_penalty=0.5, frequency_penalty=0.25), InferenceParams(frequency_penalty=-1.0)]
    by_hand = logits.clone()
    by_hand[0, 1] -= 0.5 + 2 * 0.25  # row 0 wrote token 1 twice; its prompt's tokens are not counted
    by_hand[1, 4] += 1.0
    by_hand[1, 0] += 1.0
    assert torch.equal(counts.penalize(logits.clone(), output), by_hand)
    generated = torch.cat([prompts, torch.tensor([[1, 1], [4, 0]])], dim=1)
    processor = OutputPenalty(output[0], prompt_width=4)  # what generate() applies: the same, after the prompt
    assert torch.equal(processor(generated[:1], logits[:1].clone())[0], by_hand[0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("repetition_penalty", 0, "above 0 and at most 10"),
        ("repetition_penalty", 10.5, "above 0 and at most 10"),
        ("repetition_penalty", math.nan, "above 0 and at most 10"),
        ("presence_penalty", -2.5, "between -2 and 2"),
        ("frequency_penalty", 3, "between -2 and 2"),
        ("frequency_penalty", "high", "must be a number"),
    ],
)
def test_out_of_range_penalties_are_refused_by_name(key: str, value: Any, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        InferenceParams.from_dict({key: value})
    assert caught.value.key == key and f"'{key}'" in caught.value.message and words in caught.value.message


def test_the_penalties_travel_to_a_generation_node_as_sent() -> None:
    """The remote backend sends `to_dict()`; the node reads it with `from_dict`. An unset repetition_penalty
    stays unset, so the node's model applies its own default, as the server's would."""
    for params in (
        InferenceParams(),
        InferenceParams(repetition_penalty=1.2, presence_penalty=-1, frequency_penalty=2),
    ):
        assert InferenceParams.from_dict(params.to_dict()) == params


def test_a_repetition_penalty_ends_the_loop_and_both_paths_agree(loaded: Any) -> None:
    """Greedy rows with penalties: `generate()` (transformers' processors) and the continuous batch give the
    same text for every input of a padded batch, and the text no longer repeats a token."""
    plain = InferenceParams(max_tokens=16, temperature=0)
    (looping,) = continuous(loaded, TEXTS[:1], plain)
    assert len(set(looping.ids)) == 1  # the runaway generation
    for penalties in ({"repetition_penalty": 2.0}, {"presence_penalty": 1.5, "frequency_penalty": 0.5}):
        params = replace(plain, **penalties)  # type: ignore[arg-type]
        rows = continuous(loaded, TEXTS, params)
        assert [row.generation(loaded) for row in rows] == generate(loaded, TEXTS, params)
        assert "".join(stream(loaded, TEXTS[0], params)) == rows[0].generation(loaded).text
        assert all(len(set(row.ids)) == len(row.ids) for row in rows), penalties  # no token twice
        assert rows[0].generation(loaded).text != looping.generation(loaded).text


def test_a_penalized_seeded_row_is_the_same_alone_or_in_a_batch(loaded: Any) -> None:
    seeded = InferenceParams(max_tokens=12, temperature=1.2, seed=4, repetition_penalty=1.5, frequency_penalty=1.0)
    (alone,) = generate(loaded, [TEXTS[0]], seeded)
    rows = [
        Row.create(loaded, TEXTS[1], InferenceParams(max_tokens=14, temperature=0, presence_penalty=2.0)),
        Row.create(loaded, TEXTS[2], InferenceParams(max_tokens=14, temperature=1.0)),
        Row.create(loaded, TEXTS[0], seeded),
    ]
    batch = ContinuousBatch(loaded)
    batch.add(rows[:2])
    batch.step()
    batch.add(rows[2:])  # joins mid-generation, beside a penalized row and a plain one
    while not rows[2].finished:
        batch.step()
    assert rows[2].generation(loaded) == alone


def test_penalized_rows_joining_and_leaving_a_running_batch_answer_as_alone(loaded: Any) -> None:
    """The batch holds its penalized rows' counts as one tensor, joined as rows join and cut as they leave: rows with
    and without penalties, joining at their own steps and leaving at their own `max_tokens`, each give what
    `generate()` gives for it alone."""
    greedy = InferenceParams(temperature=0)
    asks = [
        (TEXTS[0], replace(greedy, max_tokens=4, repetition_penalty=2.0)),
        (TEXTS[1], replace(greedy, max_tokens=10)),
        (TEXTS[2], replace(greedy, max_tokens=8, presence_penalty=1.5, frequency_penalty=0.5)),
        (TEXTS[1], replace(greedy, max_tokens=5, repetition_penalty=1.5)),
    ]
    expected = [generate(loaded, [text], params)[0] for text, params in asks]
    rows = [Row.create(loaded, text, params) for text, params in asks]
    batch, joins = ContinuousBatch(loaded), {0: rows[:2], 2: rows[2:3], 6: rows[3:]}  # at 6 the first has left
    for step in range(14):
        if step in joins:
            batch.add(joins[step])
        else:
            batch.step()
    assert all(row.finished for row in rows)
    assert [row.generation(loaded) for row in rows] == expected
    assert len(set(rows[0].ids)) == len(rows[0].ids)  # the penalties took effect: no token twice


def test_logprobs_report_the_penalized_distribution(loaded: Any) -> None:
    """A greedy row's token is the likeliest of what it reports: the distribution after its penalties."""
    (row,) = continuous(loaded, TEXTS[:1], InferenceParams(max_tokens=8, repetition_penalty=3.0), top_logprobs=2)
    assert len(set(row.ids)) == 8
    assert all(logprob.top[0][0] == logprob.token for logprob in row.logprobs)


def test_a_models_own_repetition_penalty_is_the_default_and_keeps_continuous_batching() -> None:
    """Such a model was pushed off the continuous batch (no seed, no logprobs); a row that sets none takes it."""
    loaded = load_for_inference("tiny-random")
    loaded.model.generation_config.repetition_penalty = 2.0
    greedy = InferenceParams(max_tokens=10, temperature=0)
    assert supports_continuous(loaded, greedy)
    assert continuous(loaded, TEXTS[:1], greedy)[0].generation(loaded) == generate(loaded, TEXTS[:1], greedy)[0]
    assert generate(loaded, TEXTS[:1], greedy) == generate(loaded, TEXTS[:1], replace(greedy, repetition_penalty=2.0))
    unpenalized = generate(loaded, TEXTS[:1], replace(greedy, repetition_penalty=1.0))[0]
    assert continuous(loaded, TEXTS[:1], replace(greedy, repetition_penalty=1.0))[0].generation(loaded) == unpenalized
    assert unpenalized.text != generate(loaded, TEXTS[:1], greedy)[0].text
    seeded = InferenceParams(max_tokens=6, temperature=1.0, seed=3)
    assert generate(loaded, TEXTS[:1], seeded) == generate(loaded, TEXTS[:1], seeded)  # a seed is honoured


def test_the_cli_takes_the_penalties(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "tiny-random", TEXTS[0], "--max-tokens", "12", "--temperature", "0"]
    assert main([*args, "--repetition-penalty", "2", "--frequency-penalty", "0.5", "--json"]) == 0
    out = capsys.readouterr().out
    expected = generate(
        loaded, TEXTS[:1], InferenceParams(max_tokens=12, repetition_penalty=2.0, frequency_penalty=0.5)
    )
    assert expected[0].text in out and "reveal reveal" not in out
    assert main([*args, "--presence-penalty", "2.5"]) == 1
    assert "'presence_penalty' must be between -2 and 2, got 2.5" in capsys.readouterr().err
