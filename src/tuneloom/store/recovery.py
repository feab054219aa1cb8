"""What `tuneloom serve` tidies on start after a crash (a `kill -9`, a power cut), before it answers anyone.

A dataset version is built inside one request: PENDING → IN_PROGRESS → READY or FAILURE. A server
killed in between leaves the row unfinished and perhaps its snapshot file renamed into place but
never declared READY; an upload killed while streaming leaves its `.part` file, and an atomic write
or a shared-store fetch its staging file or folder in `tmp/`. None of these is ever visible as data:
abandoned versions are marked FAILURE with the reason (their files removed), the half files are
deleted (once past the grace below), and the same upload or version can simply be made again. A
start killed between writing and deleting its write check (`prepare_data_dir`) leaves that empty
file at the data dir's top; it goes the same way.

Files whose row is gone are deleted too: raw uploads, dataset-version snapshots, model-version
folders and checkpoint folders left by a crash between the delete's commit and the file's removal,
by a delete of an older version that left raw uploads behind, or by a crash between keeping an
upload and storing its row. Only an entry named by a well-formed id that no row has is removed,
never a symlink, and only from the local data dir: with `--artifact-url` it is this machine's cache;
the shared store is swept only on request (`tuneloom store sweep`, `store.sweep`).

Several servers may share one data dir: generation nodes (`serve --advertise-url`) and the
`--backend remote` server in front of them are full API servers, and `tests/test_remote_generation.py`
runs two nodes (and the API server) on one data dir and database, beside `tuneloom worker`s that stage
writes and fetches in `tmp/`. Any of them may be streaming an upload, staging a file or storing an
upload row while another one starts. So every file removed here must also be older than
`ORPHAN_GRACE_S`: a live upload or fetch keeps writing to its file, a folder counts
as changed when anything inside it did, and a crash's leftover goes at the first start an hour after.
The ids are read after the entries are listed, so a row stored meanwhile is seen. A version's or a
run's row exists before any of its files (a queued or training run's checkpoints and model-version
folder always have theirs); an upload's file is kept a moment before its row, which the grace covers.

An unfinished version may likewise be another live server's build, so only abandoned ones are
failed (`fail_abandoned_versions`): silent for longer than `BUILD_LEASE_S`, or built by a process
that is certainly gone (`store.builders`: a server restarting after its own crash fails its builds
at once). Every server also runs that check periodically (`tuneloom.server.builds`), so a crashed
server's builds end within the lease even if it never restarts.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import InstrumentedAttribute

from tuneloom.store.artifacts import (
    CHECKPOINTS,
    DATA_DIR_PROBE,
    DATASET_VERSIONS,
    EXPORTS,
    MODEL_VERSIONS,
    TMP,
    UPLOADS,
    Artifacts,
)
from tuneloom.store.builders import BUILD_LEASE_S, THIS_PROCESS, is_gone
from tuneloom.store.dataset_versions import discard_snapshot
from tuneloom.store.db import Database
from tuneloom.store.ids import ID_PATTERN
from tuneloom.store.models import DatasetVersion, ModelVersion, Upload, utcnow
from tuneloom.store.models import DatasetVersionState as State

INTERRUPTED = "interrupted: the server stopped while this version was being built; create a new version"
UNFINISHED = (State.PENDING.value, State.IN_PROGRESS.value)
ORPHAN_GRACE_S = 3600.0  # far longer than a live upload, fetch or row insert goes without writing
KEPT_UPLOAD_NAME = re.compile(r"(?P<id>[^.]+)(\.[a-z0-9]{1,10})?")  # `artifacts.kept_upload`
QUERY_SLICE = 500  # ids per query: a query takes a bounded number of parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """One kind of entry the data dir keeps per row: its folder, the column holding the row ids, and
    `id_of`, which gives the id an entry is named by (None: not such an entry, never removed)."""

    folder: str
    id_column: InstrumentedAttribute[str]
    id_of: Callable[[Path], str | None]


def _upload_id(path: Path) -> str | None:
    """`<upload id>` or `<upload id>.<ext>` (a kept upload); never `.part`, which is a partial file."""
    name = KEPT_UPLOAD_NAME.fullmatch(path.name)
    return name["id"] if name and path.suffix != ".part" and path.is_file() else None


def _named(suffix: str, *, folder: bool) -> Callable[[Path], str | None]:
    """The rule for entries named `<id><suffix>` that are folders (or, without `folder`, files)."""

    def id_of(path: Path) -> str | None:
        kind = path.is_dir() if folder else path.is_file()
        return path.name.removesuffix(suffix) if kind and path.name.endswith(suffix) else None

    return id_of


UPLOAD_FILES = Kept(UPLOADS, Upload.id, _upload_id)
VERSION_ARTIFACTS = (
    Kept(DATASET_VERSIONS, DatasetVersion.id, _named(".jsonl", folder=False)),  # `dataset_version_file`
    Kept(MODEL_VERSIONS, ModelVersion.id, _named("", folder=True)),  # `model_version_dir`
    Kept(CHECKPOINTS, ModelVersion.id, _named("", folder=True)),  # `checkpoint_dir`: named by its run
    Kept(EXPORTS, ModelVersion.id, _named("", folder=True)),  # `server.exports`: a version's downloads
)


@dataclass(frozen=True)
class Entry:
    """A data-dir file or folder as one walk saw it (`survey`): its files and bytes (links counted as
    themselves, never followed), its newest change (seconds since the epoch; None when it was gone), and
    whether part of it vanished while it was read, which counts as a change."""

    path: Path
    files: int
    size: int
    newest: float | None
    vanished: bool

    def unchanged_since(self, cutoff: float) -> bool:
        return not self.vanished and self.newest is not None and self.newest < cutoff


@dataclass
class Recovered:
    """What was tidied, for the start-up log (paths relative to the data dir)."""

    failed_versions: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    orphaned_uploads: list[str] = field(default_factory=list)
    orphaned_versions: list[str] = field(default_factory=list)  # snapshots, model versions, checkpoints


def recover_after_crash(db: Database, artifacts: Artifacts, *, grace_s: float = ORPHAN_GRACE_S) -> Recovered:
    recovered = Recovered(failed_versions=fail_abandoned_versions(db, artifacts))
    recovered.removed_files = remove_partial_files(artifacts, grace_s=grace_s)
    recovered.orphaned_uploads = remove_orphans(db, artifacts, UPLOAD_FILES, grace_s=grace_s)
    for kept in VERSION_ARTIFACTS:
        recovered.orphaned_versions += remove_orphans(db, artifacts, kept, grace_s=grace_s)
    return recovered


def fail_abandoned_versions(
    db: Database,
    artifacts: Artifacts,
    *,
    me: str = THIS_PROCESS,
    lease_s: float = BUILD_LEASE_S,
    now: datetime | None = None,
) -> list[str]:
    """Mark FAILURE the PENDING or IN_PROGRESS versions nobody builds any more, remove their snapshots,
    and return their ids. Live builds, this server's and others', are left alone.

    Every server runs this every few seconds, so a plain read decides first whether any build looks
    abandoned; only then are the rows locked and judged again (`FOR UPDATE`; SQLite's write lock, which
    a read of nothing to do would otherwise take from uploads and training telemetry each time), so a
    build that beats or ends meanwhile is judged on its newest row, and its own end then finds the
    FAILURE (`_finish`).
    """
    now = now or utcnow()
    silent_since = now - timedelta(seconds=lease_s)
    unfinished = select(DatasetVersion).where(DatasetVersion.state.in_(UNFINISHED))
    with db.read() as session:
        if not any(_abandoned(v, silent_since, me) for v in session.scalars(unfinished)):
            return []
    with db.write() as session:
        versions = [v for v in session.scalars(unfinished.with_for_update()) if _abandoned(v, silent_since, me)]
        for version in versions:
            version.state = State.FAILURE.value
            version.message = INTERRUPTED
            version.finished_at = now
            version.artifact_path = None
    for version in versions:
        discard_snapshot(artifacts, version.id)
    return [version.id for version in versions]


def _abandoned(version: DatasetVersion, silent_since: datetime, me: str) -> bool:
    """No sign of life since `silent_since` (none at all: made before builds were owned), or a gone builder."""
    if version.heartbeat_at is None or version.heartbeat_at < silent_since:
        return True
    return version.builder is not None and is_gone(version.builder, me=me)


def remove_partial_files(artifacts: Artifacts, *, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
    """Delete uploads that never finished streaming, the staging files and folders of interrupted
    writes and fetches, and the write checks of interrupted starts, once older than `grace_s` (younger
    ones may be another process's, in flight)."""
    found = find_partial_files(artifacts, grace_s=grace_s)
    return [artifacts.relative(entry.path) for entry in found if delete_entry(entry.path)]


def find_partial_files(artifacts: Artifacts, *, grace_s: float) -> list[Entry]:
    """The `.part` uploads, `tmp/` staging entries and top-level write checks (`prepare_data_dir`)
    unchanged for `grace_s` (what `remove_partial_files` deletes), as their age check saw them."""
    cutoff = time.time() - grace_s
    leftovers = [
        *_entries(artifacts, UPLOADS, "*.part"),
        *_entries(artifacts, TMP, "*"),
        *_entries(artifacts, "", f"{DATA_DIR_PROBE}*"),
    ]
    return [entry for path in leftovers if (entry := survey(path)).unchanged_since(cutoff)]


def remove_orphans(db: Database, artifacts: Artifacts, kept: Kept, *, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
    """Delete the entries of `kept.folder` named by an id no row has, once older than `grace_s`."""
    found = find_orphans(db, artifacts, kept, grace_s=grace_s)
    return [f"{kept.folder}/{entry.path.name}" for entry in found if delete_entry(entry.path)]


def find_orphans(db: Database, artifacts: Artifacts, kept: Kept, *, grace_s: float) -> list[Entry]:
    """The entries of `kept.folder` named by an id no row has, unchanged for `grace_s`, as their age
    check saw them.

    The entries are listed before the ids are read (see the module docstring for why that order).
    """
    cutoff = time.time() - grace_s
    candidates = [
        (entry, row_id)
        for path in _entries(artifacts, kept.folder, "*")
        if (row_id := kept.id_of(path))
        and ID_PATTERN.fullmatch(row_id)
        and (entry := survey(path)).unchanged_since(cutoff)
    ]
    known = {row[0] for row in rows_with_ids(db, (kept.id_column,), {row_id for _, row_id in candidates})}
    return [entry for entry, row_id in candidates if row_id not in known]


def _entries(artifacts: Artifacts, folder: str, pattern: str) -> list[Path]:
    """The entries of one data-dir folder matching `pattern`, symlinks left out (a linked folder too)."""
    where = artifacts.root / folder
    if where.is_symlink() or not where.is_dir():
        return []
    return [path for path in where.glob(pattern) if not path.is_symlink()]


def rows_with_ids(db: Database, columns: Sequence[InstrumentedAttribute[Any]], ids: Iterable[str]) -> list[Row[Any]]:
    """`columns` of the rows whose id (the first of `columns`) is one of `ids`, a slice of ids per query
    (a query takes a bounded number of parameters)."""
    id_column, wanted = columns[0], sorted(ids)
    found: list[Row[Any]] = []
    with db.read() as session:
        for start in range(0, len(wanted), QUERY_SLICE):
            found += session.execute(select(*columns).where(id_column.in_(wanted[start : start + QUERY_SLICE]))).all()
    return found


def survey(path: Path) -> Entry:
    """Walk `path` once (a folder: everything inside it, links not followed): what the age checks above
    judge it by, and what `tuneloom store sweep` reports of it."""
    statuses = [_lstat(path)]
    top = statuses[0]
    if top is not None and stat.S_ISDIR(top.st_mode):
        inside = (Path(folder, name) for folder, subfolders, files in os.walk(path) for name in (*subfolders, *files))
        statuses += [_lstat(entry) for entry in inside]
    seen = [status for status in statuses if status is not None]
    items = [status for status in seen if not stat.S_ISDIR(status.st_mode)]
    newest = max((status.st_mtime for status in seen), default=None)
    return Entry(path, len(items), sum(status.st_size for status in items), newest, len(seen) < len(statuses))


def _lstat(path: Path) -> os.stat_result | None:
    """The entry's own status (a link's, not its target's); None when it is gone."""
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


def delete_entry(path: Path) -> bool:
    """Remove a file or a folder (links inside it removed, never followed); False, with a warning, if
    it could not be (a start-up tidy must not stop the server)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, onerror=_unless_missing)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        log.warning("could not remove %s: %s", path, err.strerror or err)
        return False
    return True


def _unless_missing(function: Any, name: str, exc_info: Any) -> None:
    """For `rmtree`: an entry already gone (removed by someone else meanwhile) is no error."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
