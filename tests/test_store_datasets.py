"""Datasets, uploads, paging, and versions: deterministic hashes and immutable snapshots."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update
from tests.test_store_support import examples, make_db_fixture, report_for

from tuneloom.data.types import Example, InvalidRow
from tuneloom.store import apps, dataset_versions, datasets
from tuneloom.store.artifacts import UPLOADS, Artifacts
from tuneloom.store.db import Database
from tuneloom.store.ids import ConflictError, NotFoundError
from tuneloom.store.models import DatasetVersion, DatasetVersionState
from tuneloom.store.recovery import ORPHAN_GRACE_S, recover_after_crash

db = make_db_fixture()


@pytest.fixture
def artifacts(tmp_path: Path) -> Artifacts:
    return Artifacts(tmp_path / "data")


@pytest.fixture
def ds(db: Database) -> str:
    apps.create_app(db, "a", "a")
    datasets.create_dataset(db, "a", "ds", name="Sentiment")
    return "ds"


def _upload(db: Database, items: list[Example], invalid: int = 0) -> None:
    report = report_for(items, invalid)
    for i in range(invalid):
        report.add_invalid(InvalidRow(line=100 + i, reason="no answer section"))
    report.invalid_rows = invalid
    datasets.add_upload(db, "a", "ds", report, items, source_file="../../etc/passwd")


def test_upload_stores_examples_and_report(db: Database, ds: str) -> None:
    _upload(db, examples(3), invalid=1)
    [upload] = datasets.list_uploads(db, "a", ds)
    assert (upload.valid_rows, upload.invalid_rows, upload.source_file) == (3, 1, "../../etc/passwd")
    assert upload.report["invalid"][0] == {"line": 100, "reason": "no answer section", "excerpt": ""}
    page = datasets.list_inputs(db, "a", ds)
    assert [(i.seq, i.line, i.completion) for i in page.items] == [(1, 1, "a0"), (2, 2, "a1"), (3, 3, "a2")]
    assert page.next_after is None
    assert datasets.count_inputs(db, "a", ds) == 3


def test_paging_is_stable_across_deletes(db: Database, ds: str) -> None:
    _upload(db, examples(7))
    first = datasets.list_inputs(db, "a", ds, limit=3)
    assert [i.seq for i in first.items] == [1, 2, 3] and first.next_after == 3
    assert datasets.delete_inputs(db, "a", ds, [2, 4, 999]) == 1 + 1
    second = datasets.list_inputs(db, "a", ds, limit=3, after=first.next_after)
    assert [i.seq for i in second.items] == [5, 6, 7] and second.next_after is None
    _upload(db, examples(1, "new"))  # numbers are never reused
    assert [i.seq for i in datasets.list_inputs(db, "a", ds, after=7).items] == [8]
    assert datasets.delete_inputs(db, "a", ds) == 6
    assert datasets.list_inputs(db, "a", ds).items == []


def test_versions_made_in_the_same_microsecond_page_once_each_newest_first(db: Database, ds: str) -> None:
    """The cursor is (created_at, id): versions a clock stamped alike are ordered by id, none skipped or repeated."""
    _upload(db, examples(1))
    made = [dataset_versions.create_version(db, "a", ds).id for _ in range(7)]
    with db.write() as session:
        session.execute(update(DatasetVersion).values(created_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)))
    seen, cursor = [], None
    for size in (3, 3, 1):
        page = dataset_versions.list_versions(db, "a", ds, limit=3, before=cursor)
        assert len(page.items) == size
        seen += [v.id for v in page.items]
        cursor = page.next_cursor
    assert cursor is None and seen == sorted(made, reverse=True)


def test_datasets_are_scoped_to_their_app(db: Database, ds: str) -> None:
    apps.create_app(db, "b", "b")
    with pytest.raises(NotFoundError):
        datasets.get_dataset(db, "b", ds)
    datasets.create_dataset(db, "b", ds)  # the same slug in another app is another dataset
    with pytest.raises(ConflictError):
        datasets.create_dataset(db, "a", ds)
    with pytest.raises(NotFoundError):
        datasets.create_dataset(db, "ghost", "x")
    assert [d.name for d in datasets.list_datasets(db, "a")] == ["Sentiment"]


def _version(db: Database, artifacts: Artifacts) -> DatasetVersion:
    version = dataset_versions.create_version(db, "a", "ds")
    assert version.state == DatasetVersionState.PENDING
    return dataset_versions.build_version(db, artifacts, version.id, token_length=lambda p, c: len((p + c).split()))


def test_version_hash_is_deterministic_and_content_only(db: Database, ds: str, artifacts: Artifacts) -> None:
    items = examples(4)
    _upload(db, items)
    first = _version(db, artifacts)
    second = _version(db, artifacts)
    assert first.state == second.state == DatasetVersionState.READY
    assert (
        first.content_hash
        == second.content_hash
        == dataset_versions.content_hash((e.prompt, e.completion) for e in items)
    )
    assert first.artifact_path != second.artifact_path
    assert dataset_versions.content_hash([("a", "b"), ("c", "d")]) != dataset_versions.content_hash(
        [("c", "d"), ("a", "b")]
    )
    assert dataset_versions.content_hash([("a\n", "b")]) != dataset_versions.content_hash([("a", "\nb")])
    assert first.stats is not None
    assert first.stats["examples"] == 4 and first.stats["completion_chars"] == {"min": 2, "mean": 2.0, "max": 2}
    assert first.stats["tokens"]["max"] == 5


def test_snapshot_is_immutable(db: Database, ds: str, artifacts: Artifacts) -> None:
    _upload(db, examples(3))
    version = _version(db, artifacts)
    assert version.artifact_path and version.artifact_path.startswith("dataset-versions/")
    path = artifacts.resolve(version.artifact_path)
    before = path.read_bytes()
    assert [json.loads(line)["completion"] for line in before.splitlines()] == ["a0", "a1", "a2"]
    assert path.stat().st_mode & 0o222 == 0
    _upload(db, examples(2, "later"))
    datasets.delete_inputs(db, "a", ds, [1])
    assert path.read_bytes() == before
    again = dataset_versions.get_version(db, "a", ds, version.id)
    assert (again.content_hash, again.example_count) == (version.content_hash, 3)
    assert [e.completion for e in dataset_versions.read_snapshot(artifacts, again)] == ["a0", "a1", "a2"]
    with pytest.raises(ConflictError):
        dataset_versions.build_version(db, artifacts, version.id)
    with pytest.raises(ConflictError), db.write() as session:
        row = session.get(DatasetVersion, version.id)
        assert row is not None
        row.content_hash = "0" * 64
    assert dataset_versions.get_version_by_id(db, version.id).content_hash == version.content_hash


def test_an_empty_dataset_is_refused_and_one_emptied_before_its_build_fails_it(
    db: Database, ds: str, artifacts: Artifacts
) -> None:
    with pytest.raises(ConflictError, match="has no inputs to version") as refused:
        dataset_versions.create_version(db, "a", ds)
    assert refused.value.code == "EMPTY_DATASET" and dataset_versions.list_versions(db, "a", ds).items == []
    _upload(db, examples(2))
    pending = dataset_versions.create_version(db, "a", ds)
    datasets.delete_inputs(db, "a", ds)  # emptied between the request's check and its build
    version = dataset_versions.build_version(db, artifacts, pending.id)
    assert version.state == DatasetVersionState.FAILURE
    assert version.message == "the dataset has no inputs to version"
    assert not list((artifacts.root / "dataset-versions").glob("*"))
    with pytest.raises(ConflictError):
        list(dataset_versions.read_snapshot(artifacts, version))


def test_deleting_a_dataset_returns_its_files(db: Database, ds: str, artifacts: Artifacts) -> None:
    _upload(db, examples(2))
    version = _version(db, artifacts)
    [upload] = datasets.list_uploads(db, "a", ds)
    # the raw upload goes too, found from its id and the user's file name ("../../etc/passwd": no extension)
    assert datasets.delete_dataset(db, "a", ds) == [version.artifact_path, f"uploads/{upload.id}"]
    with pytest.raises(NotFoundError):
        dataset_versions.get_version_by_id(db, version.id)


def test_a_restart_removes_raw_uploads_no_upload_names_and_only_those(
    db: Database, ds: str, artifacts: Artifacts
) -> None:
    """Datasets deleted before deletion took their raw files along left them in uploads/ for good."""
    datasets.add_upload(db, "a", ds, report_for(examples(2)), examples(2), source_file="rows.csv", upload_id="live1")
    uploads = artifacts.root / UPLOADS
    uploads.mkdir(parents=True)
    live = uploads / "live1.csv"  # the dataset still has this upload
    orphans = [uploads / "gone1.csv", uploads / "gone2"]  # with and without the file name's extension
    fresh = uploads / "storing1.txt"  # kept a moment ago: another server is storing its upload row
    foreign = uploads / "Notes.txt"  # no upload id: not tuneloom's file
    for path in (live, *orphans, fresh, foreign):
        path.write_text("prompt ### completion\n", encoding="utf-8")
    long_ago = time.time() - 2 * ORPHAN_GRACE_S
    for path in (live, *orphans, foreign):
        os.utime(path, (long_ago, long_ago))

    recovered = recover_after_crash(db, artifacts)
    assert sorted(recovered.orphaned_uploads) == ["uploads/gone1.csv", "uploads/gone2"]
    assert not any(path.exists() for path in orphans)
    assert live.is_file() and fresh.is_file() and foreign.is_file()
