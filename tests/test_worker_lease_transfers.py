"""A worker keeps its lease while it downloads from the shared store: a big snapshot or a model to
continue from takes longer than a lease, and a worker silent that long would lose its job. A trained
model the store refuses is tried again (the run logs each failure) before the run fails, its files kept
and the command named that shares them later (`tuneloom store republish`, run here through `main`).

The shared store here is the local file system, slowed down: fsspec's own LocalFileSystem whose
downloads each take `DOWNLOAD_S` (a slow network cannot be had on a loopback-only machine).
"""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from tests.test_store_support import SETTINGS, make_db_fixture, ready_dataset_version

from tuneloom.cli import main
from tuneloom.model_version import open_version
from tuneloom.store import dataset_versions, jobs, registry, telemetry
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database, shown_url
from tuneloom.store.models import TrainingStatus
from tuneloom.store.republish import UNSHARED
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
    assert f"(its files stay in <data dir>/model-versions/{job_id} on worker {slot.worker_id}; " in failed.message
    assert failed.message.endswith(f"run there: {_republish_command(db, job_id, store)})")
    assert sum("trying again" in t for t in _log_lines(db, job_id)) == 2
    assert (
        tmp_path / "worker" / "model-versions" / job_id / "adapter" / "adapter_config.json"
    ).is_file()  # nothing trained lost


def _republish_command(db: Database, job_id: str, store: Path) -> str:
    """What the failure message must tell the user to run on the worker (its data dir left to them)."""
    return (
        f"tuneloom store republish {job_id} --data-dir <data dir> --database-url {shown_url(db.url)} "
        f"--artifact-url file://{store}"
    )


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_command_a_failed_share_names_publishes_the_kept_files_and_trains_the_version(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hours of training are not lost to a store outage: once it is back, the command in the run's message
    (checked files, published, MODEL_TRAINED) makes the version usable from any machine."""
    slot, job_id, store = _worker_sharing(db, tmp_path, retry_s=(0.1,))
    (store / "model-versions").write_text("a file where the folder must go")
    slot.run_once()
    message = registry.get_model_version_by_id(db, job_id).message
    command = message.rpartition("run there: ")[2].removesuffix(")").replace("<data dir>", str(tmp_path / "worker"))
    argv = shlex.split(command)[1:]
    assert argv[:3] == ["store", "republish", job_id]

    code, out = _run(argv, capsys)  # the store still refuses it: said, and nothing changes
    assert code == 1 and f"could not publish model-versions/{job_id} to file://{store}" in out
    assert registry.get_model_version_by_id(db, job_id).status == "MODEL_TRAINING_FAILED"

    (store / "model-versions").unlink()  # the store is back; but a kept file was damaged meanwhile
    weights = next((tmp_path / "worker" / "model-versions" / job_id / "adapter").glob("adapter_model.*"))
    good = weights.read_bytes()
    weights.write_bytes(good[:-8] + b"damaged!")
    code, out = _run(argv, capsys)
    assert code == 1 and f"file adapter/{weights.name} is damaged (checksum mismatch)" in out
    assert "nothing was published" in out and not (store / "model-versions" / f"{job_id}.sha256.json").exists()

    weights.write_bytes(good)
    code, out = _run(argv, capsys)
    assert code == 0, out
    assert f"model version {job_id} published to file://{store}: MODEL_TRAINED" in out
    trained = registry.get_model_version_by_id(db, job_id)
    assert (trained.status, trained.status_code, trained.message) == ("MODEL_TRAINED", 21100, None)
    assert trained.artifact_path == f"model-versions/{job_id}"
    assert "model version shared by `tuneloom store republish`" in _log_lines(db, job_id)[-1]
    assert not (tmp_path / "worker" / "checkpoints" / job_id).exists()  # a trained run never resumes
    elsewhere = Artifacts(tmp_path / "another-server")
    share(elsewhere, f"file://{store}")
    assert open_version(elsewhere.fetch(trained.artifact_path)).template == "tiny-random"  # checksums verified

    code, out = _run(argv, capsys)
    assert code == 1 and f"model version '{job_id}' is already MODEL_TRAINED: nothing to republish" in out


def test_republish_refuses_a_run_that_did_not_fail_to_share_and_a_machine_without_its_files(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsv = ready_dataset_version(db, tmp_path / "server")
    (tmp_path / "store").mkdir()
    where = ["--data-dir", str(tmp_path / "worker"), "--database-url", db.url]
    store = ["--artifact-url", f"file://{tmp_path / 'store'}"]
    queued = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=SETTINGS)
    code, out = _run(["store", "republish", queued.id, *where, *store], capsys)
    assert code == 1 and f"model version '{queued.id}' is MODEL_QUEUED_FOR_TRAINING" in out
    assert "only a run whose training finished but whose files could not be shared" in out

    code, out = _run(["store", "republish", queued.id, *where], capsys)
    assert code == 1 and "give the worker's --artifact-url (or set TUNELOOM_ARTIFACT_URL)" in out

    code, out = _run(["store", "republish", "nosuchrun", *where, *store], capsys)
    assert code == 1 and "model version 'nosuchrun' not found" in out

    claimed = jobs.claim_next(db, "gpu-box:12:0", 60.0)
    assert claimed is not None
    jobs.finish(db, claimed.id, TrainingStatus.MODEL_TRAINING_FAILED, f"{UNSHARED}: x", worker_id="gpu-box:12:0")
    code, out = _run(["store", "republish", queued.id, *where, *store], capsys)
    assert code == 1 and "is not a model-version directory (it does not exist)" in out
    assert "its files are kept by worker gpu-box:12:0: run this there; nothing was published" in out
