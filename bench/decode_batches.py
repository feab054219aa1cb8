"""Where batched decoding's time goes: the decode step's time at batch 1, 8 and 32, prefill apart.

On an H200 tuneloom's `generate` decoded the 1.1B shape at 16 ms per step for one request but 78 ms
per step for 32 together (bench/README.md, GPU). The host's share cannot explain it: one decode step
dispatches about the same number of operators at batch 1 and at batch 32 (1,255 and 1,309, counted on
a CPU with `bench.step_ops`' narrow model). This measures, per batch size, two `generate` calls of
different lengths on the same prompts: their difference is the time of the decode steps alone (the
prefill, the same in both, cancels), and a profile of batch 32 names the kernels that take the GPU's time.

    python -m bench.decode_batches --model llama-1.1b-random    # on a GPU (bench/gpu_profile.sh)
    BENCH_TINY=1 python -m bench.decode_batches --model tiny-random   # CPU smoke run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, cuda, device_name, model_settings, print_table, write_result
from bench.generate import prompts, sync

SHORT, LONG = 8, 40  # new tokens of the two calls; their difference is LONG - SHORT decode steps


def timed_steps(loaded: Any, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """Seconds of one batched `generate`, and its decode steps (the batch runs until its longest row ends)."""
    from tuneloom.generate.generator import generate
    from tuneloom.generate.params import InferenceParams

    sync()
    started = time.perf_counter()
    rows = generate(loaded, texts, InferenceParams(max_tokens=max_tokens, stop=()))
    sync()
    return time.perf_counter() - started, max(r.tokens for r in rows)


def per_step_ms(loaded: Any, texts: list[str]) -> dict[str, float | None]:
    """Decode-step and prefill time for `texts` batched together, each call the best of two."""
    timed_steps(loaded, texts, 2)  # this batch size's first-call costs out of the figures
    short_s, short_steps = min(timed_steps(loaded, texts, SHORT) for _ in range(2))
    long_s, long_steps = min(timed_steps(loaded, texts, LONG) for _ in range(2))
    if long_steps <= short_steps:  # every row ended early (EOS): no steps to time
        return {"step_ms": None, "prefill_and_first_ms": None}
    step = (long_s - short_s) / (long_steps - short_steps)
    return {"step_ms": step * 1e3, "prefill_and_first_ms": (short_s - step * (short_steps - 1)) * 1e3}


def top_kernels(loaded: Any, texts: list[str], n: int = 12) -> list[list[Any]]:
    """The device-time leaders of a batched `generate` (CPU operators where there is no GPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda() else [])
    with profile(activities=activities) as prof:
        timed_steps(loaded, texts, SHORT)
    events = prof.key_averages()
    key = "self_device_time_total" if cuda() else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
    return [[e.key[:90], e.count, round(getattr(e, key) / 1e3, 2)] for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_TEMPLATES), default="llama-1.1b-random")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from tuneloom.generate.loading import load_for_inference

    loaded = load_for_inference(MODEL_TEMPLATES[args.model], model_settings(args.model))
    sizes = [int(b) for b in args.batches.split(",")]
    texts = prompts(max(sizes))
    figures: dict[str, Any] = {"model": args.model, "new_tokens": [SHORT, LONG]}
    for size in sizes:
        figures[f"batch_{size}"] = per_step_ms(loaded, texts[:size])
    figures["top_kernels_batch_max"] = top_kernels(loaded, texts)
    rows = [
        [name, *(f"{f[k]:.1f}" if f[k] is not None else "–" for k in ("step_ms", "prefill_and_first_ms"))]
        for name, f in figures.items()
        if name.startswith("batch_")
    ]
    print_table(
        f"tuneloom generate, {args.model} ({device_name()})",
        ["batch", "ms per decode step", "prefill + first token ms"],
        rows,
    )
    print_table(
        "top kernels (device ms) of the largest batch",
        ["kernel", "calls", "ms"],
        [[str(c) for c in k] for k in figures["top_kernels_batch_max"]],
    )
    out = args.out or RESULTS_DIR / f"decode-batches-{args.model}.json"
    write_result(
        out, benchmark="decode-batches", figures=figures, device=device_name(), libraries=("torch", "transformers")
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
