"""A CPU kernel for PyTorch's varlen attention op, so that the GPU's flat packed path runs on a CPU.

`torch.nn.attention.varlen.varlen_attn` calls the op `torch_attn::_varlen_attn`, whose only kernel is
CUDA's (flash-attention). Registered here for the CPU, the op keeps its Python wrapper, autograd and
fake (compile-time) kernel, and computes causal SDPA per example. The tests run tuneloom's flat batches,
compiled blocks and LoRA step through it; `bench.step_ops` counts a GPU step's operators with it (the op
is one operator forward and one backward, as on the GPU, whatever this kernel does inside).
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F


def per_example(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor, scale: float | None, gqa: bool
) -> torch.Tensor:
    """Causal attention within each example of flat `(tokens, heads, dim)` tensors, `starts` its offsets."""
    pieces = [
        F.scaled_dot_product_attention(
            q[s:e].transpose(0, 1),
            k[s:e].transpose(0, 1),
            v[s:e].transpose(0, 1),
            is_causal=True,
            scale=scale,
            enable_gqa=gqa,
        ).transpose(0, 1)
        for s, e in itertools.pairwise(starts.tolist())
    ]
    return torch.cat(pieces)


def _forward(  # type: ignore[no-untyped-def]
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    is_causal=False,
    scale=None,
    window_size=None,
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """`torch_attn::_varlen_attn` on the CPU: the output, a log-sum-exp and an RNG state of the right shapes."""
    assert is_causal and max_q == int((cu_seq_q[1:] - cu_seq_q[:-1]).max())
    out = per_example(query, key, value, cu_seq_q, scale, gqa=enable_gqa)
    return out, torch.zeros(query.shape[1], query.shape[0]), torch.zeros(2, dtype=torch.uint64)


def _backward(  # type: ignore[no-untyped-def]
    grad_out,
    query,
    key,
    value,
    out,
    lse,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    is_causal,
    rng_state,
    scale=None,
    window_size=None,
):
    """`torch_attn::_varlen_attn_backward` on the CPU: causal attention's gradients, per example, in float32."""
    groups = query.shape[1] // key.shape[1]
    scale = scale if scale is not None else query.shape[-1] ** -0.5
    grads = [torch.zeros_like(t) for t in (query, key, value)]
    for s, e in itertools.pairwise(cu_seq_q.tolist()):
        q, k, v, up = (t[s:e].transpose(0, 1).float() for t in (query, key, value, grad_out))
        k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
        causal = torch.ones(e - s, e - s, dtype=torch.bool).tril()
        probs = (q @ k.transpose(1, 2) * scale).masked_fill(~causal, float("-inf")).softmax(-1)
        d_probs = up @ v.transpose(1, 2)
        d_scores = probs * (d_probs - (d_probs * probs).sum(-1, keepdim=True)) * scale
        per_head = (d_scores @ k, d_scores.transpose(1, 2) @ q, probs.transpose(1, 2) @ up)
        for grad, g, n in zip(grads, per_head, (1, groups, groups), strict=True):
            grad[s:e] = g.unflatten(0, (-1, n)).sum(1).transpose(0, 1).to(grad.dtype)
    return tuple(grads)


@functools.cache
def register_cpu_varlen() -> None:
    """Give the varlen op its CPU kernels (once a process: a second registration is an error)."""
    import torch.nn.attention.varlen  # defines the ops

    torch.library.register_kernel("torch_attn::_varlen_attn", "cpu", _forward)
    torch.library.register_kernel("torch_attn::_varlen_attn_backward", "cpu", _backward)
