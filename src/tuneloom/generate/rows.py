"""A generation in progress: its prompt, its parameters, its tokens and visible text, and how rows choose
their next tokens together (per-row penalties, sampling and log-probabilities over one logits batch).

Shared by the continuous batch (`continuous`) and the compiled single-row loop (`compiled`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneloom.generate.detokenize import DecodedText
from tuneloom.generate.generator import finish_generation, prompt_text, render_prompt
from tuneloom.generate.loading import InferenceModel
from tuneloom.generate.logprobs import Reported, token_logprob
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.penalties import TokenCounts, has_penalty, with_model_default
from tuneloom.generate.results import Generation, Prompt, TokenLogprob
from tuneloom.generate.sampling import pick_tokens, token_logprobs
from tuneloom.generate.stops import VisibleText, stop_strings


@dataclass(eq=False)
class Row:
    """One generation in a batch: its prompt, its parameters, and the tokens it has produced so far."""

    prompt: Prompt  # as the model sees it (rendered, or token ids as sent)
    params: InferenceParams
    visible: VisibleText
    ids: list[int] = field(default_factory=list)
    ended_on_eos: bool = False
    finished: bool = False
    cancelled: bool = False  # set from another thread: the row leaves at the next step
    piece: str = ""  # text made visible by the latest token (for streams)
    top_logprobs: int | None = None  # alternatives reported with each token's log-probability; None: none
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token of `ids`, when asked for
    logprobs_sent: int = 0  # how many of them a stream has passed on
    _generator: torch.Generator | None = field(default=None, repr=False)
    _decoded: DecodedText | None = field(default=None, repr=False)  # the text of `ids`, kept up as they come

    @classmethod
    def create(cls, loaded: InferenceModel, text: str, params: InferenceParams, top_logprobs: int | None = None) -> Row:
        return cls.rendered(render_prompt(loaded, text, params), params, top_logprobs)

    @classmethod
    def rendered(cls, prompt: Prompt, params: InferenceParams, top_logprobs: int | None = None) -> Row:
        return cls(prompt, params, VisibleText(stop_strings(params)), top_logprobs=top_logprobs)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """This row's own random stream (seeded sampling rows only), made on the device of its first draw."""
        if not self.params.seeded_sampling:
            return None
        if self._generator is None:
            assert self.params.seed is not None  # seeded_sampling
            self._generator = torch.Generator(device=device).manual_seed(self.params.seed)
        return self._generator

    def generation(self, loaded: InferenceModel) -> Generation:
        """The finished row as `generate()` would have returned it (trailing padding is not part of it)."""
        ids, pad = list(self.ids), loaded.tokenizer.pad_token_id
        while ids and ids[-1] == pad and pad != loaded.tokenizer.eos_token_id:
            ids.pop()
        decoded = loaded.tokenizer.decode(ids, skip_special_tokens=True)
        generation = finish_generation(
            prompt_text(loaded.tokenizer, self.prompt), decoded, len(ids), self.ended_on_eos, self.params
        )
        if self.top_logprobs is None:
            return generation
        return dataclasses.replace(generation, logprobs=tuple(self.logprobs[: len(ids)]))

    def unsent_logprobs(self) -> list[TokenLogprob]:
        """The log-probabilities of the tokens since the last call: what a stream's next piece carries."""
        fresh, self.logprobs_sent = self.logprobs[self.logprobs_sent :], len(self.logprobs)
        return fresh

    def accept(self, token: int, tokenizer: Any, reported: Reported | None = None) -> None:
        """Take one new token: end at EOS, at a stop string, or at max_tokens; note the text it reveals
        (and its log-probability, `reported` where the row asked: EOS, which ends the text, has none)."""
        if token == tokenizer.eos_token_id:
            self.ended_on_eos = self.finished = True
            self.piece = self.visible.rest()
            return
        if reported is not None:
            self.logprobs.append(token_logprob(tokenizer, token, reported, self.visible.offset()))
        self.ids.append(token)
        decoded = self._decoded = self._decoded or DecodedText(tokenizer)
        unchanged = decoded.add(token)
        self.piece, stopped = self.visible.update(decoded.text, unchanged)
        if stopped or len(self.ids) >= self.params.max_tokens:
            self.finished = True
            self.piece += self.visible.rest()


def prepare_rows(
    loaded: InferenceModel, rows: list[Row], ids: torch.Tensor, mask: torch.Tensor, vocabulary: int
) -> TokenCounts | None:
    """Ready prefilled rows for their first token: a row that sets no `repetition_penalty` takes the model's
    (`with_model_default`). Returns the counts of their prompts' tokens for the rows with penalties, in their
    order (what `choose_next` reads); None where no row has any."""
    for row in rows:
        row.params = with_model_default(loaded.model, row.params)
    penalized = [i for i, row in enumerate(rows) if has_penalty(row.params)]
    return TokenCounts.of_prompts(ids[penalized], mask[penalized], vocabulary) if penalized else None


