"""What `tuneloom serve` removes at start: files of deleted versions and crash leftovers, never a live one.

Several servers and workers may share one data dir, so nothing changed within `ORPHAN_GRACE_S` is
touched: it may be another process's upload, fetch or run in flight (see `tuneloom.store.recovery`).
Likewise only abandoned dataset-version builds are failed, never another live server's.
Raw uploads whose row is gone are covered in tests/test_store_datasets.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from tests.test_store_support import SETTINGS, make_artifacts_fixture, make_db_fixture, ready_dataset_version

from tuneloom.server.builds import BuildLeases
from tuneloom.store import dataset_versions, jobs
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.builders import BUILD_LEASE_S, THIS_PROCESS, is_gone
from tuneloom.store.db import Database
from tuneloom.store.models import DatasetVersion, utcnow
from tuneloom.store.recovery import INTERRUPTED, ORPHAN_GRACE_S, fail_abandoned_versions, recover_after_crash
from tuneloom.store.shared import INDEX_SUFFIX, share

db = make_db_fixture()
artifacts = make_artifacts_fixture()


def make(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def age(*paths: Path) -> None:
    """As if written two grace periods ago: each path and, for a folder, everything inside it."""
    long_ago = time.time() - 2 * ORPHAN_GRACE_S
    for path in paths:
        for folder, subfolders, files in os.walk(path):
            for name in (*subfolders, *files):
                os.utime(os.path.join(folder, name), (long_ago, long_ago), follow_symlinks=False)
        os.utime(path, (long_ago, long_ago), follow_symlinks=False)


def test_a_restart_removes_files_of_deleted_versions_and_keeps_live_and_fresh_ones(
    db: Database, artifacts: Artifacts, tmp_path: Path
) -> None:
    """A crash between a delete's commit and its file removal left these behind for good."""
    root = artifacts.root
    live_dataset_version = ready_dataset_version(db, root)
    queued = jobs.enqueue(
        db, "a", "m", dataset_version_id=live_dataset_version, template="tiny-random", settings=SETTINGS
    )
    live = [
        root / f"dataset-versions/{live_dataset_version}.jsonl",  # READY: written by ready_dataset_version
        make(root / f"checkpoints/{queued.id}/checkpoint-4/model.safetensors").parents[1],  # resumes from it
        make(root / f"model-versions/{queued.id}/config.json").parent,
    ]
    orphans = [
        make(root / "dataset-versions/gone1.jsonl"),
        make(root / "model-versions/gone2/adapter_model.safetensors").parent,
        make(root / "checkpoints/gone3/checkpoint-8/optimizer.pt").parents[1],
    ]
    outside = make(tmp_path / "elsewhere/gone4/keep.txt").parent  # a link's target is never followed
    (root / "model-versions/gone4").symlink_to(outside, target_is_directory=True)
    foreign = [make(root / "dataset-versions/notes.txt"), make(root / "model-versions/Old Run/readme")]
    age(*live, *orphans, *foreign, outside, root / "model-versions/gone4")
    fresh = [  # no row, but changed a moment ago: another server or worker may be making it
        make(root / "dataset-versions/fresh1.jsonl"),
        make(root / "checkpoints/fresh2/checkpoint-1/state.pt").parents[1],
    ]
    stale_folder_fresh_file = make(root / "model-versions/fresh3/old.json").parent
    age(stale_folder_fresh_file)
    make(stale_folder_fresh_file / "being-written.bin")  # a new file inside an old folder: still in use

    recovered = recover_after_crash(db, artifacts)

    assert sorted(recovered.orphaned_versions) == [
        "checkpoints/gone3",
        "dataset-versions/gone1.jsonl",
        "model-versions/gone2",
    ]
    assert not any(path.exists() for path in orphans)
    kept = [*live, *fresh, *foreign, stale_folder_fresh_file, outside / "keep.txt"]
    assert all(path.exists() for path in kept), [str(p) for p in kept if not p.exists()]
    assert (root / "model-versions/gone4").is_symlink()
    assert dataset_versions.get_version_by_id(db, live_dataset_version).state == "READY"


