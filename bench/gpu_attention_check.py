"""The GPU's packed attention (flash-attention's varlen kernel, `tuneloom.train.attention`) checked and timed.

Checked against causal SDPA run one example at a time in float32: the output and the gradients of
query, key and value must agree to bf16's error (relative error under 2e-2), on fresh random inputs,
for the Llama-1.1B shape's heads (32 query over 4 key/value heads, dim 64). Timed, forward + backward,
against what transformers does with a packed row otherwise: SDPA over the whole row with a
block-diagonal causal mask. Also compiles the kernel call (dynamic shapes, as tuneloom's compiled
blocks do) over two different batches, to show it traces without a graph break or a failure.

    python -m bench.gpu_attention_check                 # on a GPU (bench/gpu.sh runs it first)
    python -m bench.gpu_attention_check --dry-run       # the script itself on the CPU, with per-example
                                                        # SDPA standing in for the CUDA-only kernel
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.common import RESULTS_DIR, device_name, device_tag, print_table, write_result

HEADS, KV_HEADS, DIM = 32, 4, 64
TOLERANCE = 2e-2
device = "cuda"  # "cpu" with --dry-run


def lengths(count: int, seed: int) -> list[int]:
    """The bench's instruction data: lognormal, median ≈ 140 tokens, capped at 1,024."""
    rng = random.Random(seed)
    return [min(1024, max(16, int(rng.lognormvariate(math.log(140), 0.7)))) for _ in range(count)]


def flat_inputs(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = sum(sizes)

    def draw(heads: int) -> torch.Tensor:
        x = torch.randn(tokens, heads, DIM, device=device, generator=generator, dtype=torch.bfloat16)
        return x.requires_grad_()

    starts = torch.tensor([0, *accumulate(sizes)], device=device, dtype=torch.int32)
    return draw(HEADS), draw(KV_HEADS), draw(KV_HEADS), starts


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: list[int]) -> torch.Tensor:
    """Causal SDPA per example, float32, (tokens, heads, dim) in and out."""
    pieces = []
    for s, e in pairwise(bounds):
        pieces.append(
            F.scaled_dot_product_attention(
                q[s:e].float().transpose(0, 1),
                k[s:e].float().transpose(0, 1),
                v[s:e].float().transpose(0, 1),
                is_causal=True,
                enable_gqa=True,
            ).transpose(0, 1)
        )
    return torch.cat(pieces)


def stand_in(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor, longest: int, scale: Any) -> Any:
    """--dry-run's kernel: the reference in the inputs' dtype."""
    return reference(q, k, v, starts.tolist()).to(q.dtype)


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    if not torch.isfinite(got).all():
        return math.inf
    return float((got - want).norm() / want.norm())


def check(kernel: Any, sizes: list[int], seed: int) -> dict[str, float]:
    q, k, v, starts = flat_inputs(sizes, seed)
    bounds = starts.tolist()
    upstream = torch.randn(q.shape, device=device, dtype=torch.bfloat16)
    out = kernel(q, k, v, starts, max(sizes), None)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    want = reference(q, k, v, bounds)
    want_grads = torch.autograd.grad(want, (q, k, v), upstream.float())
    errors = {"out": relative(out, want)}
    errors |= {f"grad_{name}": relative(g, w) for name, g, w in zip("qkv", grads, want_grads, strict=True)}
    return errors


def median_ms(fn: Any, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cpu":
            begin_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin_s) * 1000)
            continue
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def time_both(kernel: Any, sizes: list[int]) -> dict[str, float]:
    """Forward + backward of one flat row: the varlen kernel vs SDPA with the block-diagonal mask."""
    q, k, v, starts = flat_inputs(sizes, 7)
    upstream = torch.randn(q.shape, device=device, dtype=torch.bfloat16)
    example = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
    mask = (example[:, None] == example[None, :]).tril()[None, None]  # (1, 1, tokens, tokens)

    def varlen() -> None:
        torch.autograd.grad(kernel(q, k, v, starts, max(sizes), None), (q, k, v), upstream)

    def masked() -> None:
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask, enable_gqa=True
        )
        torch.autograd.grad(out, (q, k, v), upstream.transpose(0, 1)[None])

    return {"varlen_ms": median_ms(varlen), "masked_sdpa_ms": median_ms(masked)}


def compiles(kernel: Any) -> str:
    """The kernel call compiled with dynamic shapes over two batches: "ok", or the error."""
    compiled = torch.compile(lambda q, k, v, s, m: kernel(q, k, v, s, m, None), dynamic=True, fullgraph=True)
    try:
        for seed, count in ((3, 12), (4, 17)):
            sizes = lengths(count, seed)
            q, k, v, starts = flat_inputs(sizes, seed)
            torch.autograd.grad(compiled(q, k, v, starts, max(sizes)).sum(), (q, k, v))
    except Exception as error:  # the figure is the failure itself
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, per-example SDPA as the kernel")
    args = parser.parse_args()
    global device
    if args.dry_run:
        device = "cpu"
        kernel: Any = stand_in
    elif not torch.cuda.is_available():
        sys.exit("bench.gpu_attention_check needs a CUDA GPU (the varlen kernel is CUDA-only); try --dry-run")
    else:
        from tuneloom.train.attention import causal_varlen_kernel

        kernel = causal_varlen_kernel()
    worst: dict[str, float] = {}
    for seed, count in ((0, 16), (1, 16), (2, 64)):
        for name, error in check(kernel, lengths(count, seed), seed).items():
            worst[name] = max(worst.get(name, 0.0), error)
    timing = time_both(kernel, lengths(16, 5))
    traced = compiles(kernel) if device == "cuda" else "ok (not tried: the stand-in is not one op)"
    passed = all(e < TOLERANCE for e in worst.values()) and traced.startswith("ok")
    figures: dict[str, Any] = {
        "relative_error_worst": worst,
        "tolerance": TOLERANCE,
        "tokens_timed": sum(lengths(16, 5)),
        **timing,
        "speedup_vs_masked_sdpa": timing["masked_sdpa_ms"] / timing["varlen_ms"],
        "compiled_dynamic": traced,
        "passed": passed,
    }
    rows = [[f"relative error, {name}", f"{error:.2e}"] for name, error in worst.items()]
    rows += [
        [f"fwd+bwd, {figures['tokens_timed']} tokens: varlen kernel", f"{timing['varlen_ms']:.2f} ms"],
        ["fwd+bwd: SDPA with the block-diagonal mask", f"{timing['masked_sdpa_ms']:.2f} ms"],
        ["compiled, dynamic shapes, two batches", traced],
    ]
    print_table(f"Packed attention on {device_name()}: {'PASSED' if passed else 'FAILED'}", ["check", "value"], rows)
    out = args.out or RESULTS_DIR / f"attention-check-{device_tag()}.json"
    device_label = device_name() + (" (dry run: per-example SDPA as the kernel)" if args.dry_run else "")
    write_result(out, benchmark="gpu_attention_check", figures=figures, device=device_label)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
