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
from pathlib import Path
from typing import Any

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, cuda, device_name, model_settings, print_table, write_result
from bench.generate import prompts, timed
from tuneloom.generate.generator import BATCH_SIZE, generate
from tuneloom.generate.params import InferenceParams

SHORT, LONG = 8, 40  # new tokens of the two calls; their difference is LONG - SHORT decode steps


def timed_tokens(loaded: Any, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """Seconds of one batched `generate`, and the tokens the batch generated (`longest_row_tokens`)."""
    run = timed(lambda: longest_row_tokens(generate(loaded, texts, InferenceParams(max_tokens=max_tokens, stop=()))))
    return run["seconds"], int(run["new_tokens"])


def longest_row_tokens(rows: list[Any]) -> int:
    """How many tokens a batch was run for: its longest row's, an ending EOS included (a row's `tokens`
    leave it out, though a step made it). The prefill makes the first; each other is a decode step."""
    return max(row.tokens + (row.finish_reason == "stop") for row in rows)


def per_step_ms(loaded: Any, texts: list[str]) -> dict[str, float | None]:
    """Decode-step and prefill time for `texts` batched together, each call the best of two."""
    timed_tokens(loaded, texts, 2)  # this batch size's first-call costs out of the figures
    short_s, short_tokens = min(timed_tokens(loaded, texts, SHORT) for _ in range(2))
    long_s, long_tokens = min(timed_tokens(loaded, texts, LONG) for _ in range(2))
    if long_tokens <= short_tokens:  # every row ended early (EOS): no steps to time
        return {"step_ms": None, "prefill_and_first_ms": None}
    step = (long_s - short_s) / (long_tokens - short_tokens)
    return {"step_ms": step * 1e3, "prefill_and_first_ms": (short_s - step * (short_tokens - 1)) * 1e3}


def top_kernels(loaded: Any, texts: list[str], n: int = 12) -> list[list[Any]]:
    """The device-time leaders of a batched `generate` (CPU operators where there is no GPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda() else [])
    with profile(activities=activities) as prof:
        timed_tokens(loaded, texts, SHORT)
    events = prof.key_averages()
    key = "self_device_time_total" if cuda() else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
    return [[e.key[:90], e.count, round(getattr(e, key) / 1e3, 2)] for e in top]


def batch_sizes(text: str) -> list[int]:
    """`--batches`: each size at most what `generate` runs as one batch (more is split into batches run one
    after the other, whose steps would add up into one "step")."""
    sizes = [int(b) for b in text.split(",") if b.strip().isdigit()]
    if len(sizes) != len(text.split(",")) or not all(1 <= size <= BATCH_SIZE for size in sizes):
        raise argparse.ArgumentTypeError(f"must be batch sizes from 1 to {BATCH_SIZE}, e.g. 1,8,32; got {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_TEMPLATES), default="llama-1.1b-random")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=batch_sizes, default="1,8,32", help=f"comma-separated, 1 to {BATCH_SIZE}")
    args = parser.parse_args()
    from tuneloom.generate.loading import load_for_inference

    loaded = load_for_inference(MODEL_TEMPLATES[args.model], model_settings(args.model))
    texts = prompts(max(args.batches))
    figures: dict[str, Any] = {"model": args.model, "new_tokens": [SHORT, LONG]}
    for size in args.batches:
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
