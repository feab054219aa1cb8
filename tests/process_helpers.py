"""Real `tuneloom serve` / `tuneloom worker` processes on one data dir and database, for tests that kill,
restart and outlast them; and the HTTP polling those tests share.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import DATABASE_URL_FILE, _free_port, _wait_until_up, api_key, cli_command, sentiment_lines
from tests.test_store_support import POSTGRES_URL, fresh_database

from tuneloom.store.db import default_url
from tuneloom.store.models import TrainingStatus

FINAL = {status.name for status in TrainingStatus if status.is_final}


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

    def start(self, command: str, *args: str, data_dir: Path | None = None) -> subprocess.Popen[bytes]:
        """`tuneloom <command>` on this data dir, or on another `data_dir` ("another machine") sharing the database."""
        data_dir = data_dir or self.data_dir
        database = self.extra or ([] if data_dir == self.data_dir else ["--database-url", default_url(self.data_dir)])
        cmd = cli_command(command, "--data-dir", str(data_dir), *database, *args)
        proc = subprocess.Popen(cmd, stdout=self._log(command).open("wb"), stderr=subprocess.STDOUT)
        self.running.append(proc)
        return proc

    def serve(
        self, *args: str, port: int | None = None, data_dir: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = port or _free_port()
        log = self._log("serve")
        proc = self.start("serve", "--port", str(port), "--checkpoint-every", "1", *args, data_dir=data_dir)
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, proc, log)
        return proc, url

    def _log(self, command: str) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-{command}-{len(self.running)}.log"

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@contextlib.contextmanager
def running_processes(tmp_path: Path, backend: str) -> Iterator[Processes]:
    """A `Processes` on a fresh data dir under `tmp_path`; every process it started is killed at the end."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    procs = Processes(data_dir, backend)
    try:
        yield procs
    finally:
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


def ended(version_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The version's state once its run has ended, however it ended."""
    final: dict[str, Any] = wait_for(lambda: (s := state(version_url, headers))["status"]["name"] in FINAL and s, "end")
    return final


def trained(model: str, headers: dict[str, str], version: str) -> str:
    """Wait for the version's run to end; it must have ended MODEL_TRAINED."""
    final = ended(f"{model}/versions/{version}", headers)
    assert final["status"]["name"] == "MODEL_TRAINED", final
    return version


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


def interrupt_training(base: list[str], *, run_for_s: float, timeout: float) -> tuple[int, str]:
    """Start `tuneloom <base>` with a run too long to finish, SIGINT it `run_for_s` after training starts.

    Returns the exit code and stderr, where the CLI's stage lines and its interruption message go.
    """
    endless = ["--trainer-config", '{"max_steps": 100000, "save_steps": 100000}']
    cmd = cli_command(*base, *endless)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # stage lines arrive on stderr as they happen
        if "Training" in line:
            break
    time.sleep(run_for_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err
