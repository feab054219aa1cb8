"""The next token while sampling: the distribution transformers' warpers define, without sorting the
vocabulary, and a seeded row's draw independent of the rows beside it."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tuneloom.generate import sampling
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.sampling import CANDIDATES, pick_tokens, token_logprobs

DRAWS = 60_000


def _warped(logits: torch.Tensor, params: InferenceParams) -> torch.Tensor:
    """The probabilities `generate()` samples from: its own warpers, in its order."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(params.temperature)])
    if params.top_k:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    return warpers(None, logits[None].clone())[0].softmax(dim=-1)  # type: ignore[arg-type]


SETTINGS = [
    {"temperature": 1.0},
    {"temperature": 0.7, "top_p": 0.8},
    {"temperature": 1.3, "top_k": 5, "top_p": 0.9},
    {"temperature": 0.9, "top_k": 40},
    {"temperature": 4.0, "top_p": 0.95},  # a flat distribution: the nucleus is wider than the candidates
]


WAYS = [(setting, False) for setting in SETTINGS] + [(s, True) for s in SETTINGS if s.get("top_p")]


@pytest.mark.parametrize(("setting", "in_full"), WAYS)
def test_draws_follow_the_distribution_of_generates_warpers(
    setting: dict[str, float], in_full: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways to a top-p nucleus: the CPU's (the best candidates first) and the GPU's (every token sorted,
    `in_full`)."""
    monkeypatch.setattr(sampling, "sorts_in_full", lambda device: in_full)
    vocabulary = 4 * CANDIDATES
    logits = torch.randn(vocabulary, generator=torch.Generator().manual_seed(1))
    params = InferenceParams.from_dict({**setting, "do_sample": True})
    expected = _warped(logits, params)
    torch.manual_seed(0)
    drawn = pick_tokens(logits[None].repeat(DRAWS, 1), [params] * DRAWS)
    observed = torch.bincount(drawn, minlength=vocabulary).float() / DRAWS
    assert float(observed[expected == 0].sum()) == 0.0  # nothing the warpers drop is ever drawn
    assert float((observed - expected).abs().max()) < 0.01
    if setting.get("top_p") == 0.95:
        assert int((expected > 0).sum()) > CANDIDATES  # the full-sort path really ran


def test_a_seeded_row_draws_the_same_token_alone_or_beside_others() -> None:
    logits = torch.randn(3, 500, generator=torch.Generator().manual_seed(2))
    mine = InferenceParams.from_dict({"temperature": 1.5, "top_p": 0.9, "do_sample": True, "seed": 5})
    alone = [int(pick_tokens(logits[:1], [mine], [torch.Generator().manual_seed(5)])[0]) for _ in range(3)]
    others = [InferenceParams.from_dict({"temperature": 1.0, "top_k": 300, "do_sample": True}), InferenceParams()]
    beside = pick_tokens(logits, [mine, *others], [torch.Generator().manual_seed(5), None, None])
    assert alone == [alone[0]] * 3 and int(beside[0]) == alone[0]
    assert int(beside[2]) == int(logits[2].argmax())  # the greedy row beside it is untouched


def test_logprobs_are_those_of_the_distribution_each_row_draws_from() -> None:
    """What `logprobs` reports: the warped distribution a sampling row draws from (what the test above checks
    the draws against), and a greedy row's model distribution, each row in a batch of mixed parameters."""
    logits = torch.randn(len(SETTINGS) + 1, 4 * CANDIDATES, generator=torch.Generator().manual_seed(3))
    params = [InferenceParams.from_dict({**setting, "do_sample": True}) for setting in SETTINGS] + [InferenceParams()]
    tokens = pick_tokens(logits, params)
    chosen, values, ids = token_logprobs(logits, tokens, params, top_n=logits.shape[1])
    for row, p in enumerate(params):
        expected = _warped(logits[row], p) if p.sampling else logits[row].softmax(dim=-1)
        reported = torch.zeros_like(expected).scatter(0, ids[row], values[row].exp())
        assert torch.allclose(reported, expected, atol=1e-6), p
        assert float(chosen[row]) == pytest.approx(float(expected[tokens[row]].log()), abs=1e-5)
