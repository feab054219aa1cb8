"""Generation throughput: tuneloom's batched generation vs `model.generate` one request at a time.

Same model, same prompts, greedy decoding, the same max new tokens, one run after the other in one
process. Figures: output tokens/s for the one-at-a-time baseline and for tuneloom handling the same
32 requests together (length-sorted batches), and time to first token when streaming one request.
Serving through the HTTP server (concurrent clients, p50/p99) is `bench.serve`.

    python -m bench.generate                      # SmolLM2-135M-Instruct, 32 prompts, 32 new tokens
    python -m bench.generate --model tiny-random  # seconds, for a smoke check
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, print_table, write_result

TEMPLATES = MODEL_TEMPLATES


def prompts(n: int) -> list[str]:
    from tuneloom.data import parse_file
    from tuneloom.demo import HELDOUT_FILE, TRAIN_FILE

    examples = parse_file(HELDOUT_FILE).examples + parse_file(TRAIN_FILE).examples
    return [e.prompt for e in examples[:n]]


@torch.inference_mode()
def baseline(loaded: Any, texts: list[str], max_tokens: int) -> dict[str, float]:
    """What a notebook does: tokenize one prompt, `generate`, decode, next."""
    tokenizer, model = loaded.tokenizer, loaded.model
    new_tokens, started = 0, time.perf_counter()
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new_tokens += out.shape[1] - ids["input_ids"].shape[1]
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "new_tokens": new_tokens, "tokens_per_s": new_tokens / elapsed}


def batched(loaded: Any, texts: list[str], max_tokens: int) -> dict[str, float]:
    from tuneloom.generate.generator import generate
    from tuneloom.generate.params import InferenceParams

    started = time.perf_counter()
    results = generate(loaded, texts, InferenceParams(max_tokens=max_tokens))
    elapsed = time.perf_counter() - started
    new_tokens = sum(r.tokens for r in results)
    return {"seconds": elapsed, "new_tokens": new_tokens, "tokens_per_s": new_tokens / elapsed}


def time_to_first_token(loaded: Any, text: str, max_tokens: int) -> float:
    from tuneloom.generate.generator import stream
    from tuneloom.generate.params import InferenceParams

    started = time.perf_counter()
    pieces = stream(loaded, text, InferenceParams(max_tokens=max_tokens))
    next(pieces, None)
    first = time.perf_counter() - started
    pieces.close()
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(TEMPLATES), default="smollm2")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from tuneloom.generate.loading import load_for_inference

    loaded = load_for_inference(TEMPLATES[args.model])
    texts = prompts(args.requests)
    batched(loaded, texts[:2], 4)  # warm-up: first-call allocations out of both measurements
    base = baseline(loaded, texts, args.max_tokens)
    ours = batched(loaded, texts, args.max_tokens)
    ttft = time_to_first_token(loaded, texts[0], args.max_tokens)
    figures = {
        "model": TEMPLATES[args.model],
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "baseline_one_at_a_time": base,
        "tuneloom_batched": ours,
        "tuneloom_stream_ttft_s": ttft,
        "speedup_tokens_per_s": ours["tokens_per_s"] / base["tokens_per_s"],
    }
    print_table(
        f"Generation, {TEMPLATES[args.model]}, {args.requests} requests × ≤{args.max_tokens} new tokens, greedy (CPU)",
        ["run", "output tokens/s", "new tokens", "seconds"],
        [
            [
                "model.generate, one at a time",
                f"{base['tokens_per_s']:.1f}",
                base["new_tokens"],
                f"{base['seconds']:.1f}",
            ],
            ["tuneloom, batched", f"{ours['tokens_per_s']:.1f}", ours["new_tokens"], f"{ours['seconds']:.1f}"],
            ["tuneloom / baseline", f"{figures['speedup_tokens_per_s']:.2f}×", "", ""],
            ["tuneloom stream, time to first token", f"{ttft * 1000:.0f} ms", "", ""],
        ],
    )
    out = args.out or RESULTS_DIR / f"generate-{args.model}-cpu.json"
    write_result(
        out, benchmark="generate", figures=figures, device="cpu", libraries=("tuneloom", "torch", "transformers")
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
