"""Dataset versions: immutable, content-hashed snapshots of a dataset's inputs, written as JSONL files.

`create_version` records a PENDING version (a dataset with no inputs is refused); `build_version`
(run by the server right away or in the background for big datasets) copies the inputs, in `seq`
order and from one consistent read, into `dataset-versions/<id>.jsonl`, and marks it READY with its
hash and stats — or FAILURE with a message. The file is written to a temporary name and renamed,
then made read-only (and published to the shared artifact store, when there is one, before it is READY); a READY
row refuses any change (an ORM guard in `models`), so a training run always sees exactly what was versioned.

Several servers may share the database and data dir, so a build is owned: claiming it records its
builder and a heartbeat (`store.builders`), and it ends READY or FAILURE only by a compare-and-set
on (IN_PROGRESS, builder). A build failed meanwhile as abandoned (`store.recovery`: its heartbeat
went stale, or its builder looked gone) keeps that FAILURE; its result is discarded, file included.

The content hash is SHA-256 over the ordered (prompt, completion) pairs, each encoded as a compact
JSON array plus a newline: unambiguous (no separator can be forged inside a field) and independent
of ids, times and file layout, so two versions with the same examples have the same hash.
`verify_snapshot` recomputes it before training reads the file, so a damaged snapshot (a flipped
bit, an edited line) fails the run with the file named instead of training on changed data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneloom.data.types import Example
from tuneloom.errors import DiskFullError, TuneloomError
from tuneloom.store.artifacts import DATASET_VERSIONS, Artifacts
from tuneloom.store.builders import THIS_PROCESS
from tuneloom.store.datasets import find_dataset, iter_examples
from tuneloom.store.db import Database
from tuneloom.store.ids import ConflictError, NotFoundError, check_id, new_id
from tuneloom.store.models import DatasetVersion, Input, ModelVersion, utcnow
from tuneloom.store.models import DatasetVersionState as State
from tuneloom.store.paging import DEFAULT_PAGE, Page, newest_first
from tuneloom.store.registry import refuse_while_a_run_needs

TokenLength = Callable[[str, str], int]
log = logging.getLogger(__name__)


class DamagedSnapshotError(TuneloomError):
    """A READY version's snapshot file no longer holds what was versioned (or cannot be read)."""

    code = "DAMAGED_DATASET_VERSION"


