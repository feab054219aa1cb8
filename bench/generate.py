"""Generation throughput: tuneloom's batched generation vs `model.generate` one request at a time.

Same model, same prompts, greedy decoding, the same max new tokens, one run after the other in one
process. Figures: output tokens/s for the one-at-a-time baseline and for tuneloom handling the same
32 requests together (its own loop: up to 32 rows, refilled as they finish, packed prefill, a shared
prompt start prefilled once), and time to first token when streaming one request.
Serving through the HTTP server (concurrent clients, p50/p99) is `bench.serve`.

    python -m bench.generate                      # SmolLM2-135M-Instruct, 32 prompts, 32 new tokens
    python -m bench.generate --model tiny-random  # seconds, for a smoke check
    python -m bench.generate --model llama-1.1b-random --one-at-a-time 8 --variants baseline,single,batched,static

Variants (`--variants`, comma-separated; default all but `static`):
- `baseline`: `model.generate`, one request at a time, over the first `--one-at-a-time` requests —
  its tokens/s is both the batch-1 `generate` figure and the one-at-a-time rate;
- `single`: tuneloom's `generate` path with one request per call (batch 1), same requests;
- `batched`: tuneloom's `generate` with all `--requests` at once;
- `ttft`: tuneloom's stream, time to the first piece of text;
- `static`: `model.generate` at batch 1 with a static KV cache; on CUDA transformers then compiles
  the decode step (`torch.compile`, mode "reduce-overhead": CUDA graphs). Warmed up on the longest
  prompt first, so the timed calls reuse one compiled graph. On a CPU it runs eagerly (no compile);
- `compiled`: tuneloom's `generate` one request per call with `--compile` (generate/compiled.py: the
  static cache rounded up to a 1,024-position bucket, so one graph serves every request), warmed up
  the same way. Only on CUDA (elsewhere `--compile` does nothing).
On a known GPU the bandwidth floor is reported too: bytes of weights / HBM bandwidth = the most
batch-1 tokens/s any decoder could reach (KV-cache reads not counted).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

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
VARIANTS = ("baseline", "single", "batched", "ttft", "static", "compiled")
LABELS = {
    "baseline": "model.generate, one at a time (batch 1)",
    "single": "tuneloom generate, one request per call",
    "batched": "tuneloom generate, all requests batched",
    "static": "model.generate batch 1, static cache + compile",
    "compiled": "tuneloom generate --compile, one request per call",
}


def prompts(n: int) -> list[str]:
    from tuneloom.data import parse_file
    from tuneloom.demo import HELDOUT_FILE, TRAIN_FILE

    examples = parse_file(HELDOUT_FILE).examples + parse_file(TRAIN_FILE).examples
    return [e.prompt for e in examples[:n]]


def timed(run: Callable[[], int]) -> dict[str, float]:
    """Seconds (device work included) and new tokens of `run`, which returns its new-token count."""
    sync()
    started = time.perf_counter()
    new_tokens = run()
    sync()
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "new_tokens": new_tokens, "tokens_per_s": new_tokens / elapsed}


def sync() -> None:
    if cuda():
        torch.cuda.synchronize()


@torch.inference_mode()
def one_at_a_time(loaded: Any, texts: list[str], max_tokens: int, **extra: Any) -> int:
    """What a notebook does: tokenize one prompt, `generate`, next. Returns the new tokens."""
    tokenizer, model = loaded.tokenizer, loaded.model
    new_tokens = 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").to(model.device)
        out = model.generate(
            **ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, **extra
        )
        new_tokens += out.shape[1] - ids["input_ids"].shape[1]
    return int(new_tokens)


def tuneloom_generate(loaded: Any, texts: list[str], max_tokens: int) -> int:
    from tuneloom.generate.generator import generate
    from tuneloom.generate.params import InferenceParams

    return sum(r.tokens for r in generate(loaded, texts, InferenceParams(max_tokens=max_tokens)))


def time_to_first_token(loaded: Any, text: str, max_tokens: int) -> float:
    from tuneloom.generate.generator import stream
    from tuneloom.generate.params import InferenceParams

    started = time.perf_counter()
    pieces = stream(loaded, text, InferenceParams(max_tokens=max_tokens))
    next(pieces, None)
    first = time.perf_counter() - started
    pieces.close()
    return first


def after_warm_up(decode: Callable[[list[str]], int], texts: list[str]) -> dict[str, float]:
    """Time `decode` over `texts` after three calls on the longest: compile, record the CUDA graphs, one
    clean replay, so that the timed calls reuse one compiled graph."""
    longest = max(texts, key=len)
    for _ in range(3):
        decode([longest])
    return timed(lambda: decode(texts))


def static_decode(loaded: Any, texts: list[str], max_tokens: int) -> dict[str, float]:
    """Batch-1 `generate` with a static cache (compiled decode step on CUDA)."""
    return after_warm_up(lambda ts: one_at_a_time(loaded, ts, max_tokens, cache_implementation="static"), texts)


def compiled_decode(loaded: Any, texts: list[str], max_tokens: int) -> dict[str, Any] | None:
    """tuneloom's one-request path with the compiled decode step (None where there is no GPU to compile for),
    and where one request's time goes (`decode_breakdown`; `cudagraph_skips` above 0: the step compiled
    by this variant runs without CUDA graphs, as inductor's plain kernels)."""
    from torch._dynamo.utils import counters

    from tuneloom.generate.compiled import compile_decode

    if not compile_decode(loaded):
        return None
    skips = counters["inductor"]["cudagraph_skips"]
    try:
        figures = after_warm_up(lambda ts: sum(tuneloom_generate(loaded, [t], max_tokens) for t in ts), texts)
        breakdown = decode_breakdown(loaded, max(texts, key=len), max_tokens)
        breakdown["cudagraph_skips"] = counters["inductor"]["cudagraph_skips"] - skips
        return {**figures, "breakdown": breakdown}
    finally:
        loaded.compiled_decode = False


