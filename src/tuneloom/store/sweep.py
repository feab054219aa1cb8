"""`tuneloom store sweep`: files no database row accounts for, listed (a dry run) or removed.

Two places leak. The data dir keeps what a crash or a failed delete left: partial uploads, staging
in `tmp/`, a start's write check (`.write-check-*`), and raw uploads, snapshots, model-version and
checkpoint folders whose row is gone — what a server removes at its start (`store.recovery`), which
a worker's data dir never gets. The shared store (`--artifact-url`) keeps what nothing ever removes:
a version whose delete could not reach it (logged, not failed), a publish cut short (a dataset
version failed because the store refused its snapshot, a run that died publishing or gave up), the
write check of a start that stopped half-way.

Never removed:
- anything changed within the grace period (default 24 h): an upload, fetch or publish in flight
  keeps writing, and a folder or an artifact counts as changed when any file of it did;
- in the data dir, an entry whose row exists (a cached copy; the kept files of a run whose publish
  failed, for `tuneloom store republish`);
- on the store, an artifact a row names (`artifact_path`) or may still name: a dataset version being
  built, a run queued or training, a run waiting to be republished (`store.republish`);
- anything outside tuneloom's layout (a name that is no id, a folder of someone else's).

Rows are read after the listing, as in `store.recovery`: a row is stored before any of its files, so
whatever was listed is judged against rows at least as new. With `delete`, a store artifact's age is
read again just before it goes (listing a big bucket takes a while), and its index goes first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneloom.store.artifacts import (
    CHECKPOINTS,
    DATA_DIR_PROBE,
    DATASET_VERSIONS,
    EXPORTS,
    MODEL_VERSIONS,
    UPLOADS,
    Artifacts,
)
from tuneloom.store.db import Database
from tuneloom.store.ids import ID_PATTERN
from tuneloom.store.models import QUEUED, RUNNING, DatasetVersion, ModelVersion
from tuneloom.store.recovery import (
    UNFINISHED,
    UPLOAD_FILES,
    VERSION_ARTIFACTS,
    delete_entry,
    find_orphans,
    find_partial_files,
    rows_with_ids,
)
from tuneloom.store.republish import awaits_republish
from tuneloom.store.shared import INDEX_SUFFIX, PROBE_PREFIX, ArtifactStore, ArtifactStoreError

DEFAULT_GRACE_S = 24 * 3600.0
ROW_NAMES = {
    UPLOADS: "upload",
    DATASET_VERSIONS: "dataset version",
    MODEL_VERSIONS: "model version",
    CHECKPOINTS: "model version",
    EXPORTS: "model version",
}


@dataclass(frozen=True)
class Orphan:
    """One entry no row accounts for: where (the data dir, or the store's URL), its path there (as the
    database would store it), its files, bytes, newest change (seconds since the epoch) and why."""

    where: str
    path: str
    files: int
    size: int
    modified: float | None
    why: str


@dataclass
class Swept:
    """What was found and, with `delete`, removed; `kept` holds those that could not be, and why."""

    found: list[Orphan] = field(default_factory=list)
    removed: list[Orphan] = field(default_factory=list)
    kept: list[tuple[Orphan, str]] = field(default_factory=list)

    def record(self, orphan: Orphan, why_kept: str | None) -> None:
        """A removal's outcome: None when `orphan` is gone, else why it is still there."""
        if why_kept is None:
            self.removed.append(orphan)
        else:
            self.kept.append((orphan, why_kept))


def sweep(db: Database, artifacts: Artifacts, *, grace_s: float = DEFAULT_GRACE_S, delete: bool = False) -> Swept:
    """Find the orphans of the data dir and, if `artifacts` has one, the shared store; remove them with `delete`."""
    swept = Swept()
    for orphan, path in _data_dir_orphans(db, artifacts, grace_s):
        swept.found.append(orphan)
        if delete:
            swept.record(orphan, None if delete_entry(path) else "could not be removed (see the warning above)")
    store = artifacts.shared
    if store is None:
        return swept
    for orphan in _store_orphans(db, store, grace_s):
        swept.found.append(orphan)
        if delete:
            swept.record(orphan, _remove_from_store(store, orphan, grace_s))
    return swept


def _data_dir_orphans(db: Database, artifacts: Artifacts, grace_s: float) -> list[tuple[Orphan, Path]]:
    """The entries a server's start-up tidy would remove with this grace (`store.recovery`), measured by the
    one walk that found them old enough (`recovery.survey`)."""
    found = [(entry, _why_partial(entry.path)) for entry in find_partial_files(artifacts, grace_s=grace_s)]
    for kept in (UPLOAD_FILES, *VERSION_ARTIFACTS):
        why = f"no {ROW_NAMES[kept.folder]} has this id"
        found += [(entry, why) for entry in find_orphans(db, artifacts, kept, grace_s=grace_s)]
    where = str(artifacts.root)
    return [(Orphan(where, artifacts.relative(e.path), e.files, e.size, e.newest, why), e.path) for e, why in found]


