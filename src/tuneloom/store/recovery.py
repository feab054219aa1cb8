"""What `tuneloom serve` tidies on start after a crash (a `kill -9`, a power cut), before it answers anyone.

A dataset version is built inside one request: PENDING → IN_PROGRESS → READY or FAILURE. A server
killed in between leaves the row unfinished forever and perhaps its snapshot file renamed into
place but never declared READY; an upload killed while streaming leaves its `.part` file, and an
atomic write its temporary file in `tmp/`. None of these is ever visible as data: the versions are
marked FAILURE with the reason (their files removed), the half files are deleted, and the same
upload or version can simply be made again.

This assumes one API server per database and data dir (workers never build versions or take
uploads): at its start, nothing can still be building.

Kept uploads whose upload row is gone are deleted too: their dataset or app was deleted by a version
that left raw uploads behind, or a crash came between keeping the file and storing its upload. Only
a file named by a well-formed upload id that no row has is removed, and only once it is older than
`ORPHAN_GRACE_S`, so an upload another server on the same data dir is just storing keeps its file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from tuneloom.store.artifacts import TMP, UPLOADS, Artifacts
from tuneloom.store.db import Database
from tuneloom.store.ids import ID_PATTERN
from tuneloom.store.models import DatasetVersion, Upload, utcnow
from tuneloom.store.models import DatasetVersionState as State

INTERRUPTED = "interrupted: the server stopped while this version was being built; create a new version"
ORPHAN_GRACE_S = 3600.0  # far longer than parsing and storing one upload takes


@dataclass
class Recovered:
    """What was tidied, for the start-up log."""

    failed_versions: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    orphaned_uploads: list[str] = field(default_factory=list)


def recover_after_crash(db: Database, artifacts: Artifacts) -> Recovered:
    recovered = Recovered(failed_versions=fail_unfinished_versions(db, artifacts))
    recovered.removed_files = remove_partial_files(artifacts)
    recovered.orphaned_uploads = remove_orphaned_uploads(db, artifacts)
    return recovered


def fail_unfinished_versions(db: Database, artifacts: Artifacts) -> list[str]:
    """Mark versions left PENDING or IN_PROGRESS as FAILURE and remove any snapshot file they left."""
    unfinished = (State.PENDING.value, State.IN_PROGRESS.value)
    with db.write() as session:
        versions = list(session.scalars(select(DatasetVersion).where(DatasetVersion.state.in_(unfinished))))
        for version in versions:
            version.state = State.FAILURE.value
            version.message = INTERRUPTED
            version.finished_at = utcnow()
            version.artifact_path = None
    for version in versions:
        artifacts.dataset_version_file(version.id).unlink(missing_ok=True)
    return [version.id for version in versions]


def remove_partial_files(artifacts: Artifacts) -> list[str]:
    """Delete uploads that never finished streaming and temporary files of interrupted atomic writes."""
    leftovers = [*artifacts.root.joinpath(UPLOADS).glob("*.part"), *artifacts.root.joinpath(TMP).glob("*")]
    removed = []
    for path in leftovers:
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(artifacts.relative(path))
    return removed


def remove_orphaned_uploads(db: Database, artifacts: Artifacts, *, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
    """Delete kept upload files that no upload row names (see the module docstring for when they arise).

    The files are listed before the ids are read, so a file kept after the query cannot be taken for
    an orphan; a symlink, a name that is no upload id, or a file younger than `grace_s` is left alone.
    """
    folder = artifacts.root / UPLOADS
    if not folder.is_dir():
        return []
    cutoff = time.time() - grace_s
    candidates = {path: upload_id for path in folder.iterdir() if (upload_id := _old_upload_id(path, cutoff))}
    if not candidates:
        return []
    ids = sorted(set(candidates.values()))
    with db.read() as session:  # in slices: a query takes a bounded number of parameters
        known = {
            found
            for start in range(0, len(ids), 500)
            for found in session.scalars(select(Upload.id).where(Upload.id.in_(ids[start : start + 500])))
        }
    removed = []
    for path, upload_id in candidates.items():
        if upload_id not in known:
            path.unlink(missing_ok=True)
            removed.append(artifacts.relative(path))
    return removed


def _old_upload_id(path: Path, cutoff: float) -> str | None:
    """The upload id a kept file is named by (`artifacts.kept_upload`), if it is one older than `cutoff`."""
    upload_id, _, extension = path.name.partition(".")
    if extension == "part" or not ID_PATTERN.fullmatch(upload_id) or path.is_symlink() or not path.is_file():
        return None
    return upload_id if path.stat().st_mtime < cutoff else None