def decode_breakdown(loaded: Any, text: str, max_tokens: int) -> dict[str, float]:
    """Where one compiled request's time goes: the prefill (to the first token), then per token the wall
    time against the device time of the compiled step (CUDA events around each replay; on a CPU, where
    a step is done when it returns, its wall time). A device time near the wall time means the kernels
    bound the speed; far below it, the host does (guards, graph bookkeeping, the token choice)."""
    from tuneloom.generate.compiled import StaticDecoder
    from tuneloom.generate.continuous import run_alone
    from tuneloom.generate.params import InferenceParams
    from tuneloom.generate.rows import Row

    step_ms: list[Callable[[], float]] = []
    real_step = StaticDecoder.step

    def timed_step(decoder: StaticDecoder, token: torch.Tensor) -> torch.Tensor:
        if token.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            logits = real_step(decoder, token)
            end.record()
            step_ms.append(lambda: start.elapsed_time(end))
            return logits
        started = time.perf_counter()
        logits = real_step(decoder, token)
        elapsed = (time.perf_counter() - started) * 1000
        step_ms.append(lambda: elapsed)
        return logits

    row = Row.create(loaded, text, InferenceParams(max_tokens=max_tokens))
    StaticDecoder.step = timed_step  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        pauses = run_alone(loaded, [row])
        next(pauses)
        first = time.perf_counter() - started
        for _ in pauses:
            pass
        sync()
        rest = time.perf_counter() - started - first
    finally:
        StaticDecoder.step = real_step  # type: ignore[method-assign]
    return {
        "prefill_ms": first * 1000,
        "wall_ms_per_token": rest * 1000 / max(len(row.ids) - 1, 1),
        "device_ms_per_step": sum(ms() for ms in step_ms) / max(len(step_ms), 1),
        "steps": len(step_ms),
        "tokens": len(row.ids),
    }


def run_variants(loaded: Any, plain: Any, args: argparse.Namespace, variants: list[str]) -> dict[str, Any]:
    """`plain`: the model as a notebook loads it, for the `model.generate` variants."""
    texts = prompts(args.requests)
    single = texts[: args.one_at_a_time]
    tuneloom_generate(loaded, texts[:2], 4)  # warm-up: first-call allocations out of every measurement
    one_at_a_time(plain, texts[:1], 4)
    figures: dict[str, Any] = {}
    if "baseline" in variants:
        figures["baseline"] = timed(lambda: one_at_a_time(plain, single, args.max_tokens))
    if "single" in variants:
        figures["single"] = timed(lambda: sum(tuneloom_generate(loaded, [t], args.max_tokens) for t in single))
    if "batched" in variants:
        figures["batched"] = timed(lambda: tuneloom_generate(loaded, texts, args.max_tokens))
    if "ttft" in variants:
        figures["ttft_s"] = time_to_first_token(loaded, texts[0], args.max_tokens)
    if "static" in variants:
        figures["static"] = static_decode(plain, single, args.max_tokens)
    if "compiled" in variants and (compiled := compiled_decode(loaded, single, args.max_tokens)) is not None:
        figures["compiled"] = compiled
    return figures


