"""`tuneloom store sweep`: what no database row accounts for is listed with its size (a dry run) and,
with `--delete`, removed — in the data dir, on a `file://` store, on S3 (moto's server on loopback).
Nothing a row names or may still name goes, nor anything younger than the grace period, nor anything
outside tuneloom's layout; what is kept stays fetchable and verified from another machine. Deleting a
run whose publish failed leaves nothing to sweep: its partial upload goes with it.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.s3_support import moto_s3
from tests.test_store_support import SETTINGS, make_db_fixture, ready_dataset_version

from tuneloom.cli import main
from tuneloom.store import dataset_versions, jobs, registry
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database
from tuneloom.store.ids import new_id
from tuneloom.store.models import TrainingStatus
from tuneloom.store.republish import UNSHARED
from tuneloom.store.shared import open_location, share

db = make_db_fixture()
TWO_DAYS_AGO = time.time() - 2 * 86400


def _age(path: Path) -> None:
    """Make `path` and everything inside it look last changed two days ago."""
    for entry in [path, *path.rglob("*")]:
        os.utime(entry, (TWO_DAYS_AGO, TWO_DAYS_AGO), follow_symlinks=False)


def _write(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _sweep(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["store", "sweep", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _paths(report: dict[str, Any], *, removed: bool | None = None) -> set[str]:
    return {o["path"] for o in report["orphans"] if removed is None or o["removed"] == removed}


def _run(db: Database, server: Artifacts, dsv: str, status: TrainingStatus, message: str | None = None) -> str:
    """A run of model "m" that wrote (and published) a small model-version folder, ended as `status`."""
    job = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=SETTINGS)
    assert jobs.claim_next(db, "w", 60.0) is not None
    folder = server.model_version_dir(job.id)
    _write(folder / "adapter" / "w.bin")
    relative = server.relative(folder)
    server.publish(relative)
    path = relative if status is TrainingStatus.MODEL_TRAINED else None
    jobs.finish(db, job.id, status, message, path, worker_id="w")
    return job.id


def test_a_file_store_sweep_lists_then_removes_only_old_files_no_row_accounts_for(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    server = Artifacts(tmp_path / "server")
    share(server, f"file://{store}")
    dsv = ready_dataset_version(db, tmp_path / "server")
    server.publish(dataset_versions.get_version_by_id(db, dsv).artifact_path)  # type: ignore[arg-type]
    trained = _run(db, server, dsv, TrainingStatus.MODEL_TRAINED)
    deleted = _run(db, server, dsv, TrainingStatus.MODEL_TRAINING_FAILED, "boom")
    registry.delete_model_version(db, "a", "m", deleted)  # its files' delete never reached the store
    cancelled = _run(db, server, dsv, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled by the user")
    unshared = _run(db, server, dsv, TrainingStatus.MODEL_TRAINING_FAILED, f"{UNSHARED}: store down")
    queued = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=SETTINGS).id
    _write(store / "model-versions" / queued / "adapter" / "w.bin")  # an earlier attempt's, to be overwritten
    gone_snapshot = new_id()
    _write(store / "dataset-versions" / f"{gone_snapshot}.jsonl", b"{}\n")
    _write(store / "dataset-versions" / f"{gone_snapshot}.jsonl.sha256.json", b"{}")
    _write(store / ".tuneloom-write-check-abc", b"")
    _write(store / "notes.txt", b"someone else's")
    _write(store / "model-versions" / "Not An Id" / "x")
    _age(store)
    young = new_id()
    _write(store / "model-versions" / young / "adapter" / "w.bin")  # a publish in flight

    where = ["--data-dir", str(tmp_path / "admin"), "--database-url", db.url, "--artifact-url", f"file://{store}"]
    orphans = {f"model-versions/{deleted}", f"model-versions/{cancelled}", f"dataset-versions/{gone_snapshot}.jsonl"}
    orphans.add(".tuneloom-write-check-abc")
    code, report = _sweep(capsys, *where)
    assert code == 0 and _paths(report, removed=False) == orphans
    by_path = {o["path"]: o for o in report["orphans"]}
    index_size = (store / "model-versions" / f"{deleted}.sha256.json").stat().st_size
    assert (by_path[f"model-versions/{deleted}"]["files"], by_path[f"model-versions/{deleted}"]["size"]) == (
        2,
        len(b"weights") + index_size,
    )
    assert by_path[f"model-versions/{deleted}"]["why"] == "no model version has this id"
    assert by_path[f"model-versions/{cancelled}"]["why"] == (
        "its model version is MODEL_TRAINING_CANCELLED and names no file here"
    )
    assert (store / "model-versions" / deleted / "adapter" / "w.bin").is_file()  # a dry run removes nothing

    assert main(["store", "sweep", *where]) == 0
    out, err = capsys.readouterr()
    assert f"file://{store}: dataset-versions/{gone_snapshot}.jsonl  (2 files, 5 B, changed " in out
    assert "would remove 4 orphan(s)" in err and "nothing was removed (--delete removes them)" in err

    code, report = _sweep(capsys, *where, "--delete")
    assert code == 0 and _paths(report, removed=True) == orphans
    assert not (store / "model-versions" / deleted).exists()
    assert not (store / "model-versions" / f"{deleted}.sha256.json").exists()
    assert not (store / ".tuneloom-write-check-abc").exists()
    for kept in (trained, unshared, queued, young, "Not An Id"):
        assert (store / "model-versions" / kept).is_dir(), kept
    assert (store / "notes.txt").is_file()
    elsewhere = Artifacts(tmp_path / "another-machine")
    share(elsewhere, f"file://{store}")
    assert elsewhere.fetch(f"model-versions/{trained}").joinpath("adapter", "w.bin").read_bytes() == b"weights"
    assert elsewhere.fetch(f"dataset-versions/{dsv}.jsonl").is_file()
    assert _sweep(capsys, *where)[1]["orphans"] == []


def test_a_data_dir_sweep_removes_what_a_deleted_row_left_and_keeps_a_failed_shares_files(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "server"
    dsv = ready_dataset_version(db, data)
    job = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=SETTINGS)
    assert jobs.claim_next(db, "w", 60.0) is not None
    jobs.finish(db, job.id, TrainingStatus.MODEL_TRAINING_FAILED, f"{UNSHARED}: store down", worker_id="w")
    _write(data / "model-versions" / job.id / "adapter" / "w.bin")  # what `store republish` needs
    gone = new_id()
    _write(data / "model-versions" / gone / "adapter" / "w.bin", b"12345")
    _write(data / "checkpoints" / gone / "checkpoint-1" / "state.pt")
    _write(data / "uploads" / f"{gone}.csv", b"a,b\n")
    _write(data / "tmp" / "staged.tmp")
    _write(data / ".write-check-crashed", b"")  # a start killed between writing and deleting it
    _age(data)
    _write(data / "model-versions" / new_id() / "x")  # young: another process's, perhaps
    _write(data / ".write-check-starting", b"")  # a start checking the data dir right now

    code, report = _sweep(capsys, "--data-dir", str(data), "--database-url", db.url)
    expected = {f"model-versions/{gone}", f"checkpoints/{gone}", f"uploads/{gone}.csv", "tmp/staged.tmp"}
    expected.add(".write-check-crashed")
    assert code == 0 and _paths(report) == expected
    sizes = {o["path"]: (o["files"], o["size"], o["why"]) for o in report["orphans"]}
    assert sizes[f"model-versions/{gone}"] == (1, 5, "no model version has this id")
    assert sizes["tmp/staged.tmp"][2] == "left by an interrupted upload, write or fetch"
    probe_why = "a write check left by a command that stopped while checking the data dir"
    assert sizes[".write-check-crashed"] == (1, 0, probe_why)
    assert (data / "tmp" / "staged.tmp").is_file()

    code, report = _sweep(capsys, "--data-dir", str(data), "--database-url", db.url, "--grace", "3d")
    assert code == 0 and report["orphans"] == []  # all changed within three days

    code, report = _sweep(capsys, "--data-dir", str(data), "--database-url", db.url, "--delete")
    assert code == 0 and _paths(report, removed=True) == expected
    assert not any(data.joinpath(path).exists() for path in expected)
    assert (data / "model-versions" / job.id / "adapter" / "w.bin").is_file()
    assert (data / "dataset-versions" / f"{dsv}.jsonl").is_file()
    assert (data / ".write-check-starting").is_file()


def test_a_data_dir_sweep_walks_each_orphan_folder_once(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data dir full of old checkpoint folders: each was walked twice, to judge its age and to measure it."""
    data, gone = tmp_path / "server", new_id()
    folders = {data / "checkpoints" / gone, data / "model-versions" / gone, data / "tmp" / "fetch"}
    for folder in folders:
        _write(folder / "sub" / "w.bin")
    _age(data)
    walked: list[Path] = []
    walk = os.walk

    def counted(top: Any, *args: Any, **kwargs: Any) -> Any:
        walked.append(Path(top))
        return walk(top, *args, **kwargs)

    monkeypatch.setattr(os, "walk", counted)
    code, report = _sweep(capsys, "--data-dir", str(data), "--database-url", db.url)
    assert code == 0 and _paths(report) == {folder.relative_to(data).as_posix() for folder in folders}
    assert {(o["files"], o["size"]) for o in report["orphans"]} == {(1, len(b"weights"))}
    assert sorted(path for path in walked if path in folders) == sorted(folders)


