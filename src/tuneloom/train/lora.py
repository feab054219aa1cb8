"""LoRA linear layers as one autograd node each: the same training, a quarter fewer operators a step.

peft's LoRA layer runs `base(x) + lora_B(lora_A(dropout(x))) * scaling` as separate modules, each a
`nn.Linear` (transpose, reshape, matmul, reshape) with its own autograd nodes, plus the input's cast,
the scaling, the sum and the cast back, then the mirror image of all that in the backward pass. On a
GPU an eager training step is host-bound (measured on an H200: 28-32 µs per operator, with the card
mostly idle for models up to 1.1B), so what the host does per layer is the step time. `LoraLinearFunction` does
the same arithmetic with the fewest operators: one flattening, the frozen matmul, one fused dropout
(`native_dropout`, which draws the same mask as `nn.Dropout` from the same seed), the two low-rank
matmuls with the scaled sum folded into `addmm`, and a backward written out by hand that computes
only the gradients asked for (no weight gradient for the frozen matrix, no input gradient where the
input needs none, as in the first layer). The weights, the adapter files and the numbers are peft's:
tests/test_lora_fused.py checks outputs and gradients against peft's own forward. Its backward runs
in Python, which costs host time back: `python -m bench.lora_layers` weighs that against peft's layer
and a variant on PyTorch's own autograd (on this project's CPU: 73.7 µs a layer against 78.5 and 67.2).

Only the plain case is fused — one active adapter, no DoRA or other variant, an unmerged `nn.Linear`
base whose weight is frozen, no LoRA bias — and any other call (adapters disabled, a mixed batch,
quantized bases, DeepSpeed ZeRO-3's partitioned weights) runs peft's own forward. FSDP gathers a whole
block's weights before the block runs, so its layers are fused as well (not yet run on a GPU).
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn


class LoraLinearFunction(torch.autograd.Function):
    """y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ, the input cast to the adapter's dtype for its branch as peft does."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        dropout_p: float,
    ) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        base = nn.functional.linear(flat, weight, bias)
        low = flat.to(lora_a.dtype)
        mask = None
        if dropout_p > 0:
            low, mask = torch.native_dropout(low, dropout_p, True)
        down = low @ lora_a.t()
        out = torch.addmm(base.to(down.dtype), down, lora_b.t().to(down.dtype), alpha=scaling)
        ctx.save_for_backward(weight, lora_a, lora_b, low, mask, down)
        ctx.scaling, ctx.dropout_p, ctx.input_dtype = scaling, dropout_p, x.dtype
        return out.to(base.dtype).view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, lora_a, lora_b, low, mask, down = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        low_grad = flat.to(down.dtype)
        grad_b = (low_grad.t() @ down).mul_(ctx.scaling).to(lora_b.dtype)
        down_grad = (low_grad @ lora_b.to(down.dtype)).mul_(ctx.scaling)
        grad_a = (down_grad.t() @ low.to(down.dtype)).to(lora_a.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            branch = down_grad @ lora_a.to(down.dtype)
            if mask is not None:
                branch = torch.ops.aten.native_dropout_backward(branch, mask, 1.0 / (1.0 - ctx.dropout_p))
            grad_x = (flat @ weight.to(flat.dtype)).add_(branch.to(flat.dtype)).to(ctx.input_dtype)
            grad_x = grad_x.view(*grad.shape[:-1], -1)
        return grad_x, None, None, grad_a, grad_b, None, None


class FusedLoraLinear(PeftLoraLinear):
    """peft's LoRA `Linear`, its plain case in one autograd node (`LoraLinearFunction`)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else self._plain_adapter()
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        dropout = self.lora_dropout[adapter]
        p = dropout.p if isinstance(dropout, nn.Dropout) and self.training else 0.0
        base = self.base_layer
        lora_a, lora_b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        fused: torch.Tensor = LoraLinearFunction.apply(
            x, base.weight, base.bias, lora_a, lora_b, self.scaling[adapter], p
        )
        return fused

    def _plain_adapter(self) -> str | None:
        """The one active adapter if this call is the plain case, else None (peft's forward handles it)."""
        if self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        adapter: str = self.active_adapters[0]
        base = self.base_layer
        plain = (
            adapter in self.lora_A
            and adapter not in self.lora_variant
            and type(base) is nn.Linear
            and not hasattr(base.weight, "ds_id")  # DeepSpeed ZeRO-3 gathers a weight only in its module's own call
            and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
            and self.lora_B[adapter].bias is None
            and isinstance(self.lora_dropout[adapter], nn.Dropout | nn.Identity)
            and getattr(self, "cast_input_dtype_enabled", True)
        )
        return adapter if plain else None


def fuse_lora_layers(model: nn.Module) -> int:
    """Give each of the model's peft LoRA `Linear` layers the fused forward; how many there are.

    The layers keep their state and everything else their class does (saving, merging, loading): the
    class is swapped for a subclass whose forward takes the fused path where it applies.
    """
    layers = [m for m in model.modules() if type(m) is PeftLoraLinear]
    for layer in layers:
        layer.__class__ = FusedLoraLinear
    return len(layers)