def test_partial_files_wait_for_the_grace_as_another_server_may_be_writing_them(
    db: Database, artifacts: Artifacts
) -> None:
    """A second server on the same data dir restarting must not cut off an upload streaming in here."""
    root = artifacts.root
    crashed = [
        make(root / "uploads/crashed1.part"),
        make(root / "tmp/crashed2.tmp"),
        make(root / "tmp/crashed3.fetch/adapter_model.safetensors").parent,  # a model version's fetch
        make(root / ".write-check-crashed4", ""),  # a start killed while checking the data dir
    ]
    age(*crashed)
    streaming = [make(root / "uploads/streaming1.part"), make(root / "tmp/writing2.tmp")]
    streaming.append(make(root / ".write-check-starting3", ""))

    recovered = recover_after_crash(db, artifacts)

    assert sorted(recovered.removed_files) == [
        ".write-check-crashed4",
        "tmp/crashed2.tmp",
        "tmp/crashed3.fetch",
        "uploads/crashed1.part",
    ]
    assert not any(path.exists() for path in crashed)
    assert all(path.is_file() for path in streaming)


def test_with_a_shared_store_only_this_machines_copy_is_swept(
    db: Database, artifacts: Artifacts, tmp_path: Path
) -> None:
    """The data dir is then a cache; what the shared store holds is never deleted by a restart."""
    store = tmp_path / "store"
    share(artifacts, f"file://{store}")
    cached = make(artifacts.root / "dataset-versions/gone5.jsonl")
    artifacts.publish("dataset-versions/gone5.jsonl")
    age(cached)

    recovered = recover_after_crash(db, artifacts)

    assert recovered.orphaned_versions == ["dataset-versions/gone5.jsonl"] and not cached.exists()
    assert (store / "dataset-versions/gone5.jsonl").is_file()
    assert (store / f"dataset-versions/gone5.jsonl{INDEX_SUFFIX}").is_file()


def builder_on_this_machine(pid: int, instance: str) -> str:
    """A builder id as the process `pid` on this machine would have it (see `tuneloom.store.builders`)."""
    host, scope, _, _ = THIS_PROCESS.rsplit(":", 3)
    return f"{host}:{scope}:{pid}:{instance}"


ANOTHER_SERVER = builder_on_this_machine(os.getppid(), "other")  # a live process: pytest's parent
ANOTHER_MACHINE = "gpu-2:0123456789ab:4242:other"


class BlockedBuild:
    """A build by `builder`, in a thread, held at its first example until `finish()`."""

    def __init__(self, db: Database, artifacts: Artifacts, builder: str) -> None:
        self.version_id = dataset_versions.create_version(db, "a", "ds").id
        self.started, self.go = threading.Event(), threading.Event()
        self._pool = ThreadPoolExecutor(1)
        self._built = self._pool.submit(
            dataset_versions.build_version, db, artifacts, self.version_id, builder=builder, token_length=self._count
        )
        assert self.started.wait(10), "the build never reached its first example"

    def _count(self, prompt: str, completion: str) -> int:
        self.started.set()
        self.go.wait(10)
        return 1

    def finish(self) -> DatasetVersion:
        self.go.set()
        try:
            return self._built.result(timeout=10)
        finally:
            self._pool.shutdown()


def state_of(db: Database, version_id: str) -> tuple[str, str | None]:
    version = dataset_versions.get_version_by_id(db, version_id)
    return version.state, version.message


def test_a_server_starting_while_another_builds_a_version_leaves_that_build_alone(
    db: Database, artifacts: Artifacts
) -> None:
    """Generation nodes and the API server share one database: one starting must not fail another's build."""
    ready_dataset_version(db, artifacts.root)
    here, elsewhere = BlockedBuild(db, artifacts, ANOTHER_SERVER), BlockedBuild(db, artifacts, ANOTHER_MACHINE)

    recovered = recover_after_crash(db, artifacts)  # this process starting as a second server

    assert recovered.failed_versions == []
    assert state_of(db, here.version_id) == state_of(db, elsewhere.version_id) == ("IN_PROGRESS", None)
    for build in (here, elsewhere):
        built = build.finish()
        assert built.state == "READY" and built.artifact_path
        dataset_versions.verify_snapshot(artifacts, built)  # its file is there, whole


