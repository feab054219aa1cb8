"""A worker keeps its lease while it downloads from the shared store: a big snapshot or a model to
continue from takes longer than a lease, and a worker silent that long would lose its job.

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

from tuneloom.store import dataset_versions, jobs, registry
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