def _why_partial(path: Path) -> str:
    if path.name.startswith(DATA_DIR_PROBE):
        return "a write check left by a command that stopped while checking the data dir"
    return "left by an interrupted upload, write or fetch"


@dataclass(frozen=True)
class _Artifact:
    path: str
    files: int
    size: int
    modified: float | None


def _store_orphans(db: Database, store: ArtifactStore, grace_s: float) -> list[Orphan]:
    """Artifacts on the store unchanged for `grace_s` that no row names or may still name."""
    cutoff = time.time() - grace_s
    old = [a for a in _artifacts(store.objects()) if a.modified is not None and a.modified < cutoff]
    whys = _why_orphaned(db, [a.path for a in old])
    return [Orphan(store.url or "", a.path, a.files, a.size, a.modified, whys[a.path]) for a in old if a.path in whys]


def _why_orphaned(db: Database, paths: list[str]) -> dict[str, str]:
    """Why each orphan among `paths` is one; a path in tuneloom's layout that a row accounts for, or a
    path outside that layout, is not in the answer."""
    named: dict[str, dict[str, str]] = {DATASET_VERSIONS: {}, MODEL_VERSIONS: {}}  # folder → id → path
    whys: dict[str, str] = {}
    for path in paths:
        folder, _, name = path.partition("/")
        if not name and folder.startswith(PROBE_PREFIX):
            whys[path] = "a write check left by a `serve` or `worker` start that stopped half-way"
        elif (row_id := _row_id(folder, name)) is not None:
            named[folder][row_id] = path
    owners = {folder: _owners(db, folder, ids) for folder, ids in named.items()}
    for folder, ids in named.items():
        for row_id, path in ids.items():
            owner = owners[folder].get(row_id)
            if owner is None:
                whys[path] = f"no {ROW_NAMES[folder]} has this id"
            elif owner.artifact_path != path and not owner.may_publish:
                whys[path] = f"its {ROW_NAMES[folder]} is {owner.status} and names no file here"
    return whys


@dataclass(frozen=True)
class _Owner:
    """What a store artifact's row says: the file it names, its status, and whether it may still publish
    there (a version being built, a run queued, training or waiting to be republished)."""

    artifact_path: str | None
    status: str
    may_publish: bool


def _owners(db: Database, folder: str, ids: Iterable[str]) -> dict[str, _Owner]:
    if folder == DATASET_VERSIONS:
        columns = (DatasetVersion.id, DatasetVersion.state, DatasetVersion.artifact_path)
        return {
            row.id: _Owner(row.artifact_path, row.state, row.state in UNFINISHED)
            for row in rows_with_ids(db, columns, ids)
        }
    run_columns = (ModelVersion.id, ModelVersion.status, ModelVersion.artifact_path, ModelVersion.message)
    return {
        row.id: _Owner(
            row.artifact_path, row.status, row.status in (QUEUED, RUNNING) or awaits_republish(row.status, row.message)
        )
        for row in rows_with_ids(db, run_columns, ids)
    }


def _row_id(folder: str, name: str) -> str | None:
    """The id a store artifact is named by (`dataset-versions/<id>.jsonl`, `model-versions/<id>`), or None."""
    if folder == DATASET_VERSIONS and name.endswith(".jsonl"):
        name = name.removesuffix(".jsonl")
    elif folder != MODEL_VERSIONS:
        return None
    return name if ID_PATTERN.fullmatch(name) else None


def _artifacts(objects: dict[str, dict[str, Any]]) -> list[_Artifact]:
    """The store's objects grouped by artifact: `model-versions/<id>/adapter/x` and
    `model-versions/<id>.sha256.json` are both `model-versions/<id>`; a top-level object is itself."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for relative, info in objects.items():
        folder, _, rest = relative.partition("/")
        name, _, inside = rest.partition("/")
        artifact = f"{folder}/{name}" if inside else relative.removesuffix(INDEX_SUFFIX)
        grouped.setdefault(artifact, []).append(info)
    found = []
    for path, infos in sorted(grouped.items()):
        times = [_modified(info) for info in infos]
        newest = None if None in times else max(t for t in times if t is not None)
        found.append(_Artifact(path, len(infos), sum(int(info.get("size") or 0) for info in infos), newest))
    return found


def _modified(info: dict[str, Any]) -> float | None:
    """When an object last changed (seconds since the epoch) under whatever name its file system gives
    it (`mtime` locally, `LastModified` on S3, `updated` on GCS); None (never swept) when it says nothing."""
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _remove_from_store(store: ArtifactStore, orphan: Orphan, grace_s: float) -> str | None:
    """Remove one orphan from the store, its age read again first; None when removed, else why not."""
    try:
        now = _artifacts(store.objects(orphan.path))
        cutoff = time.time() - grace_s
        if any(a.modified is None or a.modified >= cutoff for a in now):
            return "changed since it was listed; kept"
        store.remove_shared(orphan.path)
    except ArtifactStoreError as err:
        return err.message
    return None