@dataclass
class Picked:
    """The rows' next tokens as drawn on the device, on their way to the host with their log-probabilities.

    Drawing and reading are apart so that a loop can start the device on the next step in between
    (`compiled.run_static`): the host copies are queued before that step, and `ready` marks their end.
    """

    tokens: torch.Tensor  # on the device: the next step's input
    host_tokens: torch.Tensor
    host_logprobs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # chosen, top values, top ids
    ready: torch.cuda.Event | None  # None on a CPU, where the copies are done at once

    def wait(self) -> None:
        if self.ready is not None:
            self.ready.synchronize()


def pick_next(loaded: InferenceModel, rows: list[Row], logits: torch.Tensor, counts: TokenCounts | None) -> Picked:
    """Each row's next token, drawn from its penalized logits (and its log-probabilities, where it asks),
    all on the device; the copies to the host are queued, not waited for (`take_next` does). `counts`:
    those of the rows with penalties, in their order (`prepare_rows`), to which the new tokens are added."""
    count = _penalize(rows, logits, counts)
    generators = [row.generator(logits.device) for row in rows]
    tokens = pick_tokens(logits, [row.params for row in rows], generators)
    count(tokens)
    logprobs = _logprobs(rows, logits, tokens)
    on_gpu = tokens.device.type == "cuda"
    host = [t.to("cpu", non_blocking=on_gpu) for t in (tokens, *(logprobs or ()))]
    ready = None
    if on_gpu:
        ready = torch.cuda.Event()
        ready.record()
    host_logprobs = (host[1], host[2], host[3]) if logprobs else None
    return Picked(tokens, host[0], host_logprobs, ready)


def take_next(loaded: InferenceModel, rows: list[Row], picked: Picked) -> None:
    """Wait for `picked` to reach the host, and give each row its token (and its log-probabilities)."""
    picked.wait()
    reported = _reported(rows, picked)
    for row, token, its in zip(rows, picked.host_tokens.tolist(), reported, strict=True):
        row.accept(int(token), loaded.tokenizer, its)


def choose_next(
    loaded: InferenceModel, rows: list[Row], logits: torch.Tensor, counts: TokenCounts | None
) -> torch.Tensor:
    """`pick_next` and `take_next` at once; returns the tokens on the logits' device, as the next step's input."""
    picked = pick_next(loaded, rows, logits, counts)
    take_next(loaded, rows, picked)
    return picked.tokens


def _penalize(rows: list[Row], logits: torch.Tensor, counts: TokenCounts | None) -> Callable[[torch.Tensor], None]:
    """Apply the penalties of the rows that have any to their `logits` (in place), all such rows at once;
    what it returns counts the rows' new tokens in. Rows without penalties cost nothing."""
    if counts is None:
        return lambda _: None
    penalized = [i for i, row in enumerate(rows) if has_penalty(row.params)]
    logits[penalized] = counts.penalize(logits[penalized], [rows[i].params for i in penalized])
    return lambda tokens: counts.count(tokens[penalized])


def _asking(rows: list[Row]) -> list[int]:
    """The rows that asked for log-probabilities, in order."""
    return [i for i, row in enumerate(rows) if row.top_logprobs is not None]


def _logprobs(
    rows: list[Row], logits: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """For the rows that ask: their token's log-probability, and the most likely alternatives (as many as the
    most any of them wants). Only those rows are computed: a batch where none asks costs nothing more."""
    asking = _asking(rows)
    if not asking:
        return None
    wanted = max(rows[i].top_logprobs or 0 for i in asking)
    return token_logprobs(logits[asking], tokens[asking], [rows[i].params for i in asking], wanted)


def _reported(rows: list[Row], picked: Picked) -> list[Reported | None]:
    """Per row, its token's log-probability and its `top_logprobs` alternatives; None for rows that did not ask."""
    reported: list[Reported | None] = [None] * len(rows)
    if picked.host_logprobs is None:
        return reported
    chosen, values, ids = picked.host_logprobs
    for i, logprob, top_values, top_ids in zip(
        _asking(rows), chosen.tolist(), values.tolist(), ids.tolist(), strict=True
    ):
        n = rows[i].top_logprobs or 0
        reported[i] = (logprob, [(t, v) for t, v in zip(top_ids[:n], top_values[:n], strict=True) if v > -math.inf])
    return reported
