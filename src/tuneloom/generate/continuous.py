"""Continuous batching: many generations share one forward pass per token, each joining and leaving on its own.

`generate()` runs a fixed batch until its longest member is done, so a request that arrives a moment
later waits for the whole batch, and a streamed request cannot share it at all. Here a batch is a
running set of rows over one KV cache: `add` prefills new rows (packed into one sequence, after any
prompt start the model's requests share: `packing`, `prefixes`) and merges their cache into the
running one (left-padded to a common length), `step` decodes one token for every row, and a row
that hits EOS, a stop string or its `max_tokens` (or is cancelled) leaves the batch at once.

Each row keeps its own parameters: greedy and sampling rows, different temperatures, top-p, top-k,
repetition penalties, stop strings and `max_tokens` share one forward pass (`penalties.TokenCounts`
penalizes the rows that ask, `sampling.pick_tokens` draws per row; a row that sets no
`repetition_penalty` takes the model's generation config's, as `generate()` would). Only beam search
(`num_beams > 1`), and a model whose generation config asks for logits processors this loop does
not apply (`no_repeat_ngram_size`, …), need `generate()` itself: `supports_continuous` says which.

The decoding rules are `generate()`'s, so a greedy row gives the same text, token count and finish
reason as the batched path: positions count real tokens only (left padding is masked), a row ends
at EOS, at the first stop string in its decoded text, or after `max_tokens`.

A row may ask for its tokens' log-probabilities (`top_logprobs`: how many alternatives with each);
they are computed only for the rows that ask (`sampling.token_logprobs`), so a batch where none
asks costs what it did.

A sampling row with a `seed` draws from its own `torch.Generator`, seeded with it, and from nothing
else: its tokens do not depend on which rows share the batch or on what they draw. `generate()` and
`stream()` run seeded sampling through this loop too (`generate_by_rows`, `stream_by_row`), since
transformers' `generate()` draws from torch's one global generator; so a seed gives the same text
on the command line as on the server. Rows without a seed draw from the global generator, as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from tuneloom.errors import SettingsError
from tuneloom.generate.generator import BATCH_SIZE, batch_prompt_ids, padded_batch, padded_positions
from tuneloom.generate.loading import InferenceModel
from tuneloom.generate.packing import pack, packs_prefill, split_into_packs, unpacked
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.penalties import TokenCounts, has_penalty
from tuneloom.generate.prefixes import Group
from tuneloom.generate.results import Generation, Prompt
from tuneloom.generate.rows import Row, choose_next, prepare_rows

# Generation-config settings that `generate()` would turn into logits processors this loop lacks.
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
}


def supports_continuous(loaded: InferenceModel, params: InferenceParams) -> bool:
    """Whether a row with `params` can join a continuous batch of this model (else use `generate()`)."""
    return generate_only_reason(loaded, params) is None


def generate_only_reason(loaded: InferenceModel, params: InferenceParams) -> str | None:
    """What keeps a row with `params` off this loop, worded for a refusal of what only this loop can do (a seed,
    log-probabilities); None where the row can join it."""
    if params.num_beams > 1:
        return "with num_beams > 1 (beam search)"
    config = getattr(loaded.model, "generation_config", None)
    settings = [
        name for name, default in _UNSUPPORTED_DEFAULTS.items() if getattr(config, name, default) not in (default, None)
    ]
    if settings:
        return f"for this model (its generation config sets {', '.join(settings)}, which only generate() applies)"
    return None


def check_seedable(loaded: InferenceModel, params: InferenceParams) -> None:
    """Refuse a seed this loop cannot honour. What it cannot run goes to transformers' `generate()`, which
    draws from torch's global generator: the one every other request draws from too."""
    if not params.seeded_sampling or (why := generate_only_reason(loaded, params)) is None:
        return
    fix = "leave seed out, or set num_beams to 1" if params.num_beams > 1 else "leave seed out"
    raise SettingsError(
        f"inference parameter 'seed' is not supported with sampling {why}: such a generation draws from the "
        f"random stream every other request shares, so it cannot be reproduced; {fix}",
        key="seed",
    )


