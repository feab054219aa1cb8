"""The next token of every row of a batch, each row with its own sampling parameters (and seed).

The rules are those of `generate()`'s logits warpers, in their order: temperature, then top-k, then
top-p (the most likely tokens until their mass reaches `top_p`, at least one), then a draw. What
differs is the cost. Sorting the whole vocabulary for every row at every step took longer than the
model's own step for a 135M model on a CPU, so a row sorts only what its parameters can keep:
- plain temperature sampling sorts nothing: the draw walks the vocabulary in index order;
- with top-k, only the k best are taken (`topk`);
- with top-p alone, the best `CANDIDATES` are taken, which hold the nucleus unless the distribution
  is very flat; a row whose nucleus is wider is sorted in full. On a GPU every top-p row is sorted in
  full (`sorts_in_full`): cheap there, and no host wait to find out which rows need it.

A draw is one uniform number per row turned into a token by the row's cumulative probabilities
(inverse CDF). A seeded row takes its number from its own generator, and the tokens it walks and
their order depend on its own parameters only, so its token does not depend on what else is in the
batch: the same request and seed give the same text alone or among others.

`token_logprobs` reports, for the rows that ask, the distribution a row's token was drawn from, by
the same rules (computed only for those rows: no other row pays for it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from tuneloom.generate.params import InferenceParams

CANDIDATES = 256  # taken before sorting in full, for a top-p row without top-k


def pick_tokens(
    logits: torch.Tensor,
    params: list[InferenceParams],
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """The next token per row: argmax for greedy rows, a draw for sampling rows (`generators[i]` for row i)."""
    tokens = logits.argmax(dim=-1)
    own = list(generators or [None] * len(params))
    sampling = [i for i, p in enumerate(params) if p.sampling]
    if not sampling:
        return tokens
    plain = [i for i in sampling if not params[i].top_k and params[i].top_p >= 1.0]
    ranked = [i for i in sampling if params[i].top_k or params[i].top_p < 1.0]
    for rows, draw in ((plain, _draw_plain), (ranked, _draw_ranked)):
        if rows:
            index = on_device(rows, logits.device)
            scaled = logits[index].float() / column([max(params[i].temperature, 1e-5) for i in rows], logits)
            uniform = _uniforms([own[i] for i in rows], logits.device)
            tokens[index] = draw(scaled, [params[i] for i in rows], uniform)
    return tokens


def _draw_plain(scaled: torch.Tensor, _: list[InferenceParams], uniform: torch.Tensor) -> torch.Tensor:
    """Temperature only: the whole vocabulary, in index order."""
    return _inverse_cdf(scaled.softmax(dim=-1), uniform)


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, params: list[InferenceParams], top_n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the log-probability of its token, and the `top_n` most likely tokens' log-probabilities and ids.

    They are those of the distribution the token was drawn from, as OpenAI reports them (vLLM's
    `processed_logprobs`, not its default raw ones): the model's, after the row's temperature, top-k
    and top-p, renormalized over the tokens these keep, so a token they drop has none (-inf) and a
    row with `top_k` 1 reports 0 for its one token. A greedy row takes the most likely token of the
    model's own distribution (unscaled, unfiltered), and reports that distribution.
    """
    temperature = [max(p.temperature, 1e-5) if p.sampling else 1.0 for p in params]  # x / 1.0 is x exactly
    scaled = logits.float() / column(temperature, logits)
    logprobs = scaled.log_softmax(dim=-1)
    ranked = [i for i, p in enumerate(params) if p.sampling and (p.top_k or p.top_p < 1.0)]  # the others: all kept
    if ranked:
        index = on_device(ranked, logits.device)
        filtered = logprobs[index].masked_fill(~_kept(scaled[index], [params[i] for i in ranked]), float("-inf"))
        logprobs[index] = filtered - filtered.logsumexp(dim=-1, keepdim=True)
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1)
    top = logprobs.topk(min(top_n, logprobs.shape[1]), dim=-1)
    return chosen, top.values, top.indices


def _kept(scaled: torch.Tensor, params: list[InferenceParams]) -> torch.Tensor:
    """Per row, which tokens its top-k and top-p keep: those `_draw_ranked` can draw (a token with no
    probability left after filtering is not kept)."""
    kept = torch.zeros_like(scaled, dtype=torch.bool)
    for rows, probs, ids in _nuclei(scaled, params):
        kept[rows] = torch.zeros_like(scaled[rows], dtype=torch.bool).scatter(1, ids, probs > 0)
    return kept


