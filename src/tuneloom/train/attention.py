"""Attention for packed training rows: every example attends to itself alone, and nothing is padded.

transformers handles packed rows by building a block-diagonal mask from the position ids (one host
sync per forward to find the examples), and masked SDPA then computes every row × row score, most
of which the mask throws away. tuneloom computes exactly each example's causal attention instead:

- **GPU** (`FLASH_VARLEN`): flash-attention's variable-length kernel, which PyTorch ships as
  `torch.nn.attention.varlen` (2.10 and later; SM80+, bf16/fp16). The collator lays the whole batch
  end to end in one row and hands over where each example begins (`cu_seq_lens_q`, the keyword
  transformers' own flash path reads), so no mask is built and nothing is synchronised.
- **CPU** (`PER_EXAMPLE_SDPA`): one fused causal SDPA call per example segment, found where position
  ids restart at 0. Masked SDPA on the CPU falls back to the math kernel, which also stores the full
  score matrix for the backward pass. Measured on 2 CPU cores, SmolLM2-135M, a batch of 8 examples of
  60–400 tokens, forward + backward: padded batch 10 s, packed row with a block-diagonal mask
  18–30 s, per-example segments 3.6 s.

Only a training run's own batches take these paths (the packing collator makes them; on the GPU its
held-out evaluation too). Generation with its KV cache, and `tuneloom evaluate`, go to transformers'
own SDPA unchanged; the model is switched back to it before it is saved.
"""

from __future__ import annotations

import importlib.util
import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

PER_EXAMPLE_SDPA = "tuneloom_varlen_sdpa"
FLASH_VARLEN = "tuneloom_varlen_kernel"  # no "flash" in it: transformers would fetch a hub kernel by that name

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


@torch.compiler.disable  # compiled blocks run it eagerly: traced, its Python segment bounds recompile every batch
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


def flash_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each example of a flat packed batch (`query`: batch, heads, tokens, dim)."""
    starts = kwargs.get("cu_seq_lens_q")
    if starts is None or _kernel is None:
        raise RuntimeError(
            f"{FLASH_VARLEN} attention needs cu_seq_lens_q: only PackedCollator(flat=True) batches can use it"
        )
    batch, heads, tokens, dim = query.shape
    kv_heads = key.shape[1]
    # (batch, heads, tokens, dim) is a transposed view of (batch, tokens, heads, dim): these reshapes copy nothing.
    out = _kernel(
        query.transpose(1, 2).reshape(batch * tokens, heads, dim),
        key.transpose(1, 2).reshape(batch * tokens, kv_heads, dim),
        value.transpose(1, 2).reshape(batch * tokens, kv_heads, dim),
        starts,
        kwargs["max_length_q"],  # left as given: int() would pin a compiled block to one length
        scaling,
    )
    return out.view(batch, tokens, heads, dim), None


Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float | None], torch.Tensor]
_kernel: Kernel | None = None  # set by use_flash_varlen, outside the traced forward (compiled blocks read it)


def causal_varlen_kernel() -> Kernel:
    """`torch.nn.attention.varlen.varlen_attn`, causal, across the PyTorch versions that have it.

    2.10 takes `is_causal` and neither `scale` nor `enable_gqa`; later versions take a `window_size`
    ((-1, 0) is causal), a `scale`, and grouped-query attention natively. Where one is missing, the
    query is scaled beforehand (the kernel's own scale is 1/√dim) or the key/value heads are repeated.
    """
    from torch.nn.attention.varlen import varlen_attn

    parameters = inspect.signature(varlen_attn).parameters
    causal: dict[str, Any] = {"window_size": (-1, 0)} if "window_size" in parameters else {"is_causal": True}
    takes_scale, native_gqa = "scale" in parameters, "enable_gqa" in parameters

    def causal_varlen(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor, longest: int, scale: float | None
    ) -> torch.Tensor:
        options = dict(causal)
        if takes_scale:
            options["scale"] = scale
        elif scale is not None and abs(scale * q.shape[-1] ** 0.5 - 1) > 1e-6:
            q = q * (scale * q.shape[-1] ** 0.5)
        groups = q.shape[1] // k.shape[1]
        if groups > 1 and native_gqa:
            options["enable_gqa"] = True
        elif groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = varlen_attn(q, k, v, starts, starts, longest, longest, **options)
        return out if isinstance(out, torch.Tensor) else out[0]  # a tuple only when asked for the log-sum-exp

    return causal_varlen


def use_flash_varlen(model: Any) -> None:
    global _kernel
    _kernel = causal_varlen_kernel()
    model.set_attn_implementation(FLASH_VARLEN)


AttentionInterface.register(PER_EXAMPLE_SDPA, varlen_sdpa_attention)
AttentionMaskInterface.register(PER_EXAMPLE_SDPA, sdpa_mask)
AttentionInterface.register(FLASH_VARLEN, flash_varlen_attention)  # no mask interface: transformers builds no mask


def flash_varlen_usable(model: Any) -> bool:
    """The GPU kernel applies: CUDA SM80+, half-precision weights, a PyTorch with the varlen API, and
    plain causal attention (no sliding window, no attention dropout)."""
    config = model.config
    parameter = next(model.parameters())
    if parameter.device.type != "cuda" or parameter.dtype not in (torch.bfloat16, torch.float16):
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "attention_dropout", 0.0):
        return False
    if torch.cuda.get_device_capability(parameter.device)[0] < 8:
        return False
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def use_packed_attention(model: Any) -> str | None:
    """Switch an SDPA model to per-example attention for packed training; the name chosen, or None.

    `FLASH_VARLEN` wants one flat row per batch (`PackedCollator(flat=True)`); elsewhere the model
    keeps stock SDPA with transformers' block-diagonal mask.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return None
    device = next(model.parameters()).device.type
    if device == "cpu":
        model.set_attn_implementation(PER_EXAMPLE_SDPA)
        return PER_EXAMPLE_SDPA
    if flash_varlen_usable(model):
        use_flash_varlen(model)
        return FLASH_VARLEN
    return None


def restore_attention(model: Any) -> None:
    """Back to stock SDPA before saving, so no saved config names tuneloom's kernels."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) in (PER_EXAMPLE_SDPA, FLASH_VARLEN):
        model.set_attn_implementation("sdpa")
