"""A trained model version packed for download (the `tuneloom export` folder, zipped), and links to fetch it.

A version is immutable once trained, so each of its exports is built the first time someone asks and
kept under `exports/<version id>/` in the data dir; deleting the version deletes them
(`store.artifacts.model_version_files`). That folder is a cache with a bound (`serve --exports-cache-mb`):
past it, each new build evicts the least recently used exports, built again if asked for again.

Building loads the model (merging or writing GGUF takes seconds for a small model, minutes for a 7B),
so it happens in the request that asks, one at a time per server, in a child process that takes the
model's memory with it when it ends. The file itself goes out behind a signed link that needs no API
key: a browser saves it to disk with its own progress and no copy in page memory, `curl -C -` resumes
it, and the key never sits in a URL or a browser's history. A link is an HMAC of what it names and
when it expires, keyed from the key pepper that every server on the database shares
(`store.keys.check_pepper`), so any of them honours it, building the file if it lacks it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tuneloom.errors import NotFoundError, TuneloomError
from tuneloom.export_gguf import GGUF_TYPES
from tuneloom.store.artifacts import EXPORTS, Artifacts
from tuneloom.store.ids import check_id

log = logging.getLogger("tuneloom.server")

IN_USE_S = 60.0  # an export used this recently is never evicted: its download may be about to open it
LINK_TTL_S = 3600  # long enough to start a multi-GB download; an expired link is asked for again
STORED_SUFFIXES = (".safetensors", ".gguf", ".bin")  # weights barely compress: stored, not deflated
T = TypeVar("T")
_CHUNK = 1024 * 1024
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry holds


class LinkError(TuneloomError):
    """A download link no server of this database made (altered, or cut short): 403."""

    code = "INVALID_LINK"


class LinkExpired(LinkError):
    """A download link past its time: 410, ask for the export again."""

    code = "LINK_EXPIRED"


class ExportFailed(TuneloomError):
    """The export's process died (killed for memory, most likely): 503, the server may manage later."""

    code = "EXPORT_FAILED"


def form_of(format: str, gguf_type: str | None) -> str:
    """One name per distinct file: `adapter`, `merged`, or `gguf-<type>` (the file's name and cache key)."""
    return f"gguf-{gguf_type}" if format == "gguf" else format


def gguf_type_of(form: str) -> str | None:
    """The GGUF weights' type a form names (`gguf-q8_0` → `q8_0`); None for the Hugging Face folder forms."""
    return form.removeprefix("gguf-") if form.startswith("gguf-") else None


FORMS = frozenset({"adapter", "merged", *(form_of("gguf", t) for t in GGUF_TYPES)})  # every file an export can be


@dataclass(frozen=True)
class Packed:
    """An export ready to download: the zip, its size and SHA-256, and the name a download saves it as."""

    path: Path
    size: int
    sha256: str
    file_name: str


@dataclass(frozen=True)
class Named:
    """What a link names: the version (by its app and model, as every other route does) and the export form."""

    app_id: str
    model_id: str
    version_id: str
    form: str


