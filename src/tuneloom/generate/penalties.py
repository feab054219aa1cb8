"""Repetition controls: the logits a row's next token is chosen from, less what it has already said.

- `repetition_penalty` (Hugging Face's): every token already in the prompt or the output has its
  logit divided by the penalty where positive, multiplied by it where negative (once, however often
  it occurred). Left padding is not part of a prompt.
- `presence_penalty` and `frequency_penalty` (OpenAI's): `logit -= presence × [count > 0] + frequency × count`,
  counting the output's tokens only.

They apply before temperature, top-k and top-p, in this order (as vLLM and transformers apply them),
and what is drawn from and reported (`sampling.token_logprobs`) is the penalized distribution. A
row's penalties read its own tokens only, so a seeded row draws the same alone or in any batch.

Two paths, one arithmetic: the continuous batch keeps one `TokenCounts` for all its penalized rows
(joined as rows join, selected as they leave, counted in place each step) and penalizes them at once
per step; transformers' `generate()` applies `repetition_penalty`
itself (its processor skips left padding too) and `OutputPenalty` for the other two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import LogitsProcessor

from tuneloom.generate.params import InferenceParams
from tuneloom.generate.sampling import column, on_device


def has_penalty(params: InferenceParams) -> bool:
    """Whether `params` change any logit (a `repetition_penalty` of None is unresolved: see `with_model_default`)."""
    return params.repetition_penalty not in (None, 1.0) or has_output_penalty(params)


def has_output_penalty(params: InferenceParams) -> bool:
    return params.presence_penalty != 0.0 or params.frequency_penalty != 0.0


def with_model_default(model: Any, params: InferenceParams) -> InferenceParams:
    """`params` with the model's generation-config `repetition_penalty` where they set none (what `generate()`
    would apply), so every path penalizes a row alike."""
    if params.repetition_penalty is not None:
        return params
    default = getattr(getattr(model, "generation_config", None), "repetition_penalty", None)
    return replace(params, repetition_penalty=float(default) if default is not None else 1.0)


@dataclass
class TokenCounts:
    """For some rows: which tokens each has seen (prompt and output) and how often its output holds each.

    One (rows, vocabulary) tensor each, so one step penalizes and counts every penalized row at once.
    A batch holds them from step to step: rows that join add theirs (`joined`), rows that leave take theirs
    away (`selected`), rather than every step gathering each row's again (a copy of rows × vocabulary).
    """

    seen: torch.Tensor  # bool
    generated: torch.Tensor  # float: counts

    @classmethod
    def of_prompts(cls, ids: torch.Tensor, mask: torch.Tensor, vocabulary: int) -> TokenCounts:
        """The counts before any output: the prompts' tokens (`ids` left-padded; `mask` 0 on padding) seen."""
        hits = token_counts(ids, mask.float(), vocabulary)
        return cls(hits > 0, torch.zeros_like(hits))

    @staticmethod
    def joined(first: TokenCounts | None, then: TokenCounts | None) -> TokenCounts | None:
        """The rows of `first`, then those of `then` (either None: no rows)."""
        if first is None or then is None:
            return then if first is None else first
        return TokenCounts(torch.cat([first.seen, then.seen]), torch.cat([first.generated, then.generated]))

    def selected(self, rows: Sequence[int]) -> TokenCounts | None:
        """These rows only, in this order; None where there are none."""
        if not rows:
            return None
        index = on_device(rows, self.seen.device)
        return TokenCounts(self.seen[index], self.generated[index])

    def penalize(self, logits: torch.Tensor, params: Sequence[InferenceParams]) -> torch.Tensor:
        """`logits` (one row per counted row) after each row's penalties (`repetition_penalty` resolved)."""
        penalties = [p.repetition_penalty or 1.0 for p in params]
        if any(penalty != 1.0 for penalty in penalties):
            repetition = column(penalties, logits)
            repeated = torch.where(logits < 0, logits * repetition, logits / repetition)
            logits = torch.where(self.seen, repeated, logits)
        return output_penalty(logits, self.generated, params)

    def count(self, tokens: torch.Tensor) -> None:
        """Add each row's new token."""
        self.seen.scatter_(1, tokens[:, None], True)
        self.generated.scatter_add_(1, tokens[:, None], torch.ones_like(tokens[:, None], dtype=self.generated.dtype))


def output_penalty(logits: torch.Tensor, generated: torch.Tensor, params: Sequence[InferenceParams]) -> torch.Tensor:
    """OpenAI's presence and frequency penalties, from each row's output token counts."""
    if not any(has_output_penalty(p) for p in params):
        return logits
    presence = column([p.presence_penalty for p in params], logits)
    frequency = column([p.frequency_penalty for p in params], logits)
    return logits - presence * (generated > 0) - frequency * generated


class OutputPenalty(LogitsProcessor):
    """Presence and frequency penalties for transformers' `generate()`: every row of a call shares `params`,
    and its output is what follows the (left-padded) prompt's `prompt_width` positions."""

    def __init__(self, params: InferenceParams, prompt_width: int):
        self.params = params
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        output = input_ids[:, self.prompt_width :]
        generated = token_counts(output, torch.ones_like(output, dtype=scores.dtype), scores.shape[1])
        return output_penalty(scores, generated, [self.params] * scores.shape[0])  # type: ignore[return-value]


def token_counts(ids: torch.Tensor, weights: torch.Tensor, vocabulary: int) -> torch.Tensor:
    """Per row of `ids`, each token's summed `weights` (rows, vocabulary). An id past the logits' width (a
    tokenizer's token the model cannot write) is never drawn, so nothing is counted for it."""
    counts = torch.zeros(ids.shape[0], vocabulary + 1, dtype=weights.dtype, device=ids.device)
    return counts.scatter_add_(1, ids.clamp(max=vocabulary), weights)[:, :vocabulary]
