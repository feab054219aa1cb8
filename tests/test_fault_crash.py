"""`kill -9` of the server mid-upload and mid-version-creation: nothing half-made is ever visible.

A real `tuneloom serve` is killed while an upload is still streaming in (a slow httpx upload) and
while a dataset version's snapshot is being written (a dataset big enough for that to take a
while). After a restart: the dataset holds only what was stored before, every listed version is
READY with a snapshot matching its content hash or FAILURE with a reason (never left PENDING or
IN_PROGRESS), no partial file past the hour's grace is left, and the same upload and version succeed
when retried.
Both backends run in `make soak` (three server starts are too slow for `make test`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import api_key, sentiment_lines
from tests.process_helpers import Processes, running_processes
from tests.server_helpers import server_database
from tests.test_store_support import POSTGRES_URL

from tuneloom.store import dataset_versions
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.models import DatasetVersionState
from tuneloom.store.recovery import ORPHAN_GRACE_S

BIG_ROWS = 15_000  # enough for a snapshot to take a second or more on a 2-core machine
UPLOAD_ROWS = 4_000
BACKENDS = [  # 154 s for SQLite on the shared, loaded 2-core machine: beyond the default run's budget
    pytest.param("sqlite", marks=pytest.mark.soak),
    pytest.param(
        "postgresql",
        marks=[pytest.mark.soak, pytest.mark.skipif(not POSTGRES_URL, reason="TUNELOOM_TEST_POSTGRES_URL unset")],
    ),
]


@pytest.fixture(params=BACKENDS)
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    with running_processes(tmp_path, request.param) as procs:
        yield procs


def big_dataset(rows: int) -> bytes:
    line = "### Instruction: Classify the review. ### Human: review number {} was fine ### Assistant: positive"
    return ("\n".join(line.format(i) for i in range(rows)) + "\n").encode()


def slow_body(body: bytes, started: threading.Event) -> Iterator[bytes]:
    """The first quarter at once, then a trickle: the server is killed long before the end."""
    quarter = len(body) // 4
    yield body[:quarter]
    started.set()
    for start in range(quarter, len(body), 4096):
        time.sleep(0.05)
        yield body[start : start + 4096]


def in_background(call: Any) -> threading.Thread:
    """Run a request that the kill will break; its error is expected and ignored."""

    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            call()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def kill(server: Any) -> None:
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


def start_with_dataset(processes: Processes) -> tuple[Any, str, dict[str, str]]:
    """A server with app `shop` and dataset `reviews` holding 16 examples; returns it, the dataset URL, headers."""
    server, url = processes.serve("--workers", "0", "--max-upload-mb", "64")
    headers = {"Authorization": f"Key {api_key(processes.data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=headers).status_code == 201
    assert httpx.post(f"{url}/api/apps/shop/datasets", json={"id": "reviews"}, headers=headers).status_code == 201
    dataset = f"{url}/api/apps/shop/datasets/reviews"
    small = ("\n".join(sentiment_lines(1)) + "\n").encode()
    assert httpx.post(f"{dataset}/uploads", content=small, headers=headers).status_code == 201
    return server, dataset, headers


def restart(processes: Processes) -> tuple[Any, str]:
    """Restart once the kill's partial files are past the grace: younger ones may be another server's."""
    long_ago = time.time() - 2 * ORPHAN_GRACE_S
    for path in (*processes.data_dir.glob("uploads/*.part"), *processes.data_dir.glob("tmp/*")):
        os.utime(path, (long_ago, long_ago))
    server, url = processes.serve("--workers", "0", "--max-upload-mb", "64")
    return server, f"{url}/api/apps/shop/datasets/reviews"


def assert_nothing_half_made(processes: Processes, dataset: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every version READY with a matching snapshot or FAILURE with a reason; no partial files anywhere."""
    versions = httpx.get(f"{dataset}/versions", headers=headers, timeout=30).json()
    db, artifacts = server_database(processes.data_dir), Artifacts(processes.data_dir)
    try:
        for version in versions:
            assert version["state"] in ("READY", "FAILURE"), version
            if version["state"] == "FAILURE":
                assert version["message"], version
                continue
            stored = dataset_versions.get_version_by_id(db, version["id"])
            dataset_versions.verify_snapshot(artifacts, stored)  # raises naming the file if it does not match
    finally:
        db.dispose()
    ready = {f"{v['id']}.jsonl" for v in versions if v["state"] == "READY"}
    assert {p.name for p in (processes.data_dir / "dataset-versions").glob("*")} <= ready
    assert not list((processes.data_dir / "uploads").glob("*.part"))
    assert not list((processes.data_dir / "tmp").glob("*"))
    return list(versions)


def test_a_server_killed_mid_version_and_mid_upload_shows_nothing_half_made_and_both_can_be_retried(
    processes: Processes,
) -> None:
    server, dataset, headers = start_with_dataset(processes)
    kept = httpx.post(f"{dataset}/versions", headers=headers, timeout=60).json()
    assert kept["state"] == "READY", kept
    answer = httpx.post(f"{dataset}/uploads", content=big_dataset(BIG_ROWS), headers=headers, timeout=300)
    assert answer.status_code == 201, answer.text

    # 1. Killed while the snapshot of a new version is being written.
    thread = in_background(lambda: httpx.post(f"{dataset}/versions", headers=headers, timeout=300))
    wait_for_file(processes.data_dir / "tmp", "*.tmp")
    kill(server)
    thread.join(timeout=30)
    db = server_database(processes.data_dir)
    left = sorted(v.state for v in dataset_versions.list_versions(db, "shop", "reviews").items)
    db.dispose()
    assert left == [DatasetVersionState.IN_PROGRESS.value, "READY"]  # what the kill left behind

    server, dataset = restart(processes)
    versions = assert_nothing_half_made(processes, dataset, headers)
    interrupted = next(v for v in versions if v["id"] != kept["id"])
    assert interrupted["state"] == "FAILURE" and "interrupted" in interrupted["message"], interrupted
    assert next(v for v in versions if v["id"] == kept["id"]) == kept  # the earlier version is untouched

    # 2. Killed while an upload is still streaming in.
    body, started = big_dataset(UPLOAD_ROWS), threading.Event()
    upload = lambda: httpx.post(f"{dataset}/uploads", content=slow_body(body, started), headers=headers, timeout=60)  # noqa: E731
    thread = in_background(upload)
    assert started.wait(30)
    wait_for_file(processes.data_dir / "uploads", "*.part")
    kill(server)
    thread.join(timeout=30)

    _, dataset = restart(processes)
    total = BIG_ROWS + 16
    assert httpx.get(f"{dataset}/inputs", params={"limit": 1}, headers=headers).json()["total"] == total
    assert_nothing_half_made(processes, dataset, headers)

    # 3. The same upload and version, retried, succeed.
    retried = httpx.post(
        f"{dataset}/uploads", content=body, headers=headers, params={"filename": "big.txt"}, timeout=120
    )
    assert retried.status_code == 201, retried.text
    assert retried.json()["valid_rows"] == UPLOAD_ROWS
    again = httpx.post(f"{dataset}/versions", headers=headers, timeout=300).json()
    assert again["state"] == "READY" and again["example_count"] == total + UPLOAD_ROWS, again
    assert_nothing_half_made(processes, dataset, headers)


def wait_for_file(folder: Path, pattern: str, timeout: float = 60) -> None:
    """Poll often: the window between the file appearing and the write finishing is short."""
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert time.monotonic() < deadline, f"no {pattern} appeared in {folder}"
        time.sleep(0.01)
