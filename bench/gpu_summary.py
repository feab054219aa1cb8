"""One table of everything `bench/gpu.sh` measured, read back from the result files it wrote.

    python -m bench.gpu_summary DIR   # DIR holds train-*.json and generate-*.json

A step that failed left no file; its row says so, so the table always shows what is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import print_table
from bench.generate import describe_breakdown

EXPECTED_TRAIN = ("smollm2-135m-random", "llama-1.1b-random")
DECODE_LABELS = {
    "baseline": "model.generate, one at a time (batch 1)",
    "single": "tuneloom, one request per call",
    "static": "static cache + compile, batch 1",
    "compiled": "tuneloom --compile, one request per call",
    "batched": "tuneloom, {requests} requests batched",
}


def load(folder: Path, pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob(pattern))]


def train_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    seen = {r["figures"]["model"] for r in results}
    for result in results:
        f = result["figures"]
        runs = {"baseline": f["baseline"], "tuneloom": f["tuneloom"]}
        if "tuneloom_compile" in f:
            runs["tuneloom+compile"] = f["tuneloom_compile"]
        ratios = {
            "tuneloom": (f["speedup_tokens_per_s"], f.get("steady_speedup_tokens_per_s")),
            "tuneloom+compile": (f.get("compiled_speedup_tokens_per_s"), f.get("compiled_steady_speedup_tokens_per_s")),
        }
        for run, r in runs.items():
            label = f"train {f['model']} b{f['batch']}"
            if "error" in r:
                rows.append([label, f"{run}: FAILED", r["error"][:50], "", "", "", ""])
                continue
            memory = r.get("peak_gpu_mib", r["peak_rss_mib"])
            whole, steady = ratios.get(run, (None, None))
            ratio = f"{whole:.2f}×" if whole is not None else ""
            ratio += f" (steady {steady:.2f}×)" if steady is not None else ""
            loss = f"{r['mean_loss']:.4f}" + (f" (Δ {f['loss_rel_diff']:.2%})" if run == "tuneloom" and whole else "")
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "–"
            mfu += f" (steady {r['steady_mfu']:.1%})" if "steady_mfu" in r else ""
            rows.append([label, run, f"{r['tokens_per_s']:.0f}", ratio, f"{memory:.0f}", loss, mfu])
    rows += [[f"train {m}", "NOT MEASURED (step failed)", "", "", "", "", ""] for m in EXPECTED_TRAIN if m not in seen]
    return rows


def attention_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """bench/gpu_attention_check.py: the varlen kernel's check and its time against the masked SDPA."""
    if not results:
        return [["packed attention", "NOT MEASURED (step failed)", "", "", "", "", ""]]
    f = results[-1]["figures"]
    worst = max(f["relative_error_worst"].values())
    verdict = f"{'passed' if f['passed'] else 'FAILED'}: worst rel. error {worst:.1e}, compiled {f['compiled_dynamic']}"
    timing = f"{f['varlen_ms']:.2f} vs {f['masked_sdpa_ms']:.2f} ms"
    speedup = f"{f['speedup_vs_masked_sdpa']:.1f}×"
    return [["packed attention", verdict[:60], timing, speedup, "", "", ""]]


def lora_layer_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """bench/lora_layers.py: one LoRA layer's host cost, peft's against the fused and the native candidate."""
    if not results:
        return []
    f = results[-1]["figures"]
    peft = f["peft"]["us_per_layer"]
    return [
        [
            f"LoRA layer, {name}",
            f"{f[name]['us_per_layer']:.1f} µs/layer",
            "",
            f"{peft / f[name]['us_per_layer']:.2f}×",
            f"{f[name]['operators_per_layer']:.0f} ops",
            "",
            "",
        ]
        for name in ("peft", "fused", "native")
    ]


def decode_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    merged: dict[str, Any] = {}
    for result in results:
        merged.update({k: v for k, v in result["figures"].items() if v is not None})
    if not merged:
        return [["decode", "NOT MEASURED (step failed)", "", "", "", "", ""]]
    base = merged.get("baseline")
    floor = merged.get("bandwidth", {}).get("floor_tokens_per_s")
    rows = []
    for key, label in DECODE_LABELS.items():
        run = merged.get(key)
        if run is None:
            rows.append([f"decode {merged['model']}", label.format(**merged), "not measured", "", "", "", ""])
            continue
        ratio = f"{run['tokens_per_s'] / base['tokens_per_s']:.2f}×" if base else ""
        of_floor = f"{run['tokens_per_s'] / floor:.1%} of floor" if floor and key != "batched" else ""
        rows.append(
            [f"decode {merged['model']}", label.format(**merged), f"{run['tokens_per_s']:.1f}", ratio, "", "", of_floor]
        )
    if floor:
        rows.append([f"decode {merged['model']}", "bandwidth floor (weights / HBM)", f"{floor:.0f}", "", "", "", ""])
    if breakdown := (merged.get("compiled") or {}).get("breakdown"):
        rows.append([f"decode {merged['model']}", describe_breakdown(breakdown), "", "", "", "", ""])
    return rows


def vllm_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """bench/vllm_decode.py's runs; its step is optional (skipped where vLLM is not installed)."""
    if not results:
        return [["decode vLLM", "not measured (optional step: vllm not installed here)", "", "", "", "", ""]]
    from bench.vllm_decode import LABELS

    f = results[-1]["figures"]
    base, floor = f["baseline"]["tokens_per_s"], f["bandwidth"]["floor_tokens_per_s"]
    rows = []
    for key, label in LABELS.items():
        run = f.get(key)
        if run is not None:
            of_floor = f"{run['tokens_per_s'] / floor:.1%} of floor" if floor and key == "vllm_single" else ""
            tokens = f"{run['tokens_per_s']:.1f}"
            rows.append(
                [
                    f"decode {f['model']}",
                    label.format(**f),
                    tokens,
                    f"{run['tokens_per_s'] / base:.2f}×",
                    "",
                    "",
                    of_floor,
                ]
            )
    return rows


def fsdp_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """bench/fsdp.py's run: tuneloom's FSDP path on one GPU (issue 7); tokens/s, no baseline."""
    if not results:
        return []  # bench/gpu_fsdp.sh's, not part of bench/gpu.sh
    rows = []
    for result in results:
        f = result["figures"]
        label = f"{f['strategy']} × {f['processes']}, {f['weights']}, batch {f['per_device_batch']}"
        rows.append([f"train {f['model']}", label, f"{f['tokens_per_s']:.0f}", "", "", f"{f['train_loss']:.4f}", ""])
    return rows


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    runs = load(folder, "train-*.json")
    train = [r for r in runs if r["benchmark"] == "train"]
    fsdp = [r for r in runs if r["benchmark"] == "train-fsdp"]
    decode = load(folder, "generate-*.json")
    device = next((r["device"] for r in train + decode), "no result")
    print_table(
        f"bench/gpu.sh — {device}",
        ["measurement", "run", "tokens/s", "× baseline", "peak MiB", "mean loss", "MFU / floor"],
        attention_rows(load(folder, "attention-check-*.json"))
        + lora_layer_rows(load(folder, "lora-layers-*.json"))
        + train_rows(train)
        + fsdp_rows(fsdp)
        + decode_rows(decode)
        + vllm_rows(load(folder, "vllm-*.json")),
    )


if __name__ == "__main__":
    main()
