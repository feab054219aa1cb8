"""Training throughput: tuneloom vs the `Trainer` + `peft` recipe a user writes from the docs.

Both runs see the same examples in the same order (same sampler, same seed), the same LoRA config
and hyperparameters, one after the other on the same machine, each in its own process (so peak
memory is its own). Figures: real (non-padding) tokens per second, peak memory, and the mean
training loss — tuneloom must learn the same thing, so the losses must agree within 2%.

    python -m bench.train                      # SmolLM2-135M-Instruct, 64 examples
    python -m bench.train --model tiny-random  # seconds, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, print_table, write_result

TEMPLATES = MODEL_TEMPLATES
WORDS = [
    "the",
    "customer",
    "order",
    "account",
    "payment",
    "system",
    "report",
    "data",
    "model",
    "error",
    "update",
    "request",
    "service",
    "network",
    "delivery",
    "invoice",
    "product",
    "support",
    "team",
    "project",
    "issue",
    "release",
    "feature",
    "review",
    "summary",
    "translate",
    "analysis",
    "result",
    "quality",
    "process",
    "schedule",
    "meeting",
    "budget",
    "contract",
    "policy",
    "security",
    "training",
    "user",
]


def make_dataset(path: Path, n: int, seed: int) -> None:
    """Instruction-like lines: lognormal lengths, median ≈ 140 tokens, a long tail capped near 1,000."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = min(900, max(12, int(rng.lognormvariate(math.log(110), 0.7))))
        answer = max(3, int(words * rng.uniform(0.15, 0.4)))
        question = " ".join(rng.choice(WORDS) for _ in range(words - answer))
        response = " ".join(rng.choice(WORDS) for _ in range(answer))
        lines.append(f"### Instruction: Answer the request. ### Human: {question} ### Assistant: {response}")
    path.write_text("\n".join(lines) + "\n")


def trainer_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": args.batch,
        "learning_rate": 2e-4,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 42,
    }


def run_tuneloom(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    from tuneloom.train.recipe import TrainJob, run_training

    settings = {
        "tokenizer_config": {"model_max_length": 1100},
        "trainer_config": {**trainer_config(args), "eval_fraction": 0.0},
    }
    outcome = run_training(
        TrainJob(data=data, output=work / "version", template=TEMPLATES[args.model], settings=settings)
    )
    m = outcome.metrics
    tokens = outcome.report.token_stats["total"] * args.epochs if outcome.report.token_stats else 0
    return {"runtime_s": m["train_runtime_s"], "real_tokens": tokens, "mean_loss": m["train_loss"]}


def run_baseline(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    """The docs recipe: tokenize, `DataCollatorForSeq2Seq` (dynamic padding), `Trainer` + `get_peft_model`."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tuneloom.data import parse_file
    from tuneloom.data.tokenized import tokenize_examples
    from tuneloom.templates import get_template, resolve_settings
    from tuneloom.templates.loading import load_tokenizer
    from tuneloom.templates.sources import resolve_model_dir

    settings = resolve_settings(get_template(TEMPLATES[args.model]))
    set_seed(42)
    tokenizer = load_tokenizer(settings.model_config, settings.tokenizer_config)
    rows, _ = tokenize_examples(parse_file(data).examples, tokenizer, max_length=1100)
    dataset = [{"input_ids": r.input_ids, "attention_mask": [1] * len(r), "labels": r.labels} for r in rows]
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_dir(settings.model_config["pretrained_model_name_or_path"])
    )
    peft = {k: v for k, v in settings.peft_config.items() if k != "peft_type"}
    model = get_peft_model(model, LoraConfig(**peft))
    training_args = TrainingArguments(
        output_dir=str(work / "baseline"), report_to="none", disable_tqdm=True, **trainer_config(args)
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    )
    metrics = trainer.train().metrics
    tokens = sum(len(r) for r in rows) * args.epochs
    return {"runtime_s": metrics["train_runtime"], "real_tokens": tokens, "mean_loss": metrics["train_loss"]}


def worker(args: argparse.Namespace) -> None:
    work = Path(args.work)
    run = run_tuneloom if args.worker == "tuneloom" else run_baseline
    result = run(args, work / "data.txt", work)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["tokens_per_s"] = result["real_tokens"] / result["runtime_s"]
    (work / f"{args.worker}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(TEMPLATES), default="smollm2")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=["baseline", "tuneloom"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_dataset(work / "data.txt", args.examples, seed=0)
        results = {}
        for name in ("baseline", "tuneloom"):
            cmd = [sys.executable, "-m", "bench.train", *sys.argv[1:], "--worker", name, "--work", tmp]
            subprocess.run(cmd, check=True)
            results[name] = json.loads((work / f"{name}.json").read_text())
    base, ours = results["baseline"], results["tuneloom"]
    figures = {
        "model": TEMPLATES[args.model],
        "examples": args.examples,
        "batch": args.batch,
        "epochs": args.epochs,
        "baseline": base,
        "tuneloom": ours,
        "speedup_tokens_per_s": ours["tokens_per_s"] / base["tokens_per_s"],
        "loss_rel_diff": abs(ours["mean_loss"] - base["mean_loss"]) / base["mean_loss"],
    }
    print_table(
        f"Training throughput, {TEMPLATES[args.model]} LoRA, {args.examples} examples, batch {args.batch} (CPU)",
        ["run", "real tokens/s", "peak RSS MiB", "mean loss", "runtime s"],
        [
            [
                n,
                f"{r['tokens_per_s']:.0f}",
                f"{r['peak_rss_mib']:.0f}",
                f"{r['mean_loss']:.4f}",
                f"{r['runtime_s']:.1f}",
            ]
            for n, r in results.items()
        ]
        + [
            [
                "tuneloom / baseline",
                f"{figures['speedup_tokens_per_s']:.2f}×",
                "",
                f"Δ {figures['loss_rel_diff']:.2%}",
                "",
            ]
        ],
    )
    out = args.out or RESULTS_DIR / f"train-{args.model}-cpu.json"
    write_result(
        out,
        benchmark="train",
        figures=figures,
        device="cpu",
        libraries=("tuneloom", "torch", "transformers", "peft", "accelerate"),
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
