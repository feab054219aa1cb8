"""What `tuneloom serve` removes at start: files of deleted versions and crash leftovers, never a live one.

Several servers and workers may share one data dir, so nothing changed within `ORPHAN_GRACE_S` is
touched: it may be another process's upload, fetch or run in flight (see `tuneloom.store.recovery`).
Raw uploads whose row is gone are covered in tests/test_store_datasets.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.test_store_support import SETTINGS, make_artifacts_fixture, make_db_fixture, ready_dataset_version

from tuneloom.store import dataset_versions, jobs
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database
from tuneloom.store.recovery import ORPHAN_GRACE_S, recover_after_crash
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
    ]
    age(*crashed)
    streaming = [make(root / "uploads/streaming1.part"), make(root / "tmp/writing2.tmp")]

    recovered = recover_after_crash(db, artifacts)

    assert sorted(recovered.removed_files) == ["tmp/crashed2.tmp", "tmp/crashed3.fetch", "uploads/crashed1.part"]
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