def test_a_build_silent_past_its_lease_is_failed_and_its_late_result_discarded(
    db: Database, artifacts: Artifacts
) -> None:
    """Its server stopped beating (hung, cut off): any server fails it, and the late finish cannot undo that."""
    ready_dataset_version(db, artifacts.root)
    build = BlockedBuild(db, artifacts, ANOTHER_SERVER)
    later = utcnow() + timedelta(seconds=BUILD_LEASE_S + 1)

    assert fail_abandoned_versions(db, artifacts, now=later) == [build.version_id]
    assert state_of(db, build.version_id) == ("FAILURE", INTERRUPTED)

    built = build.finish()
    assert (built.state, built.message, built.artifact_path) == ("FAILURE", INTERRUPTED, None)
    assert state_of(db, build.version_id) == ("FAILURE", INTERRUPTED)
    assert not artifacts.dataset_version_file(build.version_id).exists()


CRASHING_BUILD = """
import os, sys
from tuneloom.store import dataset_versions
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database

crash = lambda prompt, completion: os._exit(9)
dataset_versions.build_version(Database(sys.argv[1]), Artifacts(sys.argv[2]), sys.argv[3], token_length=crash)
"""


def test_a_server_restarting_after_its_crash_fails_its_builds_at_once(db: Database, artifacts: Artifacts) -> None:
    """No wait for the lease: the row names a process on this machine that is no longer running."""
    ready_dataset_version(db, artifacts.root)
    crashed = dataset_versions.create_version(db, "a", "ds").id
    script = [sys.executable, "-c", CRASHING_BUILD, db.url, str(artifacts.root), crashed]
    assert subprocess.run(script, timeout=60).returncode == 9  # killed mid-build
    assert state_of(db, crashed) == ("IN_PROGRESS", None)
    leftover = make(artifacts.dataset_version_file(crashed))  # as if it died after renaming the file in
    pending = dataset_versions.create_version(db, "a", "ds").id  # about to be built by a live server

    recovered = recover_after_crash(db, artifacts)

    assert recovered.failed_versions == [crashed]
    assert state_of(db, crashed) == ("FAILURE", INTERRUPTED) and not leftover.exists()
    assert state_of(db, pending) == ("PENDING", None)


def test_only_a_builder_certainly_gone_is_failed_before_its_lease() -> None:
    """Same pid as this process under another instance: a restart that got its old pid (a container's)."""
    assert is_gone(builder_on_this_machine(os.getpid(), "before-the-crash"))
    assert not is_gone(THIS_PROCESS)
    assert not is_gone(ANOTHER_SERVER)
    assert not is_gone(ANOTHER_MACHINE)  # another boot or PID namespace: its pids mean nothing here
    assert not is_gone("not a builder id")


def test_a_server_keeps_its_builds_alive_and_fails_a_stopped_servers_in_its_own_beat(
    db: Database, artifacts: Artifacts
) -> None:
    """A server that crashed for good leaves no build IN_PROGRESS past the lease, restart or not."""
    ready_dataset_version(db, artifacts.root)
    leases = BuildLeases(db, artifacts, builder=builder_on_this_machine(os.getppid(), "this-server"))
    ours, theirs = BlockedBuild(db, artifacts, leases.builder), BlockedBuild(db, artifacts, ANOTHER_MACHINE)
    both = DatasetVersion.id.in_([ours.version_id, theirs.version_id])
    with db.write() as session:  # both silent for longer than the lease, as after a long stall
        long_ago = utcnow() - timedelta(seconds=BUILD_LEASE_S + 1)
        session.execute(update(DatasetVersion).where(both).values(heartbeat_at=long_ago))

    with leases.building(ours.version_id):
        leases.beat()
        assert state_of(db, ours.version_id) == ("IN_PROGRESS", None)
        assert state_of(db, theirs.version_id) == ("FAILURE", INTERRUPTED)
        assert ours.finish().state == "READY"
    assert theirs.finish().state == "FAILURE"
    assert not artifacts.dataset_version_file(theirs.version_id).exists()
