"""What `tuneloom serve` tidies on start after a crash (a `kill -9`, a power cut), before it answers anyone.

A dataset version is built inside one request: PENDING → IN_PROGRESS → READY or FAILURE. A server
killed in between leaves the row unfinished forever and perhaps its snapshot file renamed into
place but never declared READY; an upload killed while streaming leaves its `.part` file, and an
atomic write its temporary file in `tmp/`. None of these is ever visible as data: the versions are
marked FAILURE with the reason (their files removed), the half files are deleted, and the same
upload or version can simply be made again.

This assumes one API server per database and data dir (workers never build versions or take
uploads): at its start, nothing can still be building.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from tuneloom.store.artifacts import TMP, UPLOADS, Artifacts
from tuneloom.store.db import Database
from tuneloom.store.models import DatasetVersion, utcnow
from tuneloom.store.models import DatasetVersionState as State

INTERRUPTED = "interrupted: the server stopped while this version was being built; create a new version"


@dataclass
class Recovered:
    """What was tidied, for the start-up log."""

    failed_versions: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)


def recover_after_crash(db: Database, artifacts: Artifacts) -> Recovered:
    recovered = Recovered(failed_versions=fail_unfinished_versions(db, artifacts))
    recovered.removed_files = remove_partial_files(artifacts)
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