class Exports:
    """A server's exports: built once per version and form in its data dir, handed out by signed link."""

    def __init__(self, artifacts: Artifacts, pepper: bytes, cache_bytes: int) -> None:
        self.artifacts = artifacts
        self.cache_bytes = cache_bytes
        self._key = hmac.new(pepper, b"tuneloom download links", hashlib.sha256).digest()
        self._building = threading.Lock()  # one export child at a time per server: each holds a whole model

    def packed(self, named: Named, artifact_path: str) -> Packed:
        """The export's zip, built first if this data dir has none (`artifact_path`: the trained version's files).

        Each call marks the export used (its facts file's time), which is what eviction goes by. A zip that
        another server evicts between the check and the read is built again.
        """
        target = self._zip_path(named)
        facts_path = target.with_suffix(".json")
        for _ in range(3):
            if not target.exists():
                with self._building:
                    if not target.exists():
                        self._build(named, artifact_path, target)
                        evict_least_used(self.artifacts.resolve(EXPORTS), self.cache_bytes, keep=target)
            try:
                facts = json.loads(facts_path.read_text(encoding="utf-8"))
                os.utime(facts_path)
            except FileNotFoundError:  # evicted meanwhile (the zip goes first), or a zip without facts: build again
                target.unlink(missing_ok=True)
                continue
            return Packed(target, int(facts["size"]), str(facts["sha256"]), str(facts["file_name"]))
        raise ExportFailed(
            f"the {named.form} export of model version {named.version_id} was evicted as often as "
            "it was built: raise the server's --exports-cache-mb"
        )

    def link(self, named: Named, now: float | None = None) -> tuple[str, float]:
        """A token naming the export, and when it stops working (seconds since the epoch)."""
        expires = int((time.time() if now is None else now) + LINK_TTL_S)
        payload = f"{named.app_id}.{named.model_id}.{named.version_id}.{named.form}.{expires}"
        return f"{payload}.{self._sign(payload)}", float(expires)

    def named_by(self, token: str, now: float | None = None) -> Named:
        """What a token names; a LinkError if it was not made by a server of this database or has expired."""
        payload, _, signature = token.rpartition(".")
        parts = payload.split(".")
        if len(parts) != 5 or not parts[4].isdigit() or not hmac.compare_digest(signature, self._sign(payload)):
            raise LinkError("this download link is not valid: ask for the export again for a new link")
        app_id, model_id, version_id, form, expires = parts
        if (time.time() if now is None else now) > int(expires):
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(expires)))
            raise LinkExpired(f"this download link expired at {when}: ask for the export again for a new link")
        return Named(app_id, model_id, version_id, form)

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def _zip_path(self, named: Named) -> Path:
        if named.form not in FORMS:
            raise NotFoundError(f"there is no export form '{named.form}'")
        return self.artifacts.resolve(f"{EXPORTS}/{check_id(named.version_id, 'model version id')}/{named.form}.zip")

    def _build(self, named: Named, artifact_path: str, target: Path) -> None:
        """Export and zip in a child process, into the data dir's tmp folder, then rename the zip into place: a
        reader (or a crash) sees the whole file or none. Its facts are written first, so a zip in place has them."""
        folder = f"{named.model_id}-{named.version_id}-{named.form}"
        version_dir = self.artifacts.fetch(artifact_path)
        staging = self.artifacts.staging_path(".export")
        try:
            with self.artifacts.storing(f"the {named.form} export of model version {named.version_id}"):
                size, digest = run_in_child(pack, version_dir, staging / folder, named.form)
                target.parent.mkdir(parents=True, exist_ok=True)
                facts = {"size": size, "sha256": digest, "file_name": f"{folder}.zip"}
                self.artifacts.write_atomic(target.with_suffix(".json"), [json.dumps(facts).encode()])
                os.replace(staging / f"{folder}.zip", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def evict_least_used(root: Path, bound: int, *, keep: Path, now: float | None = None) -> list[Path]:
    """Delete the least recently used exports under `root` until their zips fit in `bound` bytes; those deleted.

    Never `keep` (the build just asked for, however large) nor one used in the last `IN_USE_S` (a download
    that asked for it may not have opened it yet; one that has keeps reading an unlinked file). So the
    bound can be exceeded for a while, until a later build finds those older. The zip goes before its
    facts, so a server that finds the zip finds its facts (`Exports.packed` rebuilds if it races).
    """
    now = time.time() if now is None else now
    built = []
    for zip_path in root.glob("*/*.zip"):
        try:
            built.append((zip_path.with_suffix(".json").stat().st_mtime, zip_path.stat().st_size, zip_path))
        except FileNotFoundError:  # being evicted by another server
            continue
    total = sum(size for _, size, _ in built)
    evicted = []
    for used, size, zip_path in sorted(built):
        if total <= bound:
            break
        if zip_path == keep or now - used < IN_USE_S:
            continue
        zip_path.unlink(missing_ok=True)
        zip_path.with_suffix(".json").unlink(missing_ok=True)  # the folder stays: another build may be filling it
        total -= size
        evicted.append(zip_path)
        log.info(
            "evicted export %s (%d bytes, last used %s): over the %d-byte exports cache",
            zip_path,
            size,
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(used)),
            bound,
        )
    return evicted


def run_in_child(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in a process of its own, its exception raised here.

    An export loads the whole model (a merged 7B: some 14 GB more) and frees it only when its process ends:
    in the server's own process that memory would stay with it, and running out of it would take the API
    down. A child forked from the forkserver (which a server with training workers has already started with
    the libraries imported) holds it instead, and is gone with it.
    """
    with ProcessPoolExecutor(1, mp_context=_process_context(), max_tasks_per_child=1) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool:
            raise ExportFailed(
                "the export's process was killed before it finished, most likely for lack of memory: the "
                "model must fit in this server's free memory once more. Try again when the server is less busy"
            ) from None


@functools.cache
def _process_context() -> Any:
    """The forkserver, with the export's libraries imported once in it if this process starts it (a server
    without training workers), so each build forks with them loaded instead of importing them again (~3 s
    on two cores); one started by the workers has imported them already, for training."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tuneloom.export", "peft"])  # peft: torch and transformers with it
    return context


def pack(version_dir: Path, folder: Path, form: str) -> tuple[int, str]:
    """(In the child.) `tuneloom export` of `form` into `folder`, zipped beside it as `<folder>.zip`: its size and
    SHA-256."""
    from tuneloom.export import export_version

    export_version(version_dir, folder, merged=form == "merged", gguf_type=gguf_type_of(form))
    return _zip_folder(folder, folder.with_name(f"{folder.name}.zip"))


def _zip_folder(folder: Path, out: Path) -> tuple[int, str]:
    """Zip `folder` (as a top folder of that name) to `out`, fsynced; its size and SHA-256.

    Entries carry a fixed date and mode, so the same export zips to the same bytes (and SHA-256) whichever server
    builds it and whenever: two servers on one data dir that build it at once write identical files.
    """
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", date_time=_ZIP_EPOCH)
            entry.compress_type = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            with path.open("rb") as source, archive.open(entry, "w", force_zip64=True) as sink:
                shutil.copyfileobj(source, sink, _CHUNK)
    digest = hashlib.sha256()
    with out.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return out.stat().st_size, digest.hexdigest()