class ContinuousBatch:
    """The running rows of one model and their KV cache; not thread-safe (one thread drives it)."""

    def __init__(self, loaded: InferenceModel):
        self.loaded = loaded
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)  # (rows, cached positions): 0 = left padding
        self._positions = torch.zeros(0, dtype=torch.long)  # each row's position of its last token
        self._last = torch.zeros(0, dtype=torch.long)  # each row's last token: the next step's input
        self._counts: TokenCounts | None = None  # what the penalties of the rows that have any read (`_penalize`)
        self._keep_logits = "logits_to_keep" in inspect.signature(loaded.model.forward).parameters
        self._packs = packs_prefill(loaded.model)

    @torch.inference_mode()
    def add(self, rows: list[Row]) -> None:
        """Prefill `rows` and merge them into the batch; each gets its first token. Where the model's attention
        allows, rows prefill packed (`packing`) and only after a prompt start they share with earlier prompts
        (`prefixes`)."""
        self.drop_finished()
        prompts = batch_prompt_ids(self.loaded, [row.prompt for row in rows])
        if not self._packs:
            self._prefill_padded(rows, prompts)
            return
        for group in self.loaded.prefixes.grouped(prompts, self._prefix_cache):
            rests = [prompts[i][group.tokens :] for i in group.rows]
            for part in split_into_packs([len(rest) for rest in rests]):
                chosen = [group.rows[j] for j in part]
                self._prefill_packed([rows[i] for i in chosen], [prompts[i] for i in chosen], group)

    def _prefill_packed(self, rows: list[Row], prompts: list[list[int]], group: Group) -> None:
        """Prefill `rows` as one packed sequence over `group`'s prefix, and merge them in."""
        from transformers import DynamicCache

        model, embedding = self.loaded.model, self.loaded.model.get_input_embeddings().weight
        rests = [prompt[group.tokens :] for prompt in prompts]
        packed = pack(rests, group.tokens, embedding.dtype, embedding.device)
        cache = DynamicCache() if group.prefix is None else group.prefix.cache_for(group.tokens)
        keep = {"logits_to_keep": packed.last} if self._keep_logits else {}
        out = model(
            input_ids=packed.ids, attention_mask=packed.mask, position_ids=packed.positions, cache=cache, **keep
        )
        logits = torch.as_tensor(out.logits[0] if self._keep_logits else out.logits[0, packed.last]).float()
        cache, mask = unpacked(cache, packed)
        self._join(rows, prompts, logits, cache, mask)

    def _prefill_padded(self, rows: list[Row], prompts: list[list[int]]) -> None:
        """Prefill `rows` left-padded to one length (attention that takes no 4D mask), and merge them in."""
        from transformers import DynamicCache

        inputs = padded_batch(self.loaded, prompts)
        ids, mask, cache = inputs["input_ids"], inputs["attention_mask"], DynamicCache()
        self._join(rows, prompts, self._forward(ids, mask, padded_positions(mask), cache), cache, mask)

    def _join(
        self, rows: list[Row], prompts: list[list[int]], logits: torch.Tensor, cache: Any, mask: torch.Tensor
    ) -> None:
        """Merge prefilled rows (their `cache` and its `mask`) into the batch and give each its first token."""
        full = padded_batch(self.loaded, prompts)  # what penalties count
        counts = prepare_rows(self.loaded, rows, full["input_ids"], full["attention_mask"], logits.shape[1])
        self._merge(rows, cache, mask, padded_positions(mask)[:, -1])
        self._accept(rows, logits, counts)
        self._counts = TokenCounts.joined(self._counts, counts)

    def _prefix_cache(self, ids: list[int]) -> Any:
        """The cache of one prompt start, prefilled alone (`prefixes.PromptPrefixes` keeps it)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        tokens = torch.tensor([ids], device=self.loaded.model.get_input_embeddings().weight.device)
        self._forward(tokens, torch.ones_like(tokens), torch.arange(len(ids), device=tokens.device)[None], cache)
        return cache

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every row; finished and cancelled rows leave the batch first."""
        self.drop_finished()
        if not self.rows:
            return
        ones = torch.ones(len(self.rows), 1, dtype=self._mask.dtype, device=self._mask.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        self._positions = self._positions + 1
        logits = self._forward(self._last[:, None], self._mask, self._positions[:, None], self._cache)
        self._accept(self.rows, logits, self._counts)

    def drop_finished(self) -> None:
        """Remove finished and cancelled rows, and cache columns that only padding is left in."""
        keep = [i for i, row in enumerate(self.rows) if not (row.finished or row.cancelled)]
        if len(keep) == len(self.rows):
            return
        if self._counts is not None:  # its rows: the penalized ones, in batch order
            penalized, kept = [i for i, row in enumerate(self.rows) if has_penalty(row.params)], set(keep)
            self._counts = self._counts.selected([j for j, i in enumerate(penalized) if i in kept])
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, self._mask[:0, :0]
            self._positions, self._last = self._positions[:0], self._last[:0]
            return
        index = torch.tensor(keep, device=self._mask.device)
        self._mask, self._positions, self._last = self._mask[index], self._positions[index], self._last[index]
        used = int(self._mask.any(dim=0).nonzero()[0])  # leading columns that are padding in every row
        self._mask = self._mask[:, used:]
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[index, :, used:], layer.values[index, :, used:]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        extra = {"logits_to_keep": 1} if self._keep_logits else {}
        out = self.loaded.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, **extra
        )
        return torch.as_tensor(out.logits[:, -1, :]).float()

    def _merge(self, rows: list[Row], cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Append prefilled rows, left-padding whichever side's cache is shorter."""
        self.rows += rows
        if self._cache is None:
            self._cache, self._mask, self._positions = cache, mask, positions
            return
        width = max(self._mask.shape[1], mask.shape[1])
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self._positions = torch.cat([self._positions, positions])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat([_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)])

    def _accept(self, rows: list[Row], logits: torch.Tensor, counts: TokenCounts | None) -> None:
        tokens = choose_next(self.loaded, rows, logits, counts)
        start = len(self.rows) - len(rows)
        self._last = torch.cat([self._last[:start].to(tokens.device), tokens])  # the first add: from the CPU


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def run_alone(loaded: InferenceModel, rows: list[Row]) -> Iterator[None]:
    """Run `rows` to their end in a batch of their own, pausing after the prefill and after every step.
    One row of a model switched to compiled decoding (`tuneloom generate --compile`) runs through
    `compiled.run_static`: its own loop over a static cache, with the same token choice."""
    if len(rows) == 1 and loaded.compiled_decode:
        from tuneloom.generate.compiled import run_static

        yield from run_static(loaded, rows[0])
        return
    batch = ContinuousBatch(loaded)
    batch.add(rows)
    yield
    while not all(row.finished for row in rows):
        batch.step()
        yield


