"""Serving throughput: concurrent clients calling /predict on a real `tuneloom serve`, micro-batching on vs off.

One tiny-random version fine-tuned through the API (upload, version, train, by the server's own
worker), then the same load twice against fresh server processes on the same data dir: C clients,
each sending R /predict requests back to back (1 input, ≤ T new tokens, greedy). With
micro-batching the server merges concurrent requests for the same version and parameters into one
`generate()` call; the baseline (`TUNELOOM_MICRO_BATCH=0`) still runs one generation per model at a
time, one request each, on the weights as stored (`TUNELOOM_INPUT_MAJOR_WEIGHTS=0`: on a CPU tuneloom
otherwise lays linear weights out transposed, `generate/loading._input_major_linears`). Figures:
predictions/s, p50/p99 latency per request, and the ratio.

    python -m bench.serve                   # 32 clients × 8 requests, 16 new tokens
    python -m bench.serve --requests 2      # a quick smoke run
    python -m bench.serve --template smollm2-135m-instruct-lora --out bench/results/serve-smollm2.json
                                            # the issue's model: SmolLM2-135M-Instruct, LoRA (a few steps)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, print_table, write_result
from bench.server_process import create_key, start_server, stop, train_through_api
from tuneloom.generate.loading import INPUT_MAJOR_ENV

APP, MODEL = "bench", "serve"
# One key for all clients: lift the per-key cap (default 4), or most requests would be 429s.
NO_KEY_CAP = ("--max-concurrent-generations-per-key", "256")
TRAIN_FAST = {"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 0.05}
# What a version is trained with, per template: enough to be a fine-tuned LoRA version; speed does not depend on it.
TRAINING = {
    "tiny-random": TRAIN_FAST,
    "smollm2-135m-instruct-lora": {"max_steps": 4, "per_device_train_batch_size": 4, "eval_fraction": 0.0},
}


def prompts(n: int) -> list[str]:
    from tuneloom.data import parse_file
    from tuneloom.demo import HELDOUT_FILE, TRAIN_FILE

    examples = parse_file(HELDOUT_FILE).examples + parse_file(TRAIN_FILE).examples
    return [examples[i % len(examples)].prompt for i in range(n)]


def trained_version(data_dir: Path, template: str = "tiny-random", dtype: str | None = None) -> str:
    """A version of `template` fine-tuned through the API by the server's own worker (its weights in `dtype`, as
    it is then served; default: the template's); returns an app key."""
    from tuneloom.demo import TRAIN_FILE

    server, url = start_server(data_dir)
    try:
        admin = create_key(data_dir)
        settings: dict[str, Any] = {"trainer_config": TRAINING[template]}
        if dtype:
            settings["model_config"] = {"torch_dtype": dtype}
        train_through_api(url, admin, TRAIN_FILE, template, settings, app_id=APP, model_id=MODEL)
    finally:
        stop(server)
    return create_key(data_dir, "--app", APP)


async def load(url: str, key: str, texts: list[str], clients: int, per_client: int, max_tokens: int) -> dict[str, Any]:
    """`clients` concurrent loops of `per_client` back-to-back requests; latency of each request."""
    headers = {"Authorization": f"Key {key}"}
    params = {"max_tokens": max_tokens, "temperature": 0}
    endpoint = f"{url}/api/apps/{APP}/models/{MODEL}/predict"
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, timeout=600, limits=limits) as http:

        async def client(index: int) -> None:
            for i in range(per_client):
                text = texts[(index * per_client + i) % len(texts)]
                started = time.perf_counter()
                answer = await http.post(endpoint, json={"inputs": [text], "inference_params": params})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "predictions_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
    }


def measure(data_dir: Path, key: str, micro_batch: bool, args: argparse.Namespace) -> dict[str, Any]:
    env = {"TUNELOOM_MICRO_BATCH": "1" if micro_batch else "0", INPUT_MAJOR_ENV: "1" if micro_batch else "0"}
    proc, url = start_server(data_dir, "--workers", "0", *NO_KEY_CAP, env=env)
    try:
        return warm_and_load(url, key, args)
    finally:
        stop(proc)


def warm_and_load(url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    """One request per client first (the version loads, the first shapes run), then the timed load."""
    texts = prompts(args.clients * args.requests)
    asyncio.run(load(url, key, texts, args.clients, 1, args.max_tokens))
    return asyncio.run(load(url, key, texts, args.clients, args.requests, args.max_tokens))


def load_arguments(doc: str | None, out: Path) -> argparse.Namespace:
    """The client load's command line, shared by the serving benchmarks."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="per client, back to back")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--template", choices=sorted(TRAINING), default="tiny-random", help="the version's template")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default=None, help="the version's weights (default: the template's)"
    )
    parser.add_argument("--out", type=Path, default=out)
    return parser.parse_args()


def main() -> None:
    args = load_arguments(__doc__, RESULTS_DIR / "serve.json")

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-serve-") as tmp:
        data_dir = Path(tmp)
        key = trained_version(data_dir, args.template, args.dtype)
        batched = measure(data_dir, key, True, args)
        baseline = measure(data_dir, key, False, args)
    figures = {
        "model": f"{args.template} (fine-tuned here)",
        "dtype": args.dtype or "the template's",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "micro_batching": batched,
        "baseline_one_request_per_generate": baseline,
        "speedup_predictions_per_s": batched["predictions_per_s"] / baseline["predictions_per_s"],
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
    }
    title = f"/predict, {args.clients} clients × {args.requests} requests, ≤{args.max_tokens} new tokens, greedy (CPU)"
    rows = [
        [name, f"{r['predictions_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['seconds']:.1f}"]
        for name, r in (("one request per generate()", baseline), ("micro-batching", batched))
    ]
    rows.append(["micro-batching / baseline", f"{figures['speedup_predictions_per_s']:.2f}×", "", "", ""])
    print_table(title, ["server", "predictions/s", "p50 ms", "p99 ms", "seconds"], rows)
    write_result(args.out, benchmark="serve", figures=figures, device="cpu", libraries=("tuneloom", "torch", "fastapi"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
