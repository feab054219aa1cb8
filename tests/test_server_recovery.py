"""The queue survives what happens to real servers: a worker killed with SIGKILL, a server restarted mid-queue.

Each test runs its own `tuneloom serve` / `tuneloom worker` processes on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import DATABASE_URL_FILE, _free_port, _wait_until_up, api_key, sentiment_lines
from tests.test_store_support import BACKENDS, POSTGRES_URL, fresh_database


class Processes:
    """Start `tuneloom` servers and workers on one data dir and database; stop them all at the end."""

    def __init__(self, data_dir: Path, backend: str):
        self.data_dir = data_dir
        self.extra: list[str] = []
        if backend == "postgresql":
            fresh_database("postgresql", data_dir, migrate=False).dispose()
            assert POSTGRES_URL
            (data_dir / DATABASE_URL_FILE).write_text(POSTGRES_URL, encoding="utf-8")
            self.extra = ["--database-url", POSTGRES_URL]
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, command: str, *args: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "tuneloom.cli", command, "--data-dir", str(self.data_dir), *self.extra, *args]
        log = (self.data_dir.parent / f"{self.data_dir.name}-{command}-{len(self.running)}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(proc)
        return proc

    def serve(self, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        port = _free_port()
        proc = self.start("serve", "--port", str(port), "--checkpoint-every", "1", *args)
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, proc, self.data_dir.parent / f"{self.data_dir.name}-serve-{len(self.running) - 1}.log")
        return proc, url

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(params=BACKENDS)
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    procs = Processes(data_dir, request.param)
    yield procs
    procs.stop_all()


def prepare_model(url: str, data_dir: Path) -> tuple[str, dict[str, str], str]:
    """An app with a READY dataset version and a model; returns the model URL, headers, dataset version id."""
    headers = {"Authorization": f"Key {api_key(data_dir)}"}
    app = f"{url}/api/apps/shop"
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=headers).status_code == 201
    assert httpx.post(f"{app}/datasets", json={"id": "reviews"}, headers=headers).status_code == 201
    body = ("\n".join(sentiment_lines(3)) + "\n").encode()
    assert httpx.post(f"{app}/datasets/reviews/uploads", content=body, headers=headers).status_code == 201
    version = httpx.post(f"{app}/datasets/reviews/versions", headers=headers).json()["id"]
    assert httpx.post(f"{app}/models", json={"id": "m"}, headers=headers).status_code == 201
    return f"{app}/models/m", headers, version


def queue(model: str, headers: dict[str, str], dataset_version: str, steps: int = 300) -> str:
    trainer_config = {"max_steps": steps, "per_device_train_batch_size": 2}
    body = {"dataset_version_id": dataset_version, "template": "tiny-random", "trainer_config": trainer_config}
    answer = httpx.post(f"{model}/versions", json=body, headers=headers, timeout=60)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def wait_for(predicate: Any, what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def state(url: str, headers: dict[str, str]) -> dict[str, Any]:
    return dict(httpx.get(url, headers=headers, timeout=30).json())


def log_messages(version_url: str, headers: dict[str, str]) -> list[str]:
    lines = httpx.get(f"{version_url}/logs", params={"limit": 1000}, headers=headers).json()
    return [line["message"] for line in lines]


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (int(p) for p in (task / "children").read_text().split()):
            found |= {child, *descendants(child)}
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_a_worker_killed_with_sigkill_resumes_from_its_checkpoint_and_finishes(processes: Processes) -> None:
    _, url = processes.serve("--workers", "0")
    model, headers, dataset_version = prepare_model(url, processes.data_dir)
    worker = processes.start("worker", "--lease-seconds", "4", "--checkpoint-every", "1")
    run = f"{model}/versions/{queue(model, headers, dataset_version)}"
    checkpoints = processes.data_dir / "checkpoints" / run.rsplit("/", 1)[-1] / "checkpoints"
    wait_for(lambda: list(checkpoints.glob("checkpoint-*/trainer_state.json")), "a complete checkpoint")
    trainers = descendants(worker.pid)
    assert trainers  # the forkserver and the training process it forked
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: not any(alive(p) for p in trainers), "the orphaned training process to die", timeout=10)
    assert state(run, headers)["status"]["name"] == "MODEL_TRAINING"  # its lease has not run out yet

    processes.start("worker", "--lease-seconds", "4", "--checkpoint-every", "1")
    done = wait_for(lambda: (s := state(run, headers))["status"]["name"] != "MODEL_TRAINING" and s, "a final status")
    assert done["status"]["code"] == 21100, done["status"]
    steps = [p["step"] for p in httpx.get(f"{run}/metrics", headers=headers).json() if p["loss"] is not None]
    assert done["attempts"] == 2 and done["progress"]["step"] == done["progress"]["total_steps"] == 300, steps
    messages = log_messages(run, headers)
    resumed = [m for m in messages if m.startswith("attempt 2 of 3")]
    assert resumed and "resuming from checkpoint-" in resumed[0], messages
    assert int(resumed[0].rsplit("checkpoint-", 1)[1]) > 0  # not from scratch


def test_a_server_restart_mid_queue_loses_no_job(processes: Processes) -> None:
    server, url = processes.serve("--workers", "1")
    model, headers, dataset_version = prepare_model(url, processes.data_dir)
    runs = [queue(model, headers, dataset_version, steps) for steps in (400, 10, 10)]
    first = f"{model}/versions/{runs[0]}"
    wait_for(lambda: (state(first, headers)["progress"]["step"] or 0) >= 5, "the first run to make progress")
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=150) == 0

    _, url = processes.serve("--workers", "1")
    model = model.replace(model.split("/api/")[0], url)
    finals = {
        run: wait_for(
            lambda run=run: (s := state(f"{model}/versions/{run}", headers))["status"]["code"] == 21100 and s,
            f"{run} to be trained",
            timeout=240,
        )
        for run in runs
    }
    assert [finals[run]["progress"]["step"] for run in runs] == [400, 10, 10]
    messages = log_messages(f"{model}/versions/{runs[0]}", headers)
    shut_down = messages.index("worker shut down; the run resumes from its checkpoint")
    assert "resuming from checkpoint-" in messages[shut_down + 1], messages[shut_down:]