def bandwidth_floor(model: Any) -> dict[str, Any]:
    """The weights' bytes and, on a known card, the batch-1 tokens/s that reading them once per token allows."""
    from bench.random_models import card_for, weight_bytes

    size = weight_bytes(model)
    card = card_for(device_name()) if cuda() else None
    floor = card.memory_bytes_per_s / size if card else None
    return {"weight_bytes": size, "card": card.name if card else None, "floor_tokens_per_s": floor}


def table_rows(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    base = figures.get("baseline")
    floor = figures["bandwidth"]["floor_tokens_per_s"]
    for key, label in LABELS.items():
        run = figures.get(key)
        if run is None:
            continue
        versus = f"{run['tokens_per_s'] / base['tokens_per_s']:.2f}×" if base else ""
        of_floor = f"{run['tokens_per_s'] / floor:.1%}" if floor and key != "batched" else ""
        rows.append(
            [label, f"{run['tokens_per_s']:.1f}", str(run["new_tokens"]), f"{run['seconds']:.1f}", versus, of_floor]
        )
    if floor:
        rows.append(["bandwidth floor (weights / HBM bandwidth)", f"{floor:.0f}", "", "", "", "100%"])
    if breakdown := figures.get("compiled", {}).get("breakdown"):
        rows.append([describe_breakdown(breakdown), "", "", "", "", ""])
    if "ttft_s" in figures:
        rows.append(["tuneloom stream, time to first token", f"{figures['ttft_s'] * 1000:.0f} ms", "", "", "", ""])
    return rows


def describe_breakdown(b: dict[str, float]) -> str:
    return (
        f"  compiled, one request: prefill {b['prefill_ms']:.1f} ms; per token {b['wall_ms_per_token']:.2f} ms wall,"
        f" {b['device_ms_per_step']:.2f} ms device; cudagraph skips {b['cudagraph_skips']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(TEMPLATES), default="smollm2")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--one-at-a-time", type=int, default=None, help="requests for the batch-1 runs (all)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--variants", default="baseline,single,batched,ttft")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.one_at_a_time = args.one_at_a_time or args.requests
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    from tuneloom.generate.loading import load_for_inference

    loaded = load_for_inference(TEMPLATES[args.model], model_settings(args.model))
    # On a CPU tuneloom lays its linear weights out transposed (generate/loading._input_major_linears);
    # the baseline runs on them as stored, as a notebook's model.generate does.
    plain = loaded if cuda() else load_for_inference(TEMPLATES[args.model], model_settings(args.model), as_stored=True)
    figures: dict[str, Any] = {
        "model": args.model,
        "template": TEMPLATES[args.model],
        "dtype": str(next(loaded.model.parameters()).dtype),
        "requests": args.requests,
        "one_at_a_time_requests": args.one_at_a_time,
        "max_tokens": args.max_tokens,
        **run_variants(loaded, plain, args, variants),
        "bandwidth": bandwidth_floor(loaded.model),
    }
    if "baseline" in figures and "batched" in figures:
        figures["speedup_tokens_per_s"] = figures["batched"]["tokens_per_s"] / figures["baseline"]["tokens_per_s"]
    print_table(
        f"Generation, {args.model}, {args.requests} requests × ≤{args.max_tokens} new tokens, greedy ({device_name()})",
        ["run", "output tokens/s", "new tokens", "seconds", "× model.generate", "of floor"],
        table_rows(figures),
    )
    suffix = "" if not set(variants) <= {"static", "compiled"} else "-static"
    out = args.out or RESULTS_DIR / f"generate-{args.model}{suffix}-{device_tag()}.json"
    write_result(
        out,
        benchmark="generate",
        figures=figures,
        device=device_name(),
        libraries=("tuneloom", "torch", "transformers"),
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
