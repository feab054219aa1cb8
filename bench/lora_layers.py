"""What one LoRA layer's forward and backward cost the host: peft's layer, tuneloom's fused one, and a candidate.

An eager GPU training step is host-bound (bench/README.md): its time is what the host spends issuing
operators, not the card's arithmetic. This times that part alone: a stack of LoRA layers on tensors
so small that the kernels cost next to nothing (8 tokens, width 64), forward and backward, on the
CPU or a GPU (where each operator also pays a kernel launch), for

- `peft`: peft's own `lora.Linear` (three module calls, separate scale and sum);
- `fused`: `tuneloom.train.lora` (one autograd node with a hand-written backward: fewest operators,
  but its backward runs in Python);
- `native`: the same arithmetic in one forward with PyTorch's own autograd (no module calls, the
  scaled sum in `addmm`; more operators than `fused`, but its backward stays in C++).

Figures: µs per layer (median of repeated passes) and ATen operators per layer. Which one wins on a
GPU is what this is for: on this CPU the host cost and the operator count disagree.

    python -m bench.lora_layers [--layers 64] [--repeat 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn

from bench.common import RESULTS_DIR, cuda, device_tag, print_table, write_result
from bench.step_ops import CountOps
from tuneloom.train.lora import FusedLoraLinear, fuse_lora_layers


class NativeLoraLinear(FusedLoraLinear):
    """The candidate: the fused layer's arithmetic through PyTorch's autograd instead of a custom node."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else self._plain_adapter()
        if adapter is None:
            return PeftLoraLinear.forward(self, x, *args, **kwargs)
        base, lora_a, lora_b = self.base_layer, self.lora_A[adapter].weight, self.lora_B[adapter].weight
        flat = x.reshape(-1, x.shape[-1])
        result = F.linear(flat, base.weight, base.bias)
        low = flat.to(lora_a.dtype)
        dropout = self.lora_dropout[adapter]
        if isinstance(dropout, nn.Dropout) and self.training:
            low = F.dropout(low, dropout.p, True)
        out = torch.addmm(result.to(lora_a.dtype), low @ lora_a.t(), lora_b.t(), alpha=self.scaling[adapter])
        return out.to(result.dtype).view(*x.shape[:-1], -1)


class Stack(nn.Module):
    def __init__(self, layers: int, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def variants(layers: int, width: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    names = [f"layers.{i}" for i in range(layers)]
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=names)
    peft = get_peft_model(Stack(layers, width).to(device), lora).train()
    fused, native = copy.deepcopy(peft), copy.deepcopy(peft)
    fuse_lora_layers(fused)
    for module in native.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = NativeLoraLinear
    return {"peft": peft, "fused": fused, "native": native}


def time_per_layer(model: nn.Module, x: torch.Tensor, layers: int, repeat: int) -> float:
    """Median µs per layer of a forward + backward pass, the device synchronized after each."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model(x).sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[repeat // 5 :]) / layers * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/lora-layers-<device>.json")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda() else "cpu")
    torch.set_num_threads(1)  # the host's own cost, one thread issuing operators as the training loop does
    models = variants(args.layers, args.width, device)
    x = torch.randn(1, 8, args.width, device=device, requires_grad=True)
    figures: dict[str, Any] = {"layers": args.layers, "width": args.width, "tokens": 8}
    for name, model in models.items():
        with CountOps() as counter:
            model(x).sum().backward()
        figures[name] = {"operators_per_layer": sum(counter.ops.values()) / args.layers}
    for _ in range(3):  # interleaved rounds, the best of each: the machine's drift hits all three alike
        for name, model in models.items():
            us = time_per_layer(model, x, args.layers, args.repeat)
            figures[name]["us_per_layer"] = min(us, figures[name].get("us_per_layer", us))
    rows = [
        [
            name,
            f"{f['us_per_layer']:.1f}",
            f"{figures['peft']['us_per_layer'] / f['us_per_layer']:.2f}×",
            f"{f['operators_per_layer']:.0f}",
        ]
        for name, f in figures.items()
        if isinstance(f, dict)
    ]
    print_table(
        f"One LoRA layer's forward + backward, host cost ({device.type}, {args.layers} layers, 8 tokens)",
        ["layer", "µs per layer", "vs peft", "operators per layer"],
        rows,
    )
    out = args.out or RESULTS_DIR / f"lora-layers-{device_tag()}.json"
    write_result(out, benchmark="lora-layers", figures=figures, device=device.type, libraries=("torch", "peft"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
