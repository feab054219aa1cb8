"""Prefill without padding: the rows joining a continuous batch run packed into one sequence.

Prompts arrive with different lengths; left-padded to one length, the few rows that join a running
batch together spent 44% of their prefill on padding (SmolLM2 behind a shared instruction prefix,
`bench.serve_breakdown`). Packed, they run as one row: each token attends to the shared prefix's
cache (`prefixes.PromptPrefixes`) and causally to its own row's tokens (a block-diagonal 4D mask;
each row's positions continue from the prefix), and only each row's last token is projected onto
the vocabulary. The cache that comes out is cut back into rows, left-padded as the running batch
keeps them.

The mask is dense (tokens × (prefix + tokens)), so a pack holds at most `PACK_TOKENS` tokens; a
longer prompt is a pack of its own, and a pack of one row is a plain causal forward with no such
mask. Attention that takes no 4D mask (flash-attention, flex) or that slides a window needs the
padded prefill (`packs_prefill`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

PACK_TOKENS = 1024


def packs_prefill(model: Any) -> bool:
    """Whether `model`'s attention takes a 4D mask over plain (not sliding-window) layers."""
    config = getattr(model, "config", None)
    full = set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
    sliding = getattr(config, "sliding_window", None) is not None
    return full and not sliding and getattr(config, "_attn_implementation", None) in {"sdpa", "eager"}


def split_into_packs(lengths: Sequence[int], limit: int = PACK_TOKENS) -> list[list[int]]:
    """Row indices, in order, split so that each pack's tokens stay within `limit` (a longer row: on its own)."""
    packs: list[list[int]] = [[]]
    tokens = 0
    for i, length in enumerate(lengths):
        if packs[-1] and tokens + length > limit:
            packs.append([])
            tokens = 0
        packs[-1].append(i)
        tokens += length
    return packs


@dataclass(frozen=True)
class Pack:
    """Rows' tokens after a shared prefix of `shared` positions, as one sequence ready for a forward."""

    ids: torch.Tensor  # (1, tokens)
    positions: torch.Tensor  # (1, tokens): each row's continue from the prefix
    mask: torch.Tensor  # (1, 1, tokens, shared + tokens): 0 where attended, the dtype's minimum elsewhere;
    # for one row (1, shared + tokens) ones: a plain causal forward, which needs no dense mask
    last: torch.Tensor  # (rows,): each row's last token's index in `ids`
    lengths: torch.Tensor  # (rows,)
    shared: int


def pack(rows: Sequence[Sequence[int]], shared: int, dtype: torch.dtype, device: torch.device) -> Pack:
    """`rows` (the tokens after the prefix) packed behind `shared` prefix positions."""
    lengths = torch.tensor([len(row) for row in rows], device=device)
    ids = torch.tensor([[token for row in rows for token in row]], device=device)
    row_of = torch.repeat_interleave(torch.arange(len(rows), device=device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    offsets = torch.arange(ids.shape[1], device=device) - starts[row_of]  # each token's place in its row
    last = starts + lengths - 1
    if len(rows) == 1:  # a long prompt is alone in its pack: no (tokens × tokens) mask for it
        ones = torch.ones(1, shared + ids.shape[1], dtype=torch.long, device=device)
        return Pack(ids, (shared + offsets)[None], ones, last, lengths, shared)
    own = (row_of[:, None] == row_of[None, :]) & (offsets[None, :] <= offsets[:, None])
    attended = torch.cat([torch.ones(len(own), shared, dtype=torch.bool, device=device), own], dim=1)
    mask = torch.zeros(attended.shape, dtype=dtype, device=device).masked_fill(~attended, torch.finfo(dtype).min)
    return Pack(ids, (shared + offsets)[None], mask[None, None], last, lengths, shared)


def unpacked(cache: Any, packed: Pack) -> tuple[Any, torch.Tensor]:
    """The packed forward's one-row `cache` cut into the pack's rows, each the prefix then its own tokens,
    left-padded to one width; with those rows' attention mask (0 on padding)."""
    from transformers import DynamicCache

    lengths, shared = packed.lengths, packed.shared
    width = int(lengths.max())
    device = lengths.device
    place = torch.arange(width, device=device)[None] - (width - lengths)[:, None]  # in its row; < 0: padding
    starts = shared + torch.cumsum(lengths, 0) - lengths
    source = torch.where(place >= 0, starts[:, None] + place, 0)  # padding reads column 0: masked anyway
    index = torch.cat([torch.arange(shared, device=device).expand(len(lengths), -1), source], dim=1)
    rows = DynamicCache()
    for i, layer in enumerate(cache.layers):  # (1, heads, columns, dim) → (rows, heads, shared + width, dim)
        keys, values = (t[0][:, index].transpose(0, 1) for t in (layer.keys, layer.values))
        rows.update(keys, values, i)
    ones = torch.ones(len(lengths), shared, dtype=torch.long, device=device)
    return rows, torch.cat([ones, (place >= 0).long()], dim=1)
