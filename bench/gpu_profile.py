"""Where a LoRA training step's time goes on a GPU, for the gap between `bench.train`'s figures and the card.

bench/gpu.sh measured tuneloom's packed training at 1.1-1.2× the Trainer + peft baseline on an H200,
with the MFU at 4%: both runs took about 0.25-0.4 s per step whatever their tokens, so something other
than the arithmetic sets the pace. This measures, on the same packed batches and the same model:

- the cost of one tiny kernel launch (the floor under any eager step of thousands of kernels);
- a bare loop (forward, loss, backward, fused AdamW) without the Trainer: as loaded, under bf16
  autocast (what `bf16=True` makes the Trainer do), and with a `.item()` sync per step;
- the same loop compiled (`torch.compile`, dynamic shapes), its compile time apart;
- tuneloom's own run (`run_training`, the Trainer) on the same examples;
- a profile of the autocast loop: GPU-busy share of the wall time and the top CPU-side operators;
- last, the autocast loop with Liger's Triton kernels for RMSNorm, SwiGLU and RoPE patched in (where
  `liger_kernel` imports: `bench/gpu_prepare.sh` carries its wheel), fewer and fused kernels per layer.

    python -m bench.gpu_profile --model llama-1.1b-random --batch 16 --steps 24   # on a GPU
    BENCH_TINY=1 python -m bench.gpu_profile --model tiny-random --steps 4        # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, cuda, device_name, model_settings, print_table, write_result
from bench.train import make_dataset, profile_summary, trainer_config

RESULTS: dict[str, Any] = {}


def sync() -> None:
    if cuda():
        torch.cuda.synchronize()


def launch_cost_us(launches: int = 5000) -> float:
    """Microseconds per launch of a kernel that does almost nothing."""
    x = torch.zeros(16, device="cuda" if cuda() else "cpu")
    for _ in range(100):
        x.add_(1)
    sync()
    started = time.perf_counter()
    for _ in range(launches):
        x.add_(1)
    sync()
    return (time.perf_counter() - started) / launches * 1e6


def build(
    args: argparse.Namespace, work: Path
) -> tuple[Any, list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]], tuple[int, int]]:
    """tuneloom's model (LoRA applied) and packed batches, exactly as `run_training` builds them."""
    from tuneloom.data.sections import RESPONSE_HEADERS
    from tuneloom.templates import get_template, resolve_settings
    from tuneloom.templates.loading import apply_peft, load_model, load_tokenizer
    from tuneloom.train.dataset import read_and_tokenize
    from tuneloom.train.packing import PackedCollator
    from tuneloom.train.recipe import ROW_TOKENS

    settings = resolve_settings(get_template(MODEL_TEMPLATES[args.model]), model_settings(args.model))
    tokenizer = load_tokenizer(settings.model_config, settings.tokenizer_config)
    make_dataset(work / "data.txt", 4 * args.batch * (args.steps // 4 + 3), seed=0)
    _, rows, _ = read_and_tokenize(
        work / "data.txt",
        tokenizer,
        data_format="auto",
        response_headers=RESPONSE_HEADERS,
        max_length=1100,
        train_on_prompt=False,
        tolerance_percent=0.0,
    )
    collate = PackedCollator(tokenizer.pad_token_id, ROW_TOKENS)
    device = "cuda" if cuda() else "cpu"

    def batches(size: int) -> list[dict[str, torch.Tensor]]:
        packed = []
        for start in range(0, len(rows) - size + 1, size):
            batch = collate([{"input_ids": r.input_ids, "labels": r.labels} for r in rows[start : start + size]])
            packed.append({k: v.to(device) for k, v in batch.items()})
        return packed

    def timed_tokens(size: int, steps: int) -> int:  # the examples of the steps `loop` times (after 3 warm-ups)
        return sum(len(r) for r in rows[3 * size : (3 + steps) * size])

    tokens = (timed_tokens(args.batch, args.steps), timed_tokens(4 * args.batch, args.steps // 4))
    model = apply_peft(load_model(settings.model_config, settings.quantization_config), settings.peft_config)
    return model, batches(args.batch), batches(4 * args.batch), tokens


def loop(model: Any, batches: list[dict[str, torch.Tensor]], steps: int, *, autocast: bool, item: bool) -> float:
    """Seconds for `steps` optimizer steps after 3 warm-up steps."""
    from tuneloom.train.packing import packed_causal_lm_loss

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, fused=cuda())
    context: Callable[[], Any] = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if autocast and cuda() else contextlib.nullcontext
    )

    def step(batch: dict[str, torch.Tensor]) -> None:
        labels = batch["labels"]
        with context():
            outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        loss = packed_causal_lm_loss(outputs, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if item:
            loss.item()

    model.train()
    for batch in batches[:3]:
        step(batch)
    sync()
    started = time.perf_counter()
    for batch in batches[3 : 3 + steps]:
        step(batch)
    sync()
    return time.perf_counter() - started


def profile(model: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """GPU-busy share of 5 autocast steps' wall time, and the operators that take the CPU's time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda() else [])
    with torch_profile(activities=activities) as prof:
        wall = loop(model, batches[:8], 5, autocast=True, item=False)
    return profile_summary(prof.key_averages(), wall, 5)


def trainer_run(args: argparse.Namespace, work: Path) -> float:
    """tokens/s of tuneloom's `run_training` (Trainer) on the same kind of data, `args.steps` steps."""
    from tuneloom.train.recipe import TrainJob, run_training

    make_dataset(work / "trainer.txt", args.batch * args.steps, seed=0)
    settings = {
        **model_settings(args.model),
        "tokenizer_config": {"model_max_length": 1100},
        "trainer_config": {**trainer_config(args), "eval_fraction": 0.0},
    }
    job = TrainJob(
        data=work / "trainer.txt", output=work / "v", template=MODEL_TEMPLATES[args.model], settings=settings
    )
    outcome = run_training(job)
    return float(outcome.metrics["train_tokens_per_second"])


@contextlib.contextmanager
def measured(name: str) -> Iterator[None]:
    """Run one measurement; a failure is printed and recorded, and the next one still runs."""
    started = time.perf_counter()
    try:
        yield
    except Exception as err:  # each measurement stands alone
        RESULTS[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print(f"== {name}: FAILED {RESULTS[name]['error']}", flush=True)
    else:
        print(f"== {name}: {json.dumps(RESULTS.get(name))[:600]} ({time.perf_counter() - started:.0f}s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_TEMPLATES), default="llama-1.1b-random")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated: trainer,compile,profile,liger")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with measured("launch_us"):
            RESULTS["launch_us"] = launch_cost_us()
        model, batches, big_batches, (tokens, big_tokens) = build(args, work)
        RESULTS["tokens_per_step"] = tokens / args.steps
        for name, autocast, item in (
            ("bare", False, False),
            ("bare_autocast", True, False),
            ("bare_item", False, True),
        ):
            with measured(name):
                seconds = loop(model, batches, args.steps, autocast=autocast, item=item)
                RESULTS[name] = {"s_per_step": seconds / args.steps, "tokens_per_s": tokens / seconds}
        with measured("bare_autocast_batch_x4"):  # 4× the examples per step: larger matmuls, same op count
            seconds = loop(model, big_batches, args.steps // 4, autocast=True, item=False)
            RESULTS["bare_autocast_batch_x4"] = {
                "s_per_step": seconds / (args.steps // 4),
                "tokens_per_s": big_tokens / seconds,
            }
        if "profile" not in skip:
            with measured("profile"):
                RESULTS["profile"] = profile(model, batches)
        if "trainer" not in skip:
            with measured("trainer"):
                RESULTS["trainer"] = {"tokens_per_s": trainer_run(args, work)}
        if "compile" not in skip:
            with measured("compiled"):
                compiled = torch.compile(model, dynamic=True)
                started = time.perf_counter()
                loop(compiled, batches[:4], 1, autocast=False, item=False)
                first = time.perf_counter() - started
                seconds = loop(compiled, batches, args.steps, autocast=False, item=False)
                RESULTS["compiled"] = {
                    "compile_and_first_steps_s": first,
                    "s_per_step": seconds / args.steps,
                    "tokens_per_s": tokens / seconds,
                }
        if "liger" not in skip:  # last: it patches the model's modules in place
            with measured("liger"):
                from liger_kernel.transformers import apply_liger_kernel_to_llama

                base = model.get_base_model() if hasattr(model, "get_base_model") else model
                apply_liger_kernel_to_llama(model=base, fused_linear_cross_entropy=False, cross_entropy=False)
                seconds = loop(model, batches, args.steps, autocast=True, item=False)
                RESULTS["liger"] = {"s_per_step": seconds / args.steps, "tokens_per_s": tokens / seconds}
    rows = [[k, json.dumps(v)[:110]] for k, v in RESULTS.items() if k != "profile"]
    print_table(
        f"Training step anatomy, {args.model} LoRA, batch {args.batch} ({device_name()})", ["what", "figures"], rows
    )
    for op in RESULTS.get("profile", {}).get("top_cpu_ops_ms", []):
        print("   top CPU op:", op)
    out = args.out or RESULTS_DIR / f"profile-{args.model}.json"
    write_result(out, benchmark="train-profile", figures=RESULTS, device=device_name(),
                 libraries=("tuneloom", "torch", "transformers", "peft", "accelerate"))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
