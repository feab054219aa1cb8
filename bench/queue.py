"""Time from a `train` call to MODEL_TRAINED through the platform, against the engine called directly.

The demo dataset (300 support tickets) and the demo's settings on SmolLM2-135M-Instruct, twice in
one run: once through a real `tuneloom serve` (upload → dataset version → model → `train` → poll
until MODEL_TRAINED, with the Python SDK), once with `run_training` in this process on the same
snapshot and settings. The difference is what the platform costs: queue claim, the training child
process starting (imports, model load), telemetry writes, the final status.

    python -m bench.queue                  # the demo: SmolLM2, 2 epochs (minutes on 2 CPU cores)
    python -m bench.queue --model tiny-random
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, print_table, write_result

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def through_server(data_dir: Path, template: str, settings: dict[str, Any]) -> tuple[float, dict[str, Any], Path]:
    """Seconds from `model.train(...)` returning to the SDK seeing MODEL_TRAINED, and the version's metrics."""
    from tuneloom import Client
    from tuneloom.demo import TRAIN_FILE

    key = _cli("keys", "create", "--data-dir", str(data_dir)).strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tuneloom.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}", api_key=key)
        _wait_up(client)
        app = client.create_app("bench")
        dataset = app.create_dataset("tickets")
        dataset.upload_file(TRAIN_FILE)
        version = dataset.create_version()
        model = app.create_model("router")
        started = time.perf_counter()
        run = model.train(dataset_version=version.id, template=template, **settings)
        status = model.wait(run.id, timeout=3600, poll=0.25)
        elapsed = time.perf_counter() - started
        if status.name != "MODEL_TRAINED":
            raise SystemExit(f"training through the server ended {status.name}: {status.message}")
        answer = httpx.get(f"{client.base_url}{model.path}/versions/{run.id}", headers={"Authorization": f"Key {key}"})
        trained = answer.json()
        snapshot = data_dir / "dataset-versions" / f"{version.id}.jsonl"
        return elapsed, dict(trained["metrics"] or {}), snapshot
    finally:
        server.terminate()
        server.wait(timeout=120)


def in_process(snapshot: Path, output: Path, template: str, settings: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    from tuneloom.train.recipe import TrainJob, run_training

    started = time.perf_counter()
    outcome = run_training(TrainJob(data=snapshot, output=output, template=template, settings=settings))
    return time.perf_counter() - started, outcome.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_TEMPLATES), default="smollm2")
    args = parser.parse_args()
    from tuneloom.demo import SETTINGS

    template = MODEL_TEMPLATES[args.model]
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-queue-") as tmp:
        served_s, served_metrics, snapshot = through_server(Path(tmp) / "data", template, SETTINGS)
        direct_s, direct_metrics = in_process(snapshot, Path(tmp) / "direct", template, SETTINGS)
    rows = [
        ["engine, in process (baseline)", f"{direct_s:.1f}", f"{direct_metrics['train_runtime_s']:.1f}", "1.00"],
        [
            "platform: train call → MODEL_TRAINED",
            f"{served_s:.1f}",
            f"{served_metrics['train_runtime_s']:.1f}",
            f"{served_s / direct_s:.2f}",
        ],
    ]
    print_table(f"train → MODEL_TRAINED, demo dataset, {template}", ["path", "wall s", "Trainer s", "× baseline"], rows)
    write_result(
        RESULTS_DIR / f"queue-{args.model}.json",
        benchmark="queue",
        figures={
            "model": args.model,
            "template": template,
            "settings": SETTINGS,
            "train_call_to_trained_s": round(served_s, 2),
            "in_process_s": round(direct_s, 2),
            "overhead_s": round(served_s - direct_s, 2),
            "ratio": round(served_s / direct_s, 3),
            "server_eval_loss": served_metrics.get("eval_loss"),
            "in_process_eval_loss": direct_metrics.get("eval_loss"),
        },
        libraries=("tuneloom", "torch", "transformers", "peft", "fastapi", "sqlalchemy"),
    )


def _cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tuneloom.cli", *args], capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise SystemExit(f"tuneloom {args[0]} failed:\n{result.stderr}")
    return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(client: Any) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            client.health()
            return
        except Exception:
            time.sleep(0.3)
    raise SystemExit("the server did not start")


if __name__ == "__main__":
    main()