def _draw_ranked(scaled: torch.Tensor, params: list[InferenceParams], uniform: torch.Tensor) -> torch.Tensor:
    """Top-k and/or top-p: the kept tokens, most likely first."""
    picked = torch.zeros(len(params), dtype=torch.long, device=scaled.device)
    for rows, probs, ids in _nuclei(scaled, params):
        picked[rows] = ids.gather(1, _inverse_cdf(probs, uniform[rows])[:, None]).squeeze(1)
    return picked


def _nuclei(
    scaled: torch.Tensor, params: list[InferenceParams]
) -> Iterator[tuple[slice | list[int], torch.Tensor, torch.Tensor]]:
    """(rows, their kept probabilities, those tokens' ids), the later over the earlier: every row from the best
    candidates first, then, sorted in full, the rows whose nucleus is wider than the candidates."""
    vocabulary = scaled.shape[1]
    top_k, top_p = _top_k(params, vocabulary), [p.top_p for p in params]
    width = vocabulary
    if not sorts_in_full(scaled.device):
        width = min(vocabulary, max(k if k < vocabulary else CANDIDATES for k in top_k))
    probs, ids, complete = _nucleus(scaled, top_k, top_p, width)
    yield slice(None), probs, ids
    if width < vocabulary and not bool(complete.all()):  # (the check waits for the device: a CPU's is free)
        wide = (~complete).nonzero().flatten().tolist()
        probs, ids, _ = _nucleus(scaled[wide], [top_k[i] for i in wide], [top_p[i] for i in wide], vocabulary)
        yield wide, probs, ids


def sorts_in_full(device: torch.device) -> bool:
    """Whether a top-p row sorts its whole vocabulary at once. On a GPU it does: the sort takes
    microseconds there, while looking among the best `CANDIDATES` first would make the host read a
    flag from the device at every token (whether the nucleus lay within them), a wait that stops
    the host from running ahead of the device. On a CPU the sort is what costs."""
    return device.type != "cpu"


def _top_k(params: list[InferenceParams], vocabulary: int) -> list[int]:
    """Each row's k, the whole vocabulary where top-k is off (0) or keeps everything."""
    return [p.top_k if 0 < p.top_k < vocabulary else vocabulary for p in params]


def _nucleus(
    scaled: torch.Tensor, top_k: list[int], top_p: list[float], width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `width` best tokens per row with their probabilities after top-k and top-p (0 where dropped),
    their ids, and per row whether its nucleus surely lies within them."""
    vocabulary = scaled.shape[1]
    probs, ids = scaled.softmax(dim=-1).topk(width, dim=-1)  # most likely first
    rank = torch.arange(width, device=scaled.device)[None, :]
    k = column(top_k, scaled)
    probs = probs.masked_fill(rank >= k, 0.0)
    limited = k < vocabulary  # top-k: its k tokens are the whole distribution
    probs = torch.where(limited, probs / probs.sum(dim=-1, keepdim=True), probs)
    before = probs.cumsum(dim=-1) - probs  # the mass of the more likely tokens
    p = column(top_p, scaled)
    probs = probs.masked_fill((before >= p) & (rank > 0), 0.0)
    complete = limited.squeeze(1) | (probs.sum(dim=-1) >= p.squeeze(1)) | (width == vocabulary)
    return probs, ids, complete


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Per row, the first position whose cumulative probability passes `uniform` × the row's total.

    A position with no probability is never chosen (its cumulative equals its predecessor's), except
    past the end when rounding lifts the target to the total: the last position with any is taken then.
    """
    cumulative = probs.cumsum(dim=-1)
    target = (uniform * cumulative[:, -1]).unsqueeze(1)
    position = torch.searchsorted(cumulative, target, right=True).squeeze(1)
    return torch.minimum(position, (cumulative < cumulative[:, -1:]).sum(dim=-1))


def _uniforms(generators: Sequence[torch.Generator | None], device: torch.device) -> torch.Tensor:
    """One number in [0, 1) per row: a seeded row's from its generator, the others' from torch's global one."""
    numbers = torch.rand(len(generators), device=device)
    for i, generator in enumerate(generators):
        if generator is not None:
            numbers[i] = torch.rand(1, generator=generator, device=generator.device)[0]
    return numbers


def column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """`values` as a column on `like`'s device, to broadcast over the vocabulary."""
    return on_device(values, like.device)[:, None]


def on_device(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """`values` (per-row settings, row numbers) as a tensor on `device`, without waiting for it.

    `torch.tensor(values, device=…)`, or indexing a GPU tensor with a list, copies from ordinary memory
    with a blocking copy, which first waits for every kernel already queued (PyTorch's `memcpy_and_sync`):
    at every sampled token the host would stop until the step running ahead had finished. From pinned
    memory the copy is queued behind those kernels instead.
    """
    if device.type != "cuda":
        return torch.tensor(values, device=device)
    return torch.tensor(values, pin_memory=True).to(device, non_blocking=True)
