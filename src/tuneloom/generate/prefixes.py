"""Prompt-prefix reuse: the keys and values of the prompt start a model's requests share, computed once.

A fine-tuned model is prompted through one template, usually with one instruction (`### Instruction:
Route this ticket … ### Human: <the ticket> ### Assistant:`), so most of every prompt is the same
tokens, and the prefill of those tokens is most of a short request's cost wherever the forward is
compute-bound (two CPU cores: 2.2 ms a prompt token for SmolLM2-135M). Under causal attention a
prefix's keys and values do not depend on what follows it, so the continuous batch prefills only
what comes after a known prefix, over a copy of that prefix's cache (vLLM's automatic prefix caching
and SGLang's radix cache do the same at block granularity).

Prefixes are found, not declared: a prompt that shares at least `MIN_SHARED_TOKENS` leading tokens
with another prompt prefilled together or the one before it makes that shared start a prefix. A
model keeps the `KEPT` most recently used (`KEPT_BYTES` of keys and values in all, but for the
newest), of at most `MAX_PREFIX_TOKENS` each; a prompt reuses the
one it shares most tokens with, up to all but its last token (whose logits the prefill must
produce). Only models whose prefill packs (`packing.packs_prefill`) reuse prefixes.
`TUNELOOM_PREFIX_CACHE=0` turns this off (the benchmark's comparison).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

PREFIX_CACHE_ENV = "TUNELOOM_PREFIX_CACHE"
MIN_SHARED_TOKENS = 16  # below this a prefix saves less than its bookkeeping costs
KEPT = 4  # prefixes per model: one per instruction a model is commonly served with
MAX_PREFIX_TOKENS = 512  # a prefix's cache is kept on the device: 256 MB at most for a 7B model without GQA
KEPT_BYTES = 512 * 2**20  # the kept prefixes of one model together, but for the newest (a 13B's 512 tokens: 400 MB)


@dataclass(eq=False)
class Prefix:
    """A prompt start and its keys and values (one row: `(1, heads, tokens, head_dim)` per layer)."""

    ids: tuple[int, ...]
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    def shared_with(self, prompt: tuple[int, ...]) -> int:
        """How many of this prefix's tokens `prompt` starts with, leaving its last token to be prefilled."""
        return min(_common_start(self.ids, prompt), len(prompt) - 1)

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.layers)

    def cache_for(self, tokens: int) -> Any:
        """A fresh one-row `DynamicCache` holding this prefix's first `tokens` positions."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.layers):
            cache.update(keys[:, :, :tokens], values[:, :, :tokens], index)
        return cache


@dataclass(frozen=True)
class Group:
    """Prompts (by index) prefilled together over the first `tokens` positions of `prefix` (None: over nothing)."""

    prefix: Prefix | None
    tokens: int
    rows: list[int]


PrefixFill = Callable[[list[int]], Any]  # a prompt start's prefill, returning its cache


@dataclass(eq=False)
class PromptPrefixes:
    """The prefixes one model's requests have shared lately (most recently used last)."""

    enabled: bool = field(default_factory=lambda: os.environ.get(PREFIX_CACHE_ENV, "1") != "0")
    kept: list[Prefix] = field(default_factory=list)
    _previous: tuple[int, ...] = ()  # the last prompt prefilled, to find a prefix in the next one
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def grouped(self, prompts: Sequence[Sequence[int]], fill: PrefixFill) -> list[Group]:
        """`prompts` split by the prefix each reuses, finding (and prefilling, with `fill`) new prefixes."""
        if not self.enabled:
            return [Group(None, 0, list(range(len(prompts))))]
        rows = [tuple(prompt) for prompt in prompts]
        with self._lock:
            chosen: dict[int, tuple[Prefix, int]] = {}
            while self._choose(rows, chosen) and (found := self._found(rows, chosen, fill)) is not None:
                self.kept = _within_budget([*self.kept, found][-KEPT:])
            self._previous = rows[-1]
            return _groups(len(prompts), chosen, self._touch)

    def _choose(self, prompts: list[tuple[int, ...]], chosen: dict[int, tuple[Prefix, int]]) -> bool:
        """Give every prompt not yet placed the kept prefix it shares most tokens with; whether any is left."""
        left = False
        for i, prompt in enumerate(prompts):
            if i in chosen:
                continue
            shares = [(prefix, prefix.shared_with(prompt)) for prefix in self.kept]
            best = max(shares, key=lambda share: share[1], default=None)
            if best is not None and best[1] >= MIN_SHARED_TOKENS:
                chosen[i] = best
            else:
                left = True
        return left

    def _found(
        self, prompts: list[tuple[int, ...]], chosen: dict[int, tuple[Prefix, int]], fill: PrefixFill
    ) -> Prefix | None:
        """A new prefix: the longest start an unplaced prompt shares with another prompt or the previous one."""
        others = [*prompts, self._previous]
        for i, prompt in enumerate(prompts):
            if i in chosen:
                continue
            shared = max((_common_start(prompt, other) for j, other in enumerate(others) if j != i), default=0)
            shared = min(shared, len(prompt) - 1, MAX_PREFIX_TOKENS)
            if shared >= MIN_SHARED_TOKENS:
                cache = fill(list(prompt[:shared]))
                return Prefix(prompt[:shared], [(layer.keys, layer.values) for layer in cache.layers])
        return None

    def _touch(self, prefix: Prefix) -> None:
        self.kept = [kept for kept in self.kept if kept is not prefix] + [prefix]


def _groups(count: int, chosen: dict[int, tuple[Prefix, int]], touch: Callable[[Prefix], None]) -> list[Group]:
    """One group per prefix used (over the fewest tokens any of its prompts shares), one for the rest."""
    by_prefix: dict[int, list[int]] = {}
    for i, (prefix, _) in chosen.items():
        by_prefix.setdefault(id(prefix), []).append(i)
    groups = []
    for rows in by_prefix.values():
        prefix = chosen[rows[0]][0]
        touch(prefix)
        groups.append(Group(prefix, min(chosen[i][1] for i in rows), sorted(rows)))
    rest = [i for i in range(count) if i not in chosen]
    return groups + ([Group(None, 0, rest)] if rest else [])


def _within_budget(kept: list[Prefix]) -> list[Prefix]:
    """`kept` less its least recently used prefixes while together they pass `KEPT_BYTES` (the newest stays)."""
    while len(kept) > 1 and sum(prefix.nbytes for prefix in kept) > KEPT_BYTES:
        kept = kept[1:]
    return kept


def _common_start(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The length of the start `a` and `b` share: slices compared in C, by halving (prompts run to thousands)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
