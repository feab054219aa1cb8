"""Serving throughput: concurrent clients calling /predict on a real `tuneloom serve`, micro-batching on vs off.

One trained tiny-random version (trained here with the real CLI, registered in the server's
database), then the same load twice against fresh server processes on the same data dir: C clients,
each sending R /predict requests back to back (1 input, ≤ T new tokens, greedy). With
micro-batching the server merges concurrent requests for the same version and parameters into one
`generate()` call; the baseline (`TUNELOOM_MICRO_BATCH=0`) still runs one generation per model at a
time, one request each. Figures: predictions/s, p50/p99 latency per request, and the ratio.

    python -m bench.serve                   # 32 clients × 8 requests, 16 new tokens
    python -m bench.serve --requests 2      # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, print_table, write_result

APP, MODEL = "bench", "serve"
TRAIN_FAST = {"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 0.05}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tuneloom.cli", *args], capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise SystemExit(f"tuneloom {args[0]} failed:\n{result.stderr}")
    return result.stdout


def prompts(n: int) -> list[str]:
    from tuneloom.data import parse_file
    from tuneloom.demo import HELDOUT_FILE, TRAIN_FILE

    examples = parse_file(HELDOUT_FILE).examples + parse_file(TRAIN_FILE).examples
    return [examples[i % len(examples)].prompt for i in range(n)]


def register_trained_version(data_dir: Path) -> str:
    """App, model and a MODEL_TRAINED version in the data dir's database, trained with `tuneloom train`."""
    from tuneloom.data import parse_file
    from tuneloom.demo import TRAIN_FILE
    from tuneloom.store import apps, dataset_versions, datasets, jobs, registry
    from tuneloom.store.artifacts import Artifacts
    from tuneloom.store.db import open_database
    from tuneloom.store.models import TrainingStatus
    from tuneloom.templates import resolve_settings

    db = open_database(data_dir=data_dir)
    apps.create_app(db, APP, APP)
    datasets.create_dataset(db, APP, "demo")
    parsed = parse_file(TRAIN_FILE)
    datasets.add_upload(db, APP, "demo", parsed.report, parsed.examples)
    version = dataset_versions.create_version(db, APP, "demo")
    dataset_versions.build_version(db, Artifacts(data_dir), version.id)
    registry.create_model(db, APP, MODEL)
    settings = resolve_settings("tiny-random", {"trainer_config": TRAIN_FAST}).to_dict()
    job = jobs.enqueue(db, APP, MODEL, dataset_version_id=version.id, template="tiny-random", settings=settings)
    claimed = jobs.claim_next(db, "bench", lease_seconds=3600)
    assert claimed is not None and claimed.id == job.id
    out = data_dir / "model-versions" / job.id
    cli(
        "train",
        str(TRAIN_FILE),
        "--template",
        "tiny-random",
        "--output",
        str(out),
        "--trainer-config",
        json.dumps(TRAIN_FAST),
    )
    jobs.finish(db, job.id, TrainingStatus.MODEL_TRAINED, artifact_path=f"model-versions/{job.id}", worker_id="bench")
    db.dispose()
    return job.id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, micro_batch: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tuneloom.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    env = {**ENV, "TUNELOOM_MICRO_BATCH": "1" if micro_batch else "0"}
    proc = subprocess.Popen([*cmd, "--workers", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


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
    proc, url = start_server(data_dir, micro_batch)
    try:
        texts = prompts(args.clients * args.requests)
        asyncio.run(load(url, key, texts, args.clients, 1, args.max_tokens))  # warm-up: load, first shapes
        return asyncio.run(load(url, key, texts, args.clients, args.requests, args.max_tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="per client, back to back")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve.json")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-serve-") as tmp:
        data_dir = Path(tmp)
        register_trained_version(data_dir)
        key = cli("keys", "create", "--data-dir", str(data_dir), "--app", APP).strip().splitlines()[-1]
        batched = measure(data_dir, key, True, args)
        baseline = measure(data_dir, key, False, args)
    figures = {
        "model": "tiny-random (fine-tuned here)",
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
