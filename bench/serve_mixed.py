"""Serving under mixed load: N clients streaming (/generate SSE) while M clients predict (/predict).

Streams used to be served one at a time and outside the micro-batches, so predictions waited
behind them; this measures what a user sees when both kinds of clients share one model version.
One tiny-random version is fine-tuned through the API (as in `bench.serve`), then a fresh server
(no training worker) takes the load for a fixed time: every client sends requests back to back
(greedy, 1 input each) until the deadline; a request in flight then is finished and counted.

Figures: predictions/s, streams/s, stream tokens/s (the `done` event's count) and all output
tokens/s; p50/p99 of the time to first token (streams: the first text piece received; a
prediction's first token arrives with its whole answer, so its latency is its TTFT) and of latency.

    python -m bench.serve_mixed                                   # 8 streams + 8 predicting, 20 s
    python -m bench.serve_mixed --streams 4 --predicts 4 --seconds 5 --out /tmp/mixed.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, print_table, write_result
from bench.serve import APP, MODEL, prompts, trained_version
from bench.server_process import start_server, stop

SERVER_ARGS = ("--workers", "0", "--max-concurrent-generations-per-key", "256")


@dataclass
class Samples:
    """What one kind of request measured: latencies, first-token times and output tokens."""

    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    failures: int = 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def one_prediction(http: httpx.AsyncClient, text: str, max_tokens: int, into: Samples) -> None:
    body = {"inputs": [text], "inference_params": {"max_tokens": max_tokens, "temperature": 0}}
    started = time.perf_counter()
    answer = await http.post(f"/api/apps/{APP}/models/{MODEL}/predict", json=body)
    if answer.status_code != 200:
        into.failures += 1
        return
    elapsed = time.perf_counter() - started
    into.latency.append(elapsed)
    into.ttft.append(elapsed)
    into.tokens += sum(int(o["tokens"]) for o in answer.json()["outputs"])


async def one_stream(http: httpx.AsyncClient, text: str, max_tokens: int, into: Samples) -> None:
    body = {"input": text, "inference_params": {"max_tokens": max_tokens, "temperature": 0}}
    started = time.perf_counter()
    first: float | None = None
    done: dict[str, Any] | None = None
    async with http.stream("POST", f"/api/apps/{APP}/models/{MODEL}/generate", json=body) as answer:
        if answer.status_code != 200:
            into.failures += 1
            return
        event = "message"
        async for line in answer.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                if event == "message" and first is None:
                    first = time.perf_counter() - started
                elif event == "done":
                    done = json.loads(line[len("data: ") :])
                elif event == "error":
                    into.failures += 1
                    return
                event = "message"
    if done is None:
        into.failures += 1
        return
    into.latency.append(time.perf_counter() - started)
    into.ttft.append(first if first is not None else time.perf_counter() - started)  # an empty answer
    into.tokens += int(done["tokens"])


async def run_load(url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    texts = prompts(64)
    clients = args.streams + args.predicts
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Key {key}"}
    predicted, streamed = Samples(), Samples()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as http:
        await one_stream(http, texts[0], args.stream_tokens, Samples())  # warm-up: load, first shapes
        await one_prediction(http, texts[1], args.predict_tokens, Samples())
        deadline = time.perf_counter() + args.seconds

        async def client(index: int, streaming: bool) -> None:
            n = 0
            while time.perf_counter() < deadline:
                text = texts[(index * 7 + n) % len(texts)]
                n += 1
                if streaming:
                    await one_stream(http, text, args.stream_tokens, streamed)
                else:
                    await one_prediction(http, text, args.predict_tokens, predicted)

        started = time.perf_counter()
        roles = [True] * args.streams + [False] * args.predicts
        await asyncio.gather(*(client(i, streaming) for i, streaming in enumerate(roles)))
        elapsed = time.perf_counter() - started
    return summary(predicted, streamed, elapsed)


def summary(predicted: Samples, streamed: Samples, elapsed: float) -> dict[str, Any]:
    def kind(s: Samples) -> dict[str, Any]:
        ms = {
            f"{name}_{tag}_ms": 1000 * percentile(values, q)
            for name, values in (("ttft", s.ttft), ("latency", s.latency))
            for tag, q in (("p50", 0.5), ("p99", 0.99))
        }
        return {"requests": len(s.latency), "failures": s.failures, "tokens": s.tokens, **ms}

    return {
        "elapsed_s": elapsed,
        "predictions_per_s": len(predicted.latency) / elapsed,
        "streams_per_s": len(streamed.latency) / elapsed,
        "stream_tokens_per_s": streamed.tokens / elapsed,
        "output_tokens_per_s": (streamed.tokens + predicted.tokens) / elapsed,
        "predict": kind(predicted),
        "stream": kind(streamed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8, help="clients streaming")
    parser.add_argument("--predicts", type=int, default=8, help="clients predicting")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--stream-tokens", type=int, default=64, help="max_tokens of each stream")
    parser.add_argument("--predict-tokens", type=int, default=16, help="max_tokens of each prediction")
    parser.add_argument("--label", default="", help="what was measured (e.g. the commit), kept in the JSON")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve-mixed.json")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-mixed-") as tmp:
        data_dir = Path(tmp)
        key = trained_version(data_dir)
        proc, url = start_server(data_dir, *SERVER_ARGS)
        try:
            figures = asyncio.run(run_load(url, key, args))
        finally:
            stop(proc)
    settings = {k: getattr(args, k) for k in ("streams", "predicts", "seconds", "stream_tokens", "predict_tokens")}
    load = {"before": load_before, "after": os.getloadavg()[0]}
    figures = {
        "model": "tiny-random (fine-tuned here)",
        "label": args.label,
        **settings,
        **figures,
        "load_average_1m": load,
    }
    report(figures)
    write_result(
        args.out, benchmark="serve_mixed", figures=figures, device="cpu", libraries=("tuneloom", "torch", "fastapi")
    )
    print(f"wrote {args.out}")


def report(f: dict[str, Any]) -> None:
    title = (
        f"{f['streams']} streaming (≤{f['stream_tokens']} tokens) + {f['predicts']} predicting "
        f"(≤{f['predict_tokens']}) clients, {f['seconds']:.0f} s, greedy (CPU) {f['label']}"
    )
    rows = [
        [
            name,
            str(k["requests"]),
            f"{k['requests'] / f['elapsed_s']:.1f}",
            f"{k['tokens'] / f['elapsed_s']:.0f}",
            f"{k['ttft_p50_ms']:.0f} / {k['ttft_p99_ms']:.0f}",
            f"{k['latency_p50_ms']:.0f} / {k['latency_p99_ms']:.0f}",
            str(k["failures"]),
        ]
        for name, k in (("predict", f["predict"]), ("stream", f["stream"]))
    ]
    columns = ["kind", "requests", "per s", "tokens/s", "TTFT p50/p99 ms", "latency p50/p99 ms", "failures"]
    print_table(title, columns, rows)


if __name__ == "__main__":
    main()