def test_a_bad_grace_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["store", "sweep", "--grace", "yesterday"])
    assert stopped.value.code == 2
    assert "argument --grace: must be a duration such as 90m, 24h or 2d, got 'yesterday'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    pytest.importorskip("s3fs")
    with moto_s3() as url:
        yield url


def test_an_s3_sweep_reads_object_ages_and_removes_only_the_unreferenced(
    db: Database, s3_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"{s3_url}/{new_id()}"  # the module's server is shared: one prefix per test
    server = Artifacts(tmp_path / "server")
    share(server, prefix)
    dsv = ready_dataset_version(db, tmp_path / "server")
    server.publish(dataset_versions.get_version_by_id(db, dsv).artifact_path)  # type: ignore[arg-type]
    folder = server.model_version_dir(new_id())
    _write(folder / "adapter" / "w.bin")
    gone = server.relative(folder)
    server.publish(gone)  # a version whose row is gone

    where = ["--data-dir", str(tmp_path / "admin"), "--database-url", db.url, "--artifact-url", prefix]
    assert _sweep(capsys, *where)[1]["orphans"] == []  # just written: younger than a day
    time.sleep(1.1)  # S3 keeps whole seconds
    code, report = _sweep(capsys, *where, "--grace", "0s", "--delete")
    assert code == 0 and _paths(report, removed=True) == {gone}
    assert report["orphans"][0]["files"] == 2 and report["orphans"][0]["where"] == prefix
    elsewhere = Artifacts(tmp_path / "another-machine")
    share(elsewhere, prefix)
    assert elsewhere.fetch(f"dataset-versions/{dsv}.jsonl").is_file()
    assert server.shared is not None and not server.shared.objects(gone)


def _delete_a_run_whose_publish_failed(db: Database, tmp_path: Path, url: str) -> None:
    """A worker could not share its run (files kept there, a partial upload on the store); the server deletes
    the run as its DELETE does (`server.cleanup`): the partial upload goes, every other version's files stay."""
    server = Artifacts(tmp_path / "server")
    share(server, url)
    dsv = ready_dataset_version(db, tmp_path / "server")
    server.publish(dataset_versions.get_version_by_id(db, dsv).artifact_path)  # type: ignore[arg-type]
    neighbour = _run(db, server, dsv, TrainingStatus.MODEL_TRAINED)
    job = jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=SETTINGS)
    assert jobs.claim_next(db, "gpu-box:1:0", 60.0) is not None
    fs, root = open_location(url)
    lookalike = f"{root}/model-versions/{job.id}-2/adapter/w.bin"  # named as if its id began with this one's
    for path, data in ((f"{root}/model-versions/{job.id}/adapter/w.bin", b"half"), (lookalike, b"someone's")):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)  # a file system needs it; S3 ignores it
        fs.pipe_file(path, data)  # the first: a publish cut short (content, no index)
    jobs.finish(db, job.id, TrainingStatus.MODEL_TRAINING_FAILED, f"{UNSHARED}: store down", worker_id="gpu-box:1:0")

    for path in registry.delete_model_version(db, "a", "m", job.id):
        server.delete(path)

    assert server.shared is not None and server.shared.objects(f"model-versions/{job.id}") == {}
    assert fs.cat_file(lookalike) == b"someone's"
    elsewhere = Artifacts(tmp_path / "another-machine")
    share(elsewhere, url)
    assert elsewhere.fetch(f"model-versions/{neighbour}").joinpath("adapter", "w.bin").read_bytes() == b"weights"


def test_deleting_a_run_whose_publish_failed_removes_its_partial_upload_from_a_file_store(
    db: Database, tmp_path: Path
) -> None:
    _delete_a_run_whose_publish_failed(db, tmp_path, f"file://{tmp_path / 'store'}")


def test_deleting_a_run_whose_publish_failed_removes_its_partial_upload_from_s3(
    db: Database, s3_url: str, tmp_path: Path
) -> None:
    _delete_a_run_whose_publish_failed(db, tmp_path, f"{s3_url}/{new_id()}")
