"""Where the server's continuous batch spends its time under a closed loop of clients, without HTTP.

`bench.serve` measures the whole server; this drives `ContinuousBatch` in process the way the engine
does under that load: `--rows` rows decode together, and each row that finishes is replaced by a new
request (all joining at the next step, prefilled together), until `--requests` have finished. Timed:
the prefills of arriving rows (`add`, packed, after any prompt prefix the model has seen:
`TUNELOOM_PREFIX_CACHE=0` to compare without), the decode steps (`step`), and inside them the
model's forwards and the cache bookkeeping (`_merge` when rows join, `drop_finished` when they leave). Figures per
prompt token (prefill) and per generated token (decode) say which side to work on.

    tuneloom train <demo train file> --template smollm2-135m-instruct-lora --output /tmp/sv \\
        --trainer-config '{"max_steps": 2, "eval_fraction": 0}'
    python -m bench.serve_breakdown --version /tmp/sv
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, print_table, write_result
from bench.serve import prompts


def timed(counter: Counter[str], name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            counter[name] += time.perf_counter() - started

    return wrapper


def closed_loop(version: Path, rows: int, requests: int, max_tokens: int) -> dict[str, Any]:
    from tuneloom.generate.continuous import ContinuousBatch
    from tuneloom.generate.generator import count_prompt_tokens
    from tuneloom.generate.loading import load_for_inference
    from tuneloom.generate.params import InferenceParams
    from tuneloom.generate.rows import Row

    loaded = load_for_inference(version)
    params = InferenceParams(max_tokens=max_tokens, temperature=0)
    texts = prompts(rows + requests)
    seconds: Counter[str] = Counter()
    for name in ("_merge", "drop_finished"):
        setattr(ContinuousBatch, name, timed(seconds, name, getattr(ContinuousBatch, name)))
    loaded.model.forward = timed(seconds, "forward", loaded.model.forward)
    batch, made, prompt_tokens = ContinuousBatch(loaded), 0, 0

    def arriving(n: int) -> list[Row]:
        nonlocal made, prompt_tokens
        new = [Row.create(loaded, texts[(made + k) % len(texts)], params) for k in range(n)]
        made += n
        prompt_tokens += sum(count_prompt_tokens(loaded, row.prompt) for row in new)
        return new

    batch.add(arriving(rows))
    seconds.clear()
    prompt_tokens, done, generated, joins = 0, 0, 0, 0
    started = time.perf_counter()
    while done < requests:
        finished = [row for row in batch.rows if row.finished]
        if finished:
            done += len(finished)
            generated += sum(len(row.ids) for row in finished)
            add = timed(seconds, "add", batch.add)
            add(arriving(len(finished)))
            joins += 1
        else:
            timed(seconds, "step", batch.step)()
    elapsed = time.perf_counter() - started
    return {
        "requests": done,
        "requests_per_s": done / elapsed,
        "joins": joins,
        "prefill_s": seconds["add"],
        "prefill_prompt_tokens": prompt_tokens,
        "prefill_ms_per_prompt_token": 1000 * seconds["add"] / max(prompt_tokens, 1),
        "decode_s": seconds["step"],
        "generated_tokens": generated,
        "decode_ms_per_token": 1000 * seconds["step"] / max(generated, 1),
        "forward_s": seconds["forward"],
        "merge_s": seconds["_merge"],
        "drop_s": seconds["drop_finished"],
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", type=Path, required=True, help="a model-version directory")
    parser.add_argument("--rows", type=int, default=32, help="clients: rows decoding together")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve-breakdown.json")
    args = parser.parse_args()
    figures = closed_loop(args.version, args.rows, args.requests, args.max_tokens)
    print_table(
        f"continuous batch, {args.rows} rows, closed loop, ≤{args.max_tokens} new tokens",
        ["part", "seconds", "per token"],
        [
            [
                "prefill of arriving rows",
                f"{figures['prefill_s']:.2f}",
                f"{figures['prefill_ms_per_prompt_token']:.2f} ms",
            ],
            ["decode steps", f"{figures['decode_s']:.2f}", f"{figures['decode_ms_per_token']:.2f} ms"],
            ["  of which forwards (both)", f"{figures['forward_s']:.2f}", ""],
            ["  cache merge + drop", f"{figures['merge_s'] + figures['drop_s']:.2f}", ""],
            ["requests/s", f"{figures['requests_per_s']:.2f}", ""],
        ],
    )
    write_result(args.out, benchmark="serve-breakdown", figures={**figures, "version": str(args.version)})


if __name__ == "__main__":
    main()
