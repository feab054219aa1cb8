"""Where the platform's files live under the data dir, named from ids and never from user input.

```
<data_dir>/
  tuneloom.db                      the embedded SQLite database (db.default_url)
  secrets/key-pepper               server-side pepper for API-key hashes (keys.load_pepper)
  uploads/<upload_id>.<ext>        an upload as received: .part while it streams in, then the extension
                                   of the user's file name (letters and digits only; none when it has
                                   none) for format detection (kept_upload)
  dataset-versions/<id>.jsonl      a dataset version's examples, one {"prompt", "completion"} per line
  model-versions/<id>/             a finished model-version directory (tuneloom.model_version)
  checkpoints/<id>/                a training run's checkpoints, kept until it finishes
  tmp/                             staging: files are written here and renamed into place
```
The database stores paths relative to the data dir, so the whole folder can move (or be mounted at
another path on a worker machine). Every path goes through `resolve`, which refuses anything that
would land outside the data dir — a `../` id, an absolute path, a symlink pointing elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tuneloom.errors import NO_SPACE_ERRNOS, DiskFullError, TuneloomError
from tuneloom.store.ids import check_id, new_id

if TYPE_CHECKING:
    from tuneloom.store.shared import ArtifactStore

UPLOADS = "uploads"
DATASET_VERSIONS = "dataset-versions"
MODEL_VERSIONS = "model-versions"
CHECKPOINTS = "checkpoints"
EXPORTS = "exports"  # a trained version's downloads, zipped (`server.exports`): a cache, rebuilt when missing
TMP = "tmp"
DATA_DIR_PROBE = ".write-check-"  # `prepare_data_dir`'s file at the data dir's top; one a crash left is swept
PLAIN_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}$")


class UnsafePathError(TuneloomError):
    """A path would leave the data dir; never the result of a legitimate request."""

    code = "UNSAFE_PATH"


class DataDirError(TuneloomError):
    """The data dir cannot be created or written (a read-only disk, a folder owned by someone else)."""

    code = "DATA_DIR_UNUSABLE"


def prepare_data_dir(data_dir: Path, *, writable: bool = True) -> Path:
    """Create the data dir and, with `writable`, prove a file can be written in it, before anything else does.

    An unusable folder otherwise surfaced as an internal error (the OSError of the first mkdir) or as
    SQLite's bare "unable to open database file", neither naming the folder. The probe is an empty
    hidden file, deleted at once.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if writable:
            probe = data_dir / f"{DATA_DIR_PROBE}{new_id()}"
            probe.touch()
            probe.unlink()
    except OSError as err:
        parent = err.filename and not Path(err.filename).is_relative_to(data_dir)  # a folder above it failed
        where = f" ({err.filename})" if parent else ""
        raise DataDirError(
            f"the data dir (--data-dir) {data_dir} cannot be created or written: {err.strerror or err}{where}",
            details={"data_dir": str(data_dir)},
        ) from None
    return data_dir