def content_hash(pairs: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for prompt, completion in pairs:
        digest.update(_pair_bytes(prompt, completion))
    return digest.hexdigest()


def create_version(db: Database, app_id: str, dataset_id: str) -> DatasetVersion:
    """A PENDING version for `build_version`; a dataset with no inputs is refused (409 `EMPTY_DATASET`).

    Refused up front rather than built into a FAILURE row: with nothing to snapshot there is no version
    to keep, and the user needs to know what to do. (Inputs deleted after this still fail the build.)
    """
    with db.write() as session:
        dataset = find_dataset(session, app_id, dataset_id)
        if session.scalar(select(Input.seq).where(Input.dataset_pk == dataset.pk).limit(1)) is None:
            raise ConflictError(
                f"dataset '{dataset_id}' has no inputs to version (nothing was uploaded to it, or every input "
                f"was deleted): upload a file to it first (POST /api/apps/{app_id}/datasets/{dataset_id}/uploads, "
                "Dataset.upload_file in the SDK, or the Upload panel of the dataset's page in the web console)",
                code="EMPTY_DATASET",
            )
        version = DatasetVersion(id=new_id(), dataset_pk=dataset.pk, state=State.PENDING.value, heartbeat_at=utcnow())
        session.add(version)
    return version


def get_version(db: Database, app_id: str, dataset_id: str, version_id: str) -> DatasetVersion:
    with db.read() as session:
        dataset = find_dataset(session, app_id, dataset_id)
        return _find(session, version_id, dataset.pk)


def get_version_by_id(db: Database, version_id: str) -> DatasetVersion:
    """For workers, which know only the id a training job names."""
    with db.read() as session:
        return _find(session, version_id)


def list_versions(
    db: Database, app_id: str, dataset_id: str, *, limit: int = DEFAULT_PAGE, before: str | None = None
) -> Page[DatasetVersion]:
    """Newest first (the one to train on is usually the latest), a page at a time (`store.paging`)."""
    with db.read() as session:
        dataset = find_dataset(session, app_id, dataset_id)
        condition = DatasetVersion.dataset_pk == dataset.pk
        return newest_first(session, DatasetVersion, condition, limit=limit, before=before)


def delete_version(db: Database, app_id: str, dataset_id: str, version_id: str) -> list[str]:
    """Delete a finished version; returns its snapshot's path for the caller to remove once committed.

    Refused (409) while a queued or training run trains on it (that run would fail later, or lose its
    data file mid-training) and while it is being built (the build would finish into a missing row).
    The dataset's row is locked as `delete_dataset` and `jobs.enqueue` lock it, so a `train` call
    naming this version either is seen here or finds the version gone. Trained versions made from
    it keep their weights; their `dataset_version_id` becomes null.
    """
    with db.write() as session:
        dataset = find_dataset(session, app_id, dataset_id, lock=True)
        version = _find(session, version_id, dataset.pk)
        if version.state in (State.PENDING.value, State.IN_PROGRESS.value):
            raise ConflictError(
                f"dataset version '{version_id}' is still being built ({version.state}); "
                "delete it once it is READY or FAILURE"
            )
        needs = f"dataset version '{version_id}' is what {{run}} trains on"
        refuse_while_a_run_needs(session, ModelVersion.dataset_version_id == version.id, needs, "the version")
        paths = [version.artifact_path] if version.artifact_path else []
        session.delete(version)
    return paths


def build_version(
    db: Database,
    artifacts: Artifacts,
    version_id: str,
    *,
    builder: str = THIS_PROCESS,
    token_length: TokenLength | None = None,
) -> DatasetVersion:
    """Snapshot the inputs into the version's file and mark it READY (or FAILURE, with why).

    Only a PENDING version is built; a second caller finds it IN_PROGRESS and gets ConflictError.
    `builder` owns the build: a server keeps its heartbeat fresh meanwhile (`renew_builds`). If the
    build was failed as abandoned before it ended, the version is returned as that FAILURE. A full
    disk is a FAILURE too, and raised as `DiskFullError` (the server's 507) once recorded.
    """
    with db.write() as session:
        claimed = session.execute(
            update(DatasetVersion)
            .where(DatasetVersion.id == check_id(version_id, "dataset version id"))
            .where(DatasetVersion.state == State.PENDING.value)
            .values(state=State.IN_PROGRESS.value, builder=builder, heartbeat_at=utcnow())
        ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        raise ConflictError(f"dataset version '{version_id}' is not PENDING (already built or being built)")
    target = artifacts.dataset_version_file(version_id)
    stats = _Stats(token_length)
    finish = functools.partial(_finish, db, artifacts, version_id, builder)
    try:
        with db.read(snapshot=True) as session, artifacts.storing(f"the snapshot of dataset version '{version_id}'"):
            dataset_pk = _find(session, version_id).dataset_pk
            artifacts.write_atomic(target, stats.lines(iter_examples(session, dataset_pk)))
    except DiskFullError as err:  # FAILURE saying so, and raised: the server's disk, not the data, is at fault
        finish(State.FAILURE, message=err.message)
        raise
    except (OSError, UnicodeError, ValueError) as err:
        return finish(State.FAILURE, message=f"could not write the snapshot: {err}")
    if stats.count == 0:
        target.unlink(missing_ok=True)
        return finish(State.FAILURE, message="the dataset has no inputs to version")
    os.chmod(target, 0o444)
    try:  # on the shared store before anyone sees READY: a worker elsewhere fetches it from there
        artifacts.publish(artifacts.relative(target))
    except TuneloomError as err:
        return finish(State.FAILURE, message=err.message)
    return finish(
        State.READY,
        content_hash=stats.digest.hexdigest(),
        example_count=stats.count,
        stats=stats.to_dict(),
        artifact_path=artifacts.relative(target),
    )


def renew_builds(db: Database, builder: str, version_ids: Collection[str], *, now: datetime | None = None) -> None:
    """Refresh the heartbeat of the builds `builder` still runs (one failed as abandoned stays failed)."""
    if not version_ids:
        return
    with db.write() as session:
        session.execute(
            update(DatasetVersion)
            .where(DatasetVersion.id.in_(list(version_ids)), DatasetVersion.builder == builder)
            .where(DatasetVersion.state == State.IN_PROGRESS.value)
            .values(heartbeat_at=now or utcnow())
        )


def discard_snapshot(artifacts: Artifacts, version_id: str) -> None:
    """Remove an unfinished version's snapshot, here and on the shared store: no READY row will name it."""
    relative = f"{DATASET_VERSIONS}/{check_id(version_id, 'dataset version id')}.jsonl"  # a link there: not followed
    try:
        artifacts.delete(relative)
    except TuneloomError as err:  # a copy left on the shared store is logged, never a failed request or start
        log.warning("could not remove %s: %s", relative, err.message)


def read_snapshot(artifacts: Artifacts, version: DatasetVersion) -> Iterator[Example]:
    """The version's examples as the training engine takes them (`line` is the snapshot's line)."""
    if version.state != State.READY.value or not version.artifact_path:
        raise ConflictError(f"dataset version '{version.id}' is {version.state}, not READY")
    with artifacts.resolve(version.artifact_path).open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            row = json.loads(text)
            yield Example(prompt=row["prompt"], completion=row["completion"], line=number)


def verify_snapshot(artifacts: Artifacts, version: DatasetVersion) -> None:
    """Check the snapshot file against the version's content hash and count; raise naming the file if not."""
    if version.state != State.READY.value or not version.artifact_path:
        raise ConflictError(f"dataset version '{version.id}' is {version.state}, not READY")
    name = version.artifact_path
    damaged = f"dataset version '{version.id}' is damaged: its snapshot file {name}"
    digest, count = hashlib.sha256(), 0
    try:
        with artifacts.resolve(name).open("rb") as handle:
            for count, raw in enumerate(handle, 1):
                digest.update(_pair_bytes(*_snapshot_pair(raw, f"{damaged}, line {count}")))
    except OSError as err:
        raise DamagedSnapshotError(f"{damaged} cannot be read ({err.strerror or err})") from None
    if count != version.example_count or digest.hexdigest() != version.content_hash:
        raise DamagedSnapshotError(f"{damaged} does not match its SHA-256 content hash (it changed after versioning)")


def _snapshot_pair(raw: bytes, where: str) -> tuple[str, str]:
    try:
        row = json.loads(raw)
        prompt, completion = row["prompt"], row["completion"]
    except (ValueError, KeyError, TypeError):
        raise DamagedSnapshotError(f"{where} is not a valid example") from None
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DamagedSnapshotError(f"{where} is not a valid example")
    return prompt, completion


def _finish(
    db: Database, artifacts: Artifacts, version_id: str, builder: str, state: State, **values: Any
) -> DatasetVersion:
    """End the build as `state` if `builder` still owns it; else discard its result and return the row as it is."""
    with db.write() as session:
        owned = session.execute(
            update(DatasetVersion)
            .where(DatasetVersion.id == version_id, DatasetVersion.builder == builder)
            .where(DatasetVersion.state == State.IN_PROGRESS.value)
            .values(state=state.value, finished_at=utcnow(), **values)
        ).rowcount  # type: ignore[attr-defined]
    if not owned:
        discard_snapshot(artifacts, version_id)
    return get_version_by_id(db, version_id)


def _find(session: Session, version_id: str, dataset_pk: int | None = None) -> DatasetVersion:
    version = session.get(DatasetVersion, check_id(version_id, "dataset version id"))
    if version is None or (dataset_pk is not None and version.dataset_pk != dataset_pk):
        raise NotFoundError(f"dataset version '{version_id}' not found", details={"key": "version_id"})
    return version


def _pair_bytes(prompt: str, completion: str) -> bytes:
    return json.dumps([prompt, completion], ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class _Stats:
    """Count, hash and length aggregates gathered while the snapshot streams to disk (one pass, O(1) memory)."""

    def __init__(self, token_length: TokenLength | None):
        self.digest = hashlib.sha256()
        self.count = 0
        self.token_length = token_length
        self.lengths: dict[str, _Range] = {"prompt_chars": _Range(), "completion_chars": _Range(), "tokens": _Range()}

    def lines(self, pairs: Iterable[tuple[str, str]]) -> Iterator[bytes]:
        for prompt, completion in pairs:
            self.digest.update(_pair_bytes(prompt, completion))
            self.count += 1
            self.lengths["prompt_chars"].add(len(prompt))
            self.lengths["completion_chars"].add(len(completion))
            if self.token_length is not None:
                self.lengths["tokens"].add(self.token_length(prompt, completion))
            row = {"prompt": prompt, "completion": completion}
            yield json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"examples": self.count}
        out.update({name: r.to_dict() for name, r in self.lengths.items() if r.count})
        return out


class _Range:
    def __init__(self) -> None:
        self.count = self.total = 0
        self.low: int | None = None
        self.high: int | None = None

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def to_dict(self) -> dict[str, Any]:
        return {"min": self.low, "mean": round(self.total / self.count, 2), "max": self.high}
