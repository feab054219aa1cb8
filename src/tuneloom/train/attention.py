"""Variable-length attention for packed rows on the CPU: one causal SDPA call per example.

transformers handles packed rows by building a block-diagonal mask, and masked SDPA on the CPU
falls back to the math kernel: it computes (and, for the backward pass, stores) the full
row × row score matrix, most of which the mask then throws away. Calling the fused causal kernel
once per example segment computes exactly the attention each example needs — the CPU counterpart
of flash-attention's varlen path. Segments are found where position ids restart at 0.

Only training forwards take this path (the packing collator is the only producer of training
batches); anything else — generation with its KV cache and padding masks, evaluation — goes to
transformers' own SDPA path unchanged.

Measured on 2 CPU cores, SmolLM2-135M, a batch of 8 examples of 60–400 tokens, forward + backward:
padded batch 10 s, packed row with a block-diagonal mask 18–30 s, per-example segments 3.6 s.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

VARLEN_ATTENTION = "tuneloom_varlen_sdpa"

Spans = list[list[tuple[int, int]]]
_last: tuple[weakref.ref[torch.Tensor] | None, Spans] = (None, [])


def segments(position_ids: torch.Tensor) -> Spans:
    """[(start, end)] per row; computed once per forward (every layer gets the same tensor)."""
    global _last
    ref, spans = _last
    if ref is not None and ref() is position_ids:
        return spans
    spans = []
    length = position_ids.shape[-1]
    for row in position_ids.reshape(-1, length).tolist():
        starts = [i for i, p in enumerate(row) if p == 0] or [0]
        spans.append(list(zip(starts, [*starts[1:], length], strict=True)))
    _last = (weakref.ref(position_ids), spans)
    return spans


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    position_ids = kwargs.get("position_ids")
    if not (
        module.training
        and isinstance(position_ids, torch.Tensor)
        and query.shape[2] == key.shape[2] == position_ids.shape[-1]
        and position_ids.shape[0] in (1, query.shape[0])
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    rows = []
    per_row = segments(position_ids)
    if len(per_row) == 1:
        per_row = per_row * query.shape[0]
    for r, spans in enumerate(per_row):
        pieces = [
            F.scaled_dot_product_attention(
                query[r : r + 1, :, s:e],
                key[r : r + 1, :, s:e],
                value[r : r + 1, :, s:e],
                is_causal=True,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=gqa,
            )
            for s, e in spans
        ]
        rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)


def use_varlen_attention(model: Any) -> bool:
    """Switch an SDPA model to per-example attention for packed training on the CPU.

    On a GPU the per-segment loop would launch many small kernels; there flash-attention's varlen
    kernel (when installed) or masked SDPA is the better choice, so the model is left alone.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if next(model.parameters()).device.type != "cpu":
        return False
    model.set_attn_implementation(VARLEN_ATTENTION)
    return True


def restore_attention(model: Any) -> None:
    """Back to stock SDPA before saving, so no saved config names tuneloom's kernel."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == VARLEN_ATTENTION:
        model.set_attn_implementation("sdpa")
