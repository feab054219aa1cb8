"""A worker keeps its lease while it downloads from the shared store: a big snapshot or a model to
continue from takes longer than a lease, and a worker silent that long would lose its job. A trained
model the store refuses is tried again (the run logs each failure) before the run fails, its files kept.

The shared store here is the local file system, slowed down: fsspec's own LocalFileSystem whose
downloads each take `DOWNLOAD_S` (a slow network cannot be had on a loopback-only machine).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tests.test_store_support import SETTINGS, make_db_fixture, ready_dataset_version

from tuneloom.store import dataset_versions, jobs, registry, telemetry
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database
from tuneloom.store.shared import share
from tuneloom.worker import WorkerConfig
from tuneloom.worker.supervisor import WorkerSlot

db = make_db_fixture()
DOWNLOAD_S = 3.0  # three leases


class SlowFileSystem(LocalFileSystem):
    protocol = "slowfile"

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(str(path).removeprefix("slowfile://"))

    def get_file(self, rpath: Any, lpath: Any, **kwargs: Any) -> None:
        time.sleep(DOWNLOAD_S)
        super().get_file(rpath, lpath, **kwargs)


fsspec.register_implementation("slowfile", SlowFileSystem, clobber=True)


def test_a_worker_keeps_its_lease_through_a_download_longer_than_the_lease(db: Database, tmp_path: Path) -> None:
    dsv = ready_dataset_version(db, tmp_path / "server")
    server = Artifacts(tmp_path / "server")
    share(server, f"file://{tmp_path / 'store'}")
    server.shared.publish(dataset_versions.get_version_by_id(db, dsv).artifact_path)  # type: ignore[union-attr,arg-type]

    worker = Artifacts(tmp_path / "worker")  # another machine: nothing local, the store is slow
    share(worker, f"slowfile://{tmp_path / 'store'}")
    settings = {**SETTINGS, "trainer_config": {"max_steps": 1}}
    job = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=settings)
    slot = WorkerSlot(db, worker, config=WorkerConfig(lease_s=1.0, heartbeat_s=0.2, poll_s=0.1))
    running = threading.Thread(target=slot.run_once)
    running.start()

    time.sleep(DOWNLOAD_S - 0.5)  # mid-download, after two leases' worth of time
    jobs.requeue_expired(db)
    assert jobs.claim_next(db, "another-worker", 60.0) is None  # still leased: nobody else starts it
    running.join(timeout=180)
    assert not running.is_alive()

    trained = registry.get_model_version_by_id(db, job.id)
    assert trained.status == "MODEL_TRAINED", trained.message
    assert trained.attempts == 1
    assert (tmp_path / "worker" / "dataset-versions").is_dir()  # it trained from the fetched snapshot


def _worker_sharing(db: Database, tmp_path: Path, retry_s: tuple[float, ...]) -> tuple[WorkerSlot, str, Path]:
    """A slot on its own data dir, sharing through a `file://` store, and a queued one-step run (its id)."""
    dsv = ready_dataset_version(db, tmp_path / "server")
    store = tmp_path / "store"
    server = Artifacts(tmp_path / "server")
    share(server, f"file://{store}")
    server.shared.publish(dataset_versions.get_version_by_id(db, dsv).artifact_path)  # type: ignore[union-attr,arg-type]
    worker = Artifacts(tmp_path / "worker")
    share(worker, f"file://{store}")
    settings = {**SETTINGS, "trainer_config": {"max_steps": 1}}
    job = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=settings)
    config = WorkerConfig(lease_s=1.0, heartbeat_s=0.2, poll_s=0.1, publish_retry_s=retry_s)
    return WorkerSlot(db, worker, config=config), job.id, store


def _log_lines(db: Database, job_id: str) -> list[str]:
    return [line.message for line in telemetry.list_logs(db, job_id)]


def test_a_trained_model_the_store_refuses_for_a_while_is_shared_when_it_takes_it(db: Database, tmp_path: Path) -> None:
    """A store outage after hours of training must not fail the run: the worker logs it and tries again."""
    slot, job_id, store = _worker_sharing(db, tmp_path, retry_s=(0.5,) * 40)
    blocker = store / "model-versions"
    blocker.write_text("a file where the folder must go: every publish fails")
    running = threading.Thread(target=slot.run_once)
    running.start()
    deadline = time.monotonic() + 120
    while not any("could not share the model version, trying again in 0.5 s" in t for t in _log_lines(db, job_id)):
        assert time.monotonic() < deadline and running.is_alive(), _log_lines(db, job_id)
        time.sleep(0.1)
    blocker.unlink()  # the store is back
    running.join(timeout=60)
    trained = registry.get_model_version_by_id(db, job_id)
    assert trained.status == "MODEL_TRAINED", trained.message
    assert (store / "model-versions" / f"{job_id}.sha256.json").is_file()


def test_a_store_that_never_takes_the_model_fails_the_run_saying_where_it_is_kept(db: Database, tmp_path: Path) -> None:
    slot, job_id, store = _worker_sharing(db, tmp_path, retry_s=(0.1, 0.1))
    (store / "model-versions").write_text("a file where the folder must go")
    slot.run_once()
    failed = registry.get_model_version_by_id(db, job_id)
    assert failed.status == "MODEL_TRAINING_FAILED"
    assert failed.message.startswith("training finished but the model version could not be shared: could not publish")
    assert failed.message.endswith(f"(its files stay in <data dir>/model-versions/{job_id} on worker {slot.worker_id})")
    assert sum("trying again" in t for t in _log_lines(db, job_id)) == 2
    assert (
        tmp_path / "worker" / "model-versions" / job_id / "adapter" / "adapter_config.json"
    ).is_file()  # nothing trained lost
