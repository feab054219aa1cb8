"""The model-version directory: everything a trained model is, self-contained and verifiable.

```
<version>/
  tuneloom.json      manifest: template, base model, every effective setting, prompt format, checksums
  adapter/           LoRA adapter (peft format)            — or model/ for a full fine-tune
  tokenizer/
  metrics.json       loss per step, eval loss, perplexity, throughput
  data_report.json   what the training file held and what was dropped
```
A version is assembled in a staging folder and renamed into place in one step, and the manifest is
written last, so a crashed run never leaves a directory that looks complete. Loading verifies every
file's SHA-256 and names the damaged one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloom import __version__
from tuneloom.errors import ModelVersionError

MANIFEST = "tuneloom.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelVersion:
    path: Path
    manifest: dict[str, Any]

    @property
    def template(self) -> str:
        return str(self.manifest["template"])

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest["settings"])

    @property
    def prompt_format(self) -> dict[str, Any]:
        return dict(self.manifest["prompt_format"])

    @property
    def weights_dir(self) -> Path:
        return self.path / str(self.manifest["weights"])

    @property
    def is_adapter(self) -> bool:
        return self.manifest["weights"] == "adapter"

    def read_json(self, name: str) -> Any:
        """A JSON file of the version (`metrics.json`, …); one the manifest does not cover may still be
        missing or hand-edited, and that is a ModelVersionError naming it, not an OSError."""
        try:
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            reason = "is missing" if isinstance(err, FileNotFoundError) else f"is damaged: {err}"
            raise ModelVersionError(f"{self.path}: file {name} {reason}", details={"file": name}) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write-then-rename so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def finalize(staging: Path, target: Path, manifest: dict[str, Any], *, overwrite: bool = False) -> ModelVersion:
    """Checksum the staged files, write the manifest last, and move the folder into place atomically."""
    files = {
        str(p.relative_to(staging)): sha256_file(p)
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    full = {
        "format_version": FORMAT_VERSION,
        "tuneloom_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **manifest,
        "files": files,
    }
    write_json(staging / MANIFEST, full)
    _fsync_tree(staging)
    if target.exists():
        if not overwrite:
            raise ModelVersionError(f"{target} already exists; choose another --output or remove it first.")
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(trash)
        staging.rename(target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    return ModelVersion(target, full)


def open_version(path: Path, *, verify: bool = True, label: str | None = None) -> ModelVersion:
    """Read a model version; with `verify`, every file must match its recorded checksum.

    Messages name the version by `label` (default: its path) and a file by its name inside the
    version, so a server can say which file is damaged without revealing where its data dir is.
    """
    where = label or str(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise ModelVersionError(f"{where} is not a model-version directory ({_why_missing(path)}).")
    if not manifest_path.is_file():
        partial = " It looks like an unfinished training run." if path.name.endswith(".partial") else ""
        raise ModelVersionError(f"{where} has no {MANIFEST}: not a complete model version.{partial}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelVersionError(f"{where}: file {MANIFEST} is damaged: {err}", details={"file": MANIFEST}) from None
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = path / name
            if not file.is_file():
                raise ModelVersionError(f"{where}: file {name} is missing.", details={"file": name})
            if sha256_file(file) != expected:
                raise ModelVersionError(f"{where}: file {name} is damaged (checksum mismatch).", details={"file": name})
    return ModelVersion(path, manifest)


def make_folder(folder: Path, purpose: str) -> None:
    """`mkdir -p folder`, refused as one ModelVersionError that names the part of the path at fault.

    The OS's own message ("File exists: 'runs'") names neither what was being made nor why it failed.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        culprit = first_non_folder(folder)
        reason = f"{culprit} is a file, not a folder" if culprit else f"{err.strerror or err} ({err.filename})"
        raise ModelVersionError(f"{purpose}: {reason}", details={"path": str(folder)}) from None


def first_non_folder(path: Path) -> Path | None:
    """The first part of `path`, from the root down, that exists but is not a folder (None: all fine)."""
    return next((p for p in (*reversed(path.parents), path) if p.exists() and not p.is_dir()), None)


def partial_dir(path: Path) -> Path:
    """Where `tuneloom train --output path` keeps checkpoints and staging until the version is complete."""
    return path.with_name(path.name + ".partial")


def _why_missing(path: Path) -> str:
    """Why `path` is no version: a file, an interrupted run (its checkpoint beside it), or nothing there.

    The checkpoint folder is named, not its full path: behind a server's `label` the data dir stays hidden.
    """
    if path.exists():
        return "it is a file, not a directory"
    if partial_dir(path).is_dir():
        return (
            f"it does not exist: training into it stopped before it was written; {partial_dir(path).name} beside "
            "it holds the checkpoint, and the same train command with --resume finishes it"
        )
    return "it does not exist"


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as handle:
                os.fsync(handle.fileno())