class Artifacts:
    """Path arithmetic and atomic writes for one data dir."""

    def __init__(self, data_dir: Path | str):
        self.root = Path(data_dir).resolve()
        self.shared: ArtifactStore | None = None  # set by `tuneloom.store.shared.share`

    def fetch(self, relative: str) -> Path:
        """A stored artifact's local path; with a shared store, downloaded and verified first if missing here."""
        return self.shared.fetch(relative) if self.shared else self.resolve(relative)

    def read_member(self, relative: str, name: str) -> bytes:
        """One file of a stored artifact directory; with a shared store and no local copy, only that file
        is downloaded (verified), not the whole artifact (a version's metrics, not its weights)."""
        local = self.resolve(relative)
        if self.shared and not local.exists():
            return self.shared.read_member(relative, name)
        return self.resolve(f"{relative}/{name}").read_bytes()

    def delete(self, relative: str) -> None:
        """A deleted dataset's or model's artifact: gone from here and, with one, from the shared store."""
        if self.shared:
            self.shared.remove(relative)
        else:
            self.remove(relative)

    def publish(self, relative: str) -> None:
        """Copy a finished artifact to the shared store, if there is one (before the database says it exists)."""
        if self.shared:
            self.shared.publish(relative)

    def resolve(self, relative: str | Path) -> Path:
        """The absolute path of `relative` under the data dir; raises if it would escape it."""
        rel = Path(relative)
        if rel.is_absolute():
            raise UnsafePathError(f"artifact path {str(relative)!r} must be relative to the data dir")
        path = (self.root / rel).resolve()
        if path == self.root or not path.is_relative_to(self.root):
            raise UnsafePathError(f"artifact path {str(relative)!r} leaves the data dir")
        return path

    def relative(self, path: Path) -> str:
        """What the database stores: `path` relative to the data dir, with forward slashes."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise UnsafePathError(f"{path} is not inside the data dir {self.root}")
        return resolved.relative_to(self.root).as_posix()

    def upload_file(self, upload_id: str) -> Path:
        """Where an upload streams in; `.part` until it is complete (crash recovery deletes what is left so)."""
        return self.resolve(f"{UPLOADS}/{check_id(upload_id, 'upload id')}.part")

    def dataset_version_file(self, version_id: str) -> Path:
        return self.resolve(f"{DATASET_VERSIONS}/{check_id(version_id, 'dataset version id')}.jsonl")

    def model_version_dir(self, version_id: str) -> Path:
        return self.resolve(f"{MODEL_VERSIONS}/{check_id(version_id, 'model version id')}")

    def checkpoint_dir(self, version_id: str) -> Path:
        return self.resolve(f"{CHECKPOINTS}/{check_id(version_id, 'model version id')}")

    def staging_path(self, suffix: str = "") -> Path:
        """A fresh path in the data dir's tmp folder (same file system, so renames are atomic)."""
        tmp = self.resolve(TMP)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{new_id()}{suffix}"

    @contextmanager
    def storing(self, what: str) -> Iterator[None]:
        """Re-raise a full disk (ENOSPC, EDQUOT) while the block writes `what` as one `DiskFullError` (507).

        The block must leave nothing partial behind, as every writer here does (a `.part` or staging
        file removed on error): the message says so. It names `what`, never the data dir's place,
        which is the server's business.
        """
        try:
            yield
        except OSError as err:
            if err.errno not in NO_SPACE_ERRNOS:
                raise
            raise DiskFullError(
                f"the disk holding the data dir (--data-dir) is full: {what} could not be stored, and nothing "
                f"of it was kept ({err.strerror}). Free some space on it, then try again"
            ) from None

    def write_atomic(self, target: Path, chunks: Iterable[bytes]) -> int:
        """Write `chunks` to a temporary file, fsync, and rename it onto `target`; returns bytes written.

        A reader (or a crash) sees either no file or the complete one, never a prefix.
        """
        target = self.resolve(self.relative(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.staging_path(".tmp")
        size = 0
        try:
            with tmp.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def remove(self, relative: str | None) -> None:
        """Delete a file or folder named by a stored relative path (missing is fine).

        A symlink found in its place is removed itself, never followed: deleting a dataset whose
        snapshot was replaced by a link to /etc/passwd deletes the link and leaves the file alone.
        """
        if not relative:
            return
        parent, name = Path(relative).parent, Path(relative).name
        link = (self.root if parent == Path(".") else self.resolve(parent)) / name
        if name not in ("", ".", "..") and link.is_symlink():
            link.unlink()
            return
        path = self.resolve(relative)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def model_version_files(version_id: str, artifact_path: str | None) -> list[str]:
    """The data-dir paths a deleted model version's files may be at: the artifact its row names, its own
    folder (named as the worker publishes it), its checkpoints and its exports.

    A run that failed to publish names no artifact, yet its folder may hold a partial upload on the
    shared store, or its kept files here; a trained run's artifact is that folder, listed once.
    """
    folder = f"{MODEL_VERSIONS}/{check_id(version_id, 'model version id')}"
    paths = (artifact_path, folder, f"{CHECKPOINTS}/{version_id}", f"{EXPORTS}/{version_id}")
    return list(dict.fromkeys(p for p in paths if p))


def kept_upload(upload_id: str, filename: str) -> str:
    """The data-dir path a complete upload is kept at: its id, with the extension of the user's file name.

    Format detection breaks ties by extension (a CSV whose header names no known column, a .jsonl
    whose first row is not an object), so the server must see the one `tuneloom validate` sees.
    Only a short run of letters and digits is taken from the name: it never shapes the path otherwise.
    Never `.part`, even for a name without an extension: that is what crash recovery deletes.
    The same function finds the file again from the stored upload (id and file name) when its
    dataset is deleted.
    """
    extension = PLAIN_EXTENSION.search(filename)
    suffix = extension.group().lower() if extension else ""
    return f"{UPLOADS}/{check_id(upload_id, 'upload id')}{suffix}"
