"""Choosing the next token while sampling: tuneloom's `pick_tokens` against transformers' own warpers.

    python -m bench.sampling [--rows 8] [--vocabulary 49152] [--repeat 30] [--out FILE]

The baseline is what `generate()` does at every sampled step: `TemperatureLogitsWarper`,
`TopKLogitsWarper`, `TopPLogitsWarper` (each sorting the whole vocabulary) and `torch.multinomial`.
Both pick for the same logits (a batch of `--rows` rows over SmolLM2's vocabulary by default), for
each common setting; the figure is milliseconds per step (best of `--repeat`, the two interleaved
so that a busy machine slows both alike) and the ratio. On a 135M model a decode step for a few
rows takes tens of milliseconds on a CPU, so a sort of the vocabulary per step was a large share.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from bench.common import RESULTS_DIR, device_name, device_tag, print_table, write_result
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.sampling import pick_tokens

SETTINGS = {
    "temperature 0.7": {"temperature": 0.7},
    "top_p 0.9": {"temperature": 0.7, "top_p": 0.9},
    "top_k 50": {"temperature": 0.7, "top_k": 50},
    "top_k 50, top_p 0.95": {"temperature": 0.7, "top_k": 50, "top_p": 0.95},
}


def baseline(setting: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    warpers = LogitsProcessorList([TemperatureLogitsWarper(setting["temperature"])])
    if setting.get("top_k"):
        warpers.append(TopKLogitsWarper(int(setting["top_k"])))
    if setting.get("top_p", 1.0) < 1.0:
        warpers.append(TopPLogitsWarper(setting["top_p"]))

    def pick(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(None, logits)  # type: ignore[arg-type]
        return torch.multinomial(scores.softmax(dim=-1), 1).squeeze(1)

    return pick


def tuneloom(setting: dict[str, float], rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    params = [InferenceParams.from_dict({**setting, "do_sample": True})] * rows
    return lambda logits: pick_tokens(logits, params)


def best_ms(picks: list[Callable[[torch.Tensor], torch.Tensor]], logits: torch.Tensor, repeat: int) -> list[float]:
    """Per pick, its best time in milliseconds, the picks run in turn `repeat` times."""
    best = [float("inf")] * len(picks)
    for _ in range(repeat):
        for index, pick in enumerate(picks):
            start = time.perf_counter()
            pick(logits)
            if logits.is_cuda:
                torch.cuda.synchronize()
            best[index] = min(best[index], (time.perf_counter() - start) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--vocabulary", type=int, default=49152)  # SmolLM2's
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits = torch.randn(args.rows, args.vocabulary, generator=torch.Generator().manual_seed(0)).mul(3).to(device)
    figures: dict[str, dict[str, float]] = {}
    for name, setting in SETTINGS.items():
        ours, theirs = best_ms([tuneloom(setting, args.rows), baseline(setting)], logits, args.repeat)
        figures[name] = {
            "tuneloom_ms": round(ours, 3),
            "baseline_ms": round(theirs, 3),
            "speedup": round(theirs / ours, 2),
        }
    rows = [(name, f["baseline_ms"], f["tuneloom_ms"], f"{f['speedup']}×") for name, f in figures.items()]
    print_table(
        f"Sampling one step: {args.rows} rows × {args.vocabulary:,} tokens ({device_name()})",
        ["setting", "transformers warpers (ms)", "tuneloom (ms)", "speed-up"],
        rows,
    )
    out = args.out or RESULTS_DIR / f"sampling-{device_tag()}.json"
    print(
        write_result(
            out,
            benchmark="sampling",
            figures={"rows": args.rows, "vocabulary": args.vocabulary, **figures},
            device=device_name(),
        )
    )


if __name__ == "__main__":
    main()