def generate_by_rows(loaded: InferenceModel, prompts: Sequence[Prompt], params: InferenceParams) -> list[Generation]:
    """`generate()` through this loop (`generator.own_loop_serves`): prompt `i` is a row drawing with seed + i
    (`for_input`), as on the server."""
    check_seedable(loaded, params)
    rows = [Row.rendered(prompt, params.for_input(i)) for i, prompt in enumerate(prompts)]
    if len(rows) == 1:
        for _ in run_alone(loaded, rows):
            pass
        return [rows[0].generation(loaded)]
    batch, waiting = ContinuousBatch(loaded), list(reversed(rows))
    while waiting or batch.rows:  # up to BATCH_SIZE rows at a time, a finished one replaced at once
        running = sum(not row.finished for row in batch.rows)
        if waiting and running < BATCH_SIZE:
            batch.add([waiting.pop() for _ in range(min(BATCH_SIZE - running, len(waiting)))])
        else:
            batch.step()
    return [row.generation(loaded) for row in rows]


def stream_by_row(loaded: InferenceModel, prompt: str, params: InferenceParams) -> Iterator[str]:
    """`stream()` through this loop (`generator.own_loop_serves`): the same pieces a /generate stream sends."""
    check_seedable(loaded, params)
    row = Row.rendered(prompt, params)
    for _ in run_alone(loaded, [row]):
        if row.piece:
            yield row.piece
            row.piece = ""
