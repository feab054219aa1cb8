"""FSDP through tuneloom's own launch path: `tuneloom train --strategy fsdp` on the Llama-1.1B shape.

The same command a user runs (`accelerate launch` underneath, FSDP2, full state dict consolidated
into a normal model-version directory), timed end to end and by the Trainer. Random weights (the
shape decides the speed); a full fine-tune by default, so FSDP shards trainable weights, gradients
and optimizer state, `--lora` for the template's adapters instead.

    python -m bench.fsdp                                   # one GPU (bench/gpu_fsdp.sh)
    BENCH_TINY=1 python -m bench.fsdp --examples 16 --batch 4 --processes 2 --strategy ddp   # CPU dry run

accelerate shards only over GPUs, so tuneloom refuses 'fsdp' on a CPU machine: the CPU dry run checks
this script and the launch path with DDP over gloo. On a GPU the version's manifest must say the
weights were sharded (gathered at the end), or the run counts as failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, cuda, device_name, device_tag, model_settings, print_table, write_result
from bench.train import make_dataset

MODEL = "llama-1.1b-random"
TEMPLATE = "smollm2-135m-instruct-lora"  # its LoRA targets (q/k/v/o) and defaults; the base model is replaced


def command(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    settings = model_settings(MODEL)  # builds the random-weight model once per machine
    trainer = {
        "num_train_epochs": 1,
        "per_device_train_batch_size": args.batch,
        "learning_rate": 2e-5 if not args.lora else 2e-4,
        "save_strategy": "no",
        "eval_fraction": 0.0,
        "seed": 42,
        **settings.get("trainer_config", {}),
    }
    return [
        sys.executable,
        "-m",
        "tuneloom.cli",
        "train",
        str(data),
        "--template",
        TEMPLATE,
        "--model-config",
        json.dumps(settings["model_config"]),
        "--tokenizer-config",
        json.dumps({"model_max_length": 1100}),
        "--trainer-config",
        json.dumps(trainer),
        *([] if args.lora else ["--peft-config", "{}"]),
        "--strategy",
        args.strategy,
        "--num-processes",
        str(args.processes),
        "--output",
        str(out),
        "--json",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1, help="one per GPU (a CPU dry run: 2, gloo)")
    parser.add_argument("--strategy", default="fsdp", choices=("fsdp", "ddp"), help="ddp: the CPU dry run")
    parser.add_argument("--lora", action="store_true", help="train the template's LoRA adapters, not every weight")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_dataset(work / "data.txt", args.examples, seed=0)
        cmd = command(args, work / "data.txt", work / "version")
        started = time.monotonic()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        wall = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"tuneloom train failed (exit {done.returncode}); its output is above")
        metrics = json.loads(done.stdout)["metrics"]
        manifest = json.loads((work / "version" / "tuneloom.json").read_text())
    if args.strategy == "fsdp" and not manifest["distributed"]["sharded"]:
        sys.exit(f"the run was not sharded (manifest: {manifest['distributed']}): FSDP did not take effect")
    figures = summarize(args, metrics, manifest, wall)
    print_table(
        f"{args.strategy.upper()} training, {MODEL} {'LoRA' if args.lora else 'full fine-tune'}, "
        f"{args.examples} examples, "
        f"batch {args.batch} × {args.processes} process(es) ({device_name()})",
        ["tokens/s", "train runtime s", "wall s (load, launch, save)", "steps", "mean loss"],
        [
            [
                f"{figures['tokens_per_s']:.0f}",
                f"{figures['train_runtime_s']:.1f}",
                f"{wall:.1f}",
                figures["steps"],
                f"{figures['train_loss']:.4f}",
            ]
        ],
    )
    out = args.out or RESULTS_DIR / f"train-fsdp-{MODEL}-{device_tag()}.json"
    write_result(out, benchmark="train-fsdp", figures=figures, device=device_name(),
                 libraries=("tuneloom", "torch", "transformers", "peft", "accelerate"))  # fmt: skip
    print(f"wrote {out}")


def summarize(
    args: argparse.Namespace, metrics: dict[str, Any], manifest: dict[str, Any], wall: float
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "weights": manifest["weights"],
        "distributed": manifest.get("distributed"),
        "examples": args.examples,
        "per_device_batch": args.batch,
        "processes": args.processes,
        "strategy": args.strategy,
        "tokens_per_s": metrics["train_tokens_per_second"],
        "train_runtime_s": metrics["train_runtime_s"],
        "wall_s": round(wall, 1),
        "steps": metrics["steps"],
        "train_loss": metrics["train_loss"],
        "bf16": cuda(),
    }


if __name__ == "__main__":
    main()
