"""A full disk while writing checkpoints or the model version: one clear error naming where, not a library's.

The libraries that write a run's files each say it differently: Python's `OSError` (ENOSPC),
the tokenizers' Rust core (`Exception: No space left on device (os error 28)`), torch's
serializer (`PytorchStreamWriter failed writing file …: file write failed`). `disk_full_errors`
turns all of them into `DiskFullError`, naming the folder being written and the space left, so
the CLI prints one line and the server's job fails with MODEL_TRAINING_FAILED and that message.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuneloom.errors import NO_SPACE_ERRNOS, DiskFullError, TuneloomError

__all__ = ["DiskFullError", "disk_full_errors", "is_disk_full"]
NO_SPACE_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded")
WRITE_FAILED_TEXT = "file write failed"  # torch's serializer hides the errno
NEARLY_FULL_BYTES = 64 * 1024 * 1024


@contextmanager
def disk_full_errors(path: Path) -> Iterator[None]:
    """Re-raise a no-space failure inside the block as `DiskFullError` naming `path` (the folder written)."""
    try:
        yield
    except TuneloomError:
        raise
    except Exception as err:
        if not is_disk_full(err, path):
            raise
        raise DiskFullError(
            f"The disk is full: no space left on the file system holding {path} ({_free(path)} free) "
            f"while writing the run's files ({err}). Free some space or choose another output location, then "
            "run again.",
            details={"path": str(path)},
        ) from err


def is_disk_full(err: BaseException, path: Path) -> bool:
    """True when `err`, or an error it was raised from, says a write found no space."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        text = str(current).lower()
        if any(marker in text for marker in NO_SPACE_TEXTS):
            return True
        if WRITE_FAILED_TEXT in text and _free_bytes(path) < NEARLY_FULL_BYTES:
            return True
        current = current.__cause__ or current.__context__
    return False


def _free_bytes(path: Path) -> int:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return NEARLY_FULL_BYTES


def _free(path: Path) -> str:
    free = _free_bytes(path)
    return f"{free / 1024 / 1024:.1f} MB" if free >= 1024 * 1024 else f"{free / 1024:.0f} KB"
