"""Training throughput: tuneloom vs the `Trainer` + `peft` recipe a user writes from the docs.

Both runs see the same examples in the same order (same sampler, same seed), the same LoRA config
and hyperparameters, one after the other on the same machine, each in its own process (so peak
memory is its own). Figures: real (non-padding) tokens per second, peak memory, and the mean
training loss — tuneloom must learn the same thing, so the losses must agree within 2%.

    python -m bench.train                      # SmolLM2-135M-Instruct, 64 examples
    python -m bench.train --model tiny-random  # seconds, for a smoke check
    python -m bench.train --model llama-1.1b-random --examples 384 --batch 16   # on a GPU (bench/gpu.sh)
    python -m bench.train --model llama-1.1b-random --examples 768 --batch 16 --compile   # + a compiled run

`--compile` adds a third run, `tuneloom+compile`: tuneloom with `trainer_config.torch_compile: true`
(the Trainer compiles the model, dynamic shapes after the first new width). On a GPU the eager step
is host-bound (bench/README.md, GPU: about 30 µs per dispatched operator), and a compiled step
dispatches fused kernels instead of thousands of operators. Its runtime includes the compile, as a
user's run does. Each tuneloom run reports its median step (`steady_step_s`) and how much longer its
first step took (`first_step_excess_s`: the first step's warm-up — allocator, kernels' first loads — and,
compiled, the compile); `compile_s_estimate` is the compiled run's excess less the eager run's, and
`compiled_steady_step_speedup` what compiling gains per step once it is done. `--limit-s` stops the
compiled run when the whole benchmark has run that long, so that the other two runs' figures are
still written (a compile that does not finish in time is that run's figure).

On a GPU both runs compute in bf16 (weights loaded in bf16, `bf16=True`), peak memory is
`torch.cuda.max_memory_allocated`, and MFU is reported against the card's datasheet bf16 peak with
`bench.random_models.lora_flops_per_token` (4·N_linear + 6·N_lora per real token).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    MODEL_TEMPLATES,
    RESULTS_DIR,
    cuda,
    device_name,
    device_tag,
    model_settings,
    print_table,
    write_result,
)

TEMPLATES = MODEL_TEMPLATES
COMPILED = "tuneloom+compile"
SUMMARY_S = 15.0  # of --limit-s, kept for summing up and writing the figures after the last run
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
        **model_settings(args.model).get("trainer_config", {}),
    }


def run_tuneloom(args: argparse.Namespace, data: Path, work: Path, *, compiled: bool = False) -> dict[str, Any]:
    from tuneloom.train.recipe import TrainJob, run_training

    settings = {
        **model_settings(args.model),
        "tokenizer_config": {"model_max_length": 1100},
        "trainer_config": {
            **trainer_config(args),
            **({"bf16": True, "use_cpu": True} if args.bf16 and not cuda() else {}),
            "eval_fraction": 0.0,
            "torch_compile": compiled,
        },
    }
    step_ends = [0.0]  # seconds since training began
    steps = math.ceil(args.examples / args.batch) * args.epochs
    profiling = args.profile and steps >= profiled_from(steps) + PROFILED_STEPS
    profiler = steady_step_profiler(steps) if profiling else contextlib.nullcontext()

    def on_event(event: Any) -> None:
        if event.kind == "step":
            step_ends.append(event.elapsed_s)
            if profiling:
                profiler.step()

    with profiler:
        outcome = run_training(
            TrainJob(
                data=data,
                output=work / ("version-compiled" if compiled else "version"),
                template=TEMPLATES[args.model],
                settings=settings,
            ),
            on_event=on_event,
        )
    m = outcome.metrics
    tokens = outcome.report.token_stats["total"] * args.epochs if outcome.report.token_stats else 0
    result = {"runtime_s": m["train_runtime_s"], "real_tokens": tokens, "mean_loss": m["train_loss"]}
    if args.profile and not profiling:
        result["profile"] = {"skipped": f"{steps} steps: too few to profile {PROFILED_STEPS} mid-run"}
    elif profiling:
        first = profiled_from(steps)  # step_ends[i] is the end of step i: the window is steps first+1 … first+N
        wall = step_ends[first + PROFILED_STEPS] - step_ends[first]
        result["profile"] = profile_summary(profiler.key_averages(), wall, PROFILED_STEPS)
    return result | steady_figures(step_ends, tokens)


PROFILED_STEPS = 3
KERNEL_LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")


def profiled_from(steps: int) -> int:
    """The steps before the profiled ones: half the run, so the first step's warm-up and compile are behind."""
    return max(1, steps // 2)


def steady_step_profiler(steps: int) -> Any:
    """A `torch.profiler` over PROFILED_STEPS steps in the middle of the run (it is stepped at each step's end)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda() else [])
    # prof.step() k ends training step k: wait through step first-1, warm up on step first, record the next N.
    plan = schedule(wait=profiled_from(steps) - 1, warmup=1, active=PROFILED_STEPS, repeat=1)
    return profile(activities=activities, schedule=plan)


def print_profile(run: str, summary: dict[str, Any]) -> None:
    if "skipped" in summary:
        print(f"{run}: not profiled ({summary['skipped']})")
        return
    busy = summary["device_busy_share"]
    rows = [
        ["wall per step", f"{summary['wall_s_per_step'] * 1000:.1f} ms", ""],
        ["device busy", f"{busy:.0%}" if busy is not None else "– (no GPU)", ""],
        ["kernel launches per step", f"{summary['kernel_launches_per_step']:.0f}", ""],
    ]
    rows += [[f"CPU: {name}", f"{ms} ms", count] for name, count, ms in summary["top_cpu_ops_ms"][:6]]
    rows += [[f"device: {name}", f"{ms} ms", count] for name, count, ms in summary["top_device_ops_ms"][:6]]
    print_table(f"{run}: {summary['steps']} steps profiled mid-run", ["", "time", "calls"], rows)


def profile_summary(events: Any, wall_s: float, steps: int) -> dict[str, Any]:
    """Where profiled steps' time went: the device's busy share of the wall time (under 1: the host, not the
    card, sets the pace), kernel launches per step, and the operators with the most CPU and device self time."""
    device_us = sum(e.self_device_time_total for e in events) if cuda() else 0.0
    by_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    by_device = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:8] if cuda() else []
    return {
        "steps": steps,
        "wall_s_per_step": wall_s / steps,
        "device_busy_share": device_us / 1e6 / wall_s if cuda() and wall_s else None,
        "kernel_launches_per_step": sum(e.count for e in events if e.key in KERNEL_LAUNCHES) / steps,
        "top_cpu_ops_ms": [[e.key[:90], e.count, round(e.self_cpu_time_total / 1e3, 1)] for e in by_cpu],
        "top_device_ops_ms": [[e.key[:90], e.count, round(e.self_device_time_total / 1e3, 1)] for e in by_device],
    }


def steady_figures(stamps: list[float], real_tokens: int) -> dict[str, float]:
    """`first_step_excess`, and the tokens/s at the median step: what a long run settles to, once its
    first step's warm-up (and, compiled, the compile) is behind it."""
    figures = first_step_excess(stamps)
    if figures and figures["steady_step_s"] > 0:
        figures["steady_tokens_per_s"] = real_tokens / (figures["steady_step_s"] * (len(stamps) - 1))
    return figures


def first_step_excess(stamps: list[float]) -> dict[str, float]:
    """The median step after the first, and how much longer the first step took (`stamps`: 0, then the
    seconds at each step's end). Later recompiles, one per new batch width until shapes go dynamic, are
    in the runtime only: the median leaves them out."""
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps[1:]))
    if not gaps:
        return {}
    steady = gaps[len(gaps) // 2]
    return {"steady_step_s": steady, "first_step_excess_s": max(0.0, stamps[1] - stamps[0] - steady)}


def run_baseline(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    """The docs recipe: tokenize, `DataCollatorForSeq2Seq` (dynamic padding), `Trainer` + `get_peft_model`."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from tuneloom.data import parse_file
    from tuneloom.data.tokenized import tokenize_examples
    from tuneloom.templates import get_template, resolve_settings
    from tuneloom.templates.loading import load_tokenizer, pick_device, resolve_dtype
    from tuneloom.templates.sources import resolve_model_dir

    settings = resolve_settings(get_template(TEMPLATES[args.model]), model_settings(args.model))
    set_seed(42)
    tokenizer = load_tokenizer(settings.model_config, settings.tokenizer_config)
    rows, _ = tokenize_examples(parse_file(data).examples, tokenizer, max_length=1100)
    dataset = [{"input_ids": r.input_ids, "attention_mask": [1] * len(r), "labels": r.labels} for r in rows]
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_dir(settings.model_config["pretrained_model_name_or_path"]),
        dtype=resolve_dtype(settings.model_config.get("torch_dtype"), pick_device()),  # same dtype as tuneloom's
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
    stamps: list[float] = []

    class StepClock(TrainerCallback):  # the same step times tuneloom's runs report, for the steady figures
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            stamps.append(time.monotonic())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            stamps.append(time.monotonic())

    trainer.add_callback(StepClock())
    metrics = trainer.train().metrics
    tokens = sum(len(r) for r in rows) * args.epochs
    result = {"runtime_s": metrics["train_runtime"], "real_tokens": tokens, "mean_loss": metrics["train_loss"]}
    return result | steady_figures([t - stamps[0] for t in stamps], tokens)


def worker(args: argparse.Namespace) -> None:
    import torch

    work = Path(args.work)
    runs: dict[str, Callable[..., dict[str, Any]]] = {
        "baseline": run_baseline,
        "tuneloom": run_tuneloom,
        COMPILED: functools.partial(run_tuneloom, compiled=True),
    }
    try:
        result = runs[args.worker](args, work / "data.txt", work)
    except (MemoryError, torch.OutOfMemoryError) as err:  # a figure of its own: the other run still runs
        error = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        (work / f"{args.worker}.json").write_text(json.dumps(error))
        return
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda():
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result["tokens_per_s"] = result["real_tokens"] / result["runtime_s"]
    (work / f"{args.worker}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(TEMPLATES), default="smollm2")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--compile", action="store_true", help="also run tuneloom with torch_compile")
    parser.add_argument(
        "--profile", action="store_true", help=f"profile {PROFILED_STEPS} steps mid-run of each tuneloom run"
    )
    parser.add_argument(
        "--limit-s", type=float, default=None, help="stop the compiled run when the whole benchmark has run this long"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="on a CPU, tuneloom's runs in mixed bfloat16 (bf16 + use_cpu); the baseline stays as written (float32)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the Trainer + peft run (where it is known not to fit: batch 64 of the 1.1B ran out of memory)",
    )
    parser.add_argument("--worker", choices=["baseline", "tuneloom", COMPILED], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    started = time.monotonic()
    settings = model_settings(args.model)  # builds a random-shape model once, before the workers read it
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_dataset(work / "data.txt", args.examples, seed=0)
        skipped = {"error": "not run (--no-baseline)"}
        results = {"baseline": skipped if args.no_baseline else run_worker("baseline", work)}
        results["tuneloom"] = run_worker("tuneloom", work)
        if args.compile:
            left = args.limit_s - (time.monotonic() - started) - SUMMARY_S if args.limit_s else None
            results[COMPILED] = run_worker(COMPILED, work, limit_s=left)
    figures = summarize(args, results, settings)
    print_table(
        f"Training throughput, {args.model} LoRA, {args.examples} examples, batch {args.batch} ({device_name()})",
        [
            "run",
            "real tokens/s",
            "peak GPU MiB" if cuda() else "peak RSS MiB",
            "mean loss",
            "runtime s",
            "MFU",
            "steady tokens/s",
            "steady MFU",
        ],
        table_rows(results, figures),
    )
    for name, result in results.items():
        if "profile" in result:
            print_profile(name, result["profile"])
    out = args.out or RESULTS_DIR / f"train-{args.model}-{device_tag()}.json"
    write_result(
        out,
        benchmark="train",
        figures=figures,
        device=device_name(),
        libraries=("tuneloom", "torch", "transformers", "peft", "accelerate"),
    )
    print(f"wrote {out}")


def run_worker(name: str, work: Path, *, limit_s: float | None = None) -> dict[str, Any]:
    """Run `name` in a process of its own and read its figures. The baseline's or tuneloom's failure
    stops the benchmark; the compiled run's failure, or its not finishing within `limit_s`, is its figure."""
    cmd = [sys.executable, "-m", "bench.train", *sys.argv[1:], "--worker", name, "--work", str(work)]
    if limit_s is not None and limit_s <= 0:
        return {"error": "not run: no time left within --limit-s"}
    try:
        code = subprocess.run(cmd, check=name != COMPILED, timeout=limit_s).returncode
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {limit_s:.0f} s (--limit-s): still compiling or training"}
    written = work / f"{name}.json"
    return json.loads(written.read_text()) if written.exists() else {"error": f"exit {code}"}


def table_rows(results: dict[str, dict[str, Any]], figures: dict[str, Any]) -> list[list[str]]:
    memory = "peak_gpu_mib" if cuda() else "peak_rss_mib"
    rows = [
        [n, "FAILED", r["error"][:60], "", "", "", "", ""]
        if "error" in r
        else [
            n,
            f"{r['tokens_per_s']:.0f}",
            f"{r[memory]:.0f}",
            f"{r['mean_loss']:.4f}",
            f"{r['runtime_s']:.1f}",
            mfu(r),
            f"{r['steady_tokens_per_s']:.0f}" if "steady_tokens_per_s" in r else "–",
            mfu(r, "steady_mfu"),
        ]
        for n, r in results.items()
    ]
    if figures["speedup_tokens_per_s"] is not None:
        ratio = results["tuneloom"][memory] / results["baseline"][memory]
        speedup, loss = figures["speedup_tokens_per_s"], figures["loss_rel_diff"]
        steady = times(figures.get("steady_speedup_tokens_per_s"))
        rows.append(["tuneloom / baseline", f"{speedup:.2f}×", f"{ratio:.2f}×", f"Δ {loss:.2%}", "", "", steady, ""])
    if figures.get("compiled_speedup_tokens_per_s") is not None:
        compiled = results[COMPILED]
        ratio = compiled[memory] / results["baseline"][memory]
        speedup = figures["compiled_speedup_tokens_per_s"]
        compile_s, step = figures["compile_s_estimate"], figures["compiled_steady_step_speedup"]
        note = f"compile ≈ {compile_s:.0f} s" if compile_s is not None else ""
        note += f", step {step:.2f}× eager's" if step is not None else ""
        steady = times(figures.get("compiled_steady_speedup_tokens_per_s"))
        rows.append(["tuneloom+compile / baseline", f"{speedup:.2f}×", f"{ratio:.2f}×", note, "", "", steady, ""])
    return rows


def times(ratio: float | None) -> str:
    return f"{ratio:.2f}×" if ratio is not None else "–"


def summarize(args: argparse.Namespace, results: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Both runs' figures, their ratios, and — on a known card — FLOPs per token and MFU of each."""
    from bench.random_models import card_for, lora_flops_per_token, matmul_parameters
    from tuneloom.templates import get_template, resolve_settings
    from tuneloom.templates.sources import resolve_model_dir

    resolved = resolve_settings(get_template(TEMPLATES[args.model]), settings)
    folder = Path(resolve_model_dir(resolved.model_config["pretrained_model_name_or_path"]))
    lora = resolved.peft_config
    linear, adapters = matmul_parameters(folder, int(lora["r"]), list(lora["target_modules"]))
    per_token = lora_flops_per_token(linear, adapters)
    card = card_for(device_name()) if cuda() else None
    for result in (r for r in results.values() if "error" not in r):
        result["flops_per_token"] = per_token
        if card is not None:
            result["mfu"] = result["tokens_per_s"] * per_token / card.bf16_dense_flops
            if "steady_tokens_per_s" in result:
                result["steady_mfu"] = result["steady_tokens_per_s"] * per_token / card.bf16_dense_flops
    base, ours = results["baseline"], results["tuneloom"]
    both = "error" not in base and "error" not in ours
    compiled = results.get(COMPILED)
    extra = {} if compiled is None else compiled_figures(base, ours, compiled)
    return extra | {
        "model": args.model,
        "template": TEMPLATES[args.model],
        "examples": args.examples,
        "batch": args.batch,
        "epochs": args.epochs,
        "tuneloom_cpu_bf16": bool(args.bf16 and not cuda()),
        "linear_parameters": linear,
        "lora_parameters": adapters,
        "flops_per_token_formula": "4 * linear_parameters + 6 * lora_parameters (attention scores not counted)",
        "peak_bf16_flops": card.bf16_dense_flops if card else None,
        "baseline": base,
        "tuneloom": ours,
        "speedup_tokens_per_s": ours["tokens_per_s"] / base["tokens_per_s"] if both else None,
        "steady_speedup_tokens_per_s": (
            ours["steady_tokens_per_s"] / base["steady_tokens_per_s"]
            if both and "steady_tokens_per_s" in ours and "steady_tokens_per_s" in base
            else None
        ),
        "loss_rel_diff": abs(ours["mean_loss"] - base["mean_loss"]) / base["mean_loss"] if both else None,
    }


def compiled_figures(base: dict[str, Any], ours: dict[str, Any], compiled: dict[str, Any]) -> dict[str, Any]:
    """The compiled run against the baseline (tokens/s, compile included) and against tuneloom's eager run:
    the compile's cost (first-step excesses apart, so the warm-up both runs have is not counted as compile)
    and the per-step gain once compiled."""

    def both(key: str, figure: Callable[[float, float], float]) -> float | None:
        eager, done = ours.get(key), compiled.get(key)
        return figure(eager, done) if eager is not None and done is not None else None

    with_compiled = "error" not in base and "error" not in compiled
    steady = with_compiled and "steady_tokens_per_s" in base and "steady_tokens_per_s" in compiled
    return {
        "tuneloom_compile": compiled,
        "compiled_speedup_tokens_per_s": compiled["tokens_per_s"] / base["tokens_per_s"] if with_compiled else None,
        "compiled_steady_speedup_tokens_per_s": (
            compiled["steady_tokens_per_s"] / base["steady_tokens_per_s"] if steady else None
        ),
        "compile_s_estimate": both("first_step_excess_s", lambda eager, done: max(0.0, done - eager)),
        "compiled_steady_step_speedup": both("steady_step_s", lambda eager, done: eager / done),
    }


def mfu(result: dict[str, Any], key: str = "mfu") -> str:
    return f"{result[key]:.1%}" if key in result else "–"


if __name__ == "__main__":
    main()
