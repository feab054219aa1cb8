"""A real `tuneloom serve` for the platform benchmarks, and the API calls that give it a trained model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tuneloom.cli", *args], capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise SystemExit(f"tuneloom {args[0]} failed:\n{result.stderr}")
    return result.stdout


def create_key(data_dir: Path, *extra: str) -> str:
    return cli("keys", "create", "--data-dir", str(data_dir), *extra).strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    cmd = [sys.executable, "-m", "tuneloom.cli", "serve", "--data-dir", str(data_dir), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=120)


def train_through_api(
    url: str, key: str, data: Path, template: str, settings: dict[str, Any], *, app_id: str, model_id: str
) -> tuple[str, float, dict[str, Any]]:
    """Upload `data`, version it, create the model and train it with the SDK, as a user would.

    Returns the model-version id, the seconds from the `train` call to MODEL_TRAINED, and the
    version as the API reports it.
    """
    from tuneloom import Client

    client = Client(url, api_key=key)
    app = client.create_app(app_id)
    dataset = app.create_dataset("data")
    dataset.upload_file(data)
    version = dataset.create_version()
    model = app.create_model(model_id)
    started = time.perf_counter()
    run = model.train(dataset_version=version.id, template=template, **settings)
    status = model.wait(run.id, timeout=3600, poll=0.25)
    elapsed = time.perf_counter() - started
    if status.name != "MODEL_TRAINED":
        raise SystemExit(f"training through the server ended {status.name}: {status.message}")
    answer = httpx.get(
        f"{url}/api/apps/{app_id}/models/{model_id}/versions/{run.id}", headers={"Authorization": f"Key {key}"}
    )
    return run.id, elapsed, dict(answer.json())
