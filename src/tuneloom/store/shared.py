"""Artifact storage behind one interface: the data dir alone (default), or a shared fsspec location.

With a URL (`s3://bucket/prefix` through s3fs, `file:///mnt/shared/tuneloom`, any fsspec
protocol), the shared location holds the artifacts of record and each machine's data dir is its
cache: `publish` copies a dataset-version file or a model-version directory up, `fetch` brings it
down to the same relative path on a machine that lacks it. The database keeps storing the same
data-dir-relative paths either way, so nothing else changes.

Integrity: `publish` uploads the content, then `<path>.sha256.json` (every file's SHA-256 and size)
last, which is the commit marker — an upload cut short has no index and is never fetched. `fetch`
downloads into the data dir's staging area, checks every file against the index, and renames into
place only when all match; a mismatch raises `ArtifactIntegrityError` naming the file.

Credentials and endpoints come from the environment, as the libraries define them
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` for S3-compatible stores). Messages
show the URL with any password or query value masked (`masked_url`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tuneloom.errors import NO_SPACE_ERRNOS, TuneloomError
from tuneloom.model_version import sha256_file
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.ids import new_id

INDEX_SUFFIX = ".sha256.json"
PROBE_PREFIX = ".tuneloom-write-check-"  # `check()`'s object at the store's top; one a crash left is swept
S3_SCHEMES = ("s3", "s3a")
UNPARSABLE = "(unparsable URL)"
# botocore's defaults (a 60 s connect timeout, up to 5 attempts) made an unreachable endpoint a
# minute-long hang at start-up and on every request; these make it an error in seconds.
S3_CONNECT_TIMEOUT_S = 3
S3_MAX_ATTEMPTS = 2


class ArtifactIntegrityError(TuneloomError):
    """A fetched artifact is missing, incomplete or does not match the checksums it was published with."""

    code = "ARTIFACT_INTEGRITY"


class ArtifactStoreError(TuneloomError):
    """The shared store could not be reached or written (network, credentials, a missing bucket)."""

    code = "ARTIFACT_STORE_UNAVAILABLE"


def share(artifacts: Artifacts, url: str | None) -> ArtifactStore | None:
    """Back `artifacts` with the shared location at `url` (`--artifact-url`); checked writable now.

    After this, `artifacts.publish` and `artifacts.fetch` go through the store. None without a URL.
    """
    if not url:
        return None
    store = ArtifactStore(artifacts, url)
    store.check()
    artifacts.shared = store
    return store


def masked_url(url: str) -> str:
    """`url` as it may be printed: a password in it, and every query value (tokens, keys), masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return UNPARSABLE
    userinfo, at, host = parts.netloc.rpartition("@")
    if ":" not in userinfo and not parts.query:
        return url  # nothing to hide (and urlunsplit would turn `s3://` into `s3:`)
    userinfo = userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else userinfo
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}", query=query))


def open_location(url: str) -> tuple[Any, str]:
    """The fsspec file system and root path `url` names; ArtifactStoreError saying what is wrong with it.

    A plain path, a relative `file://` URL or a bucket-less `s3://` were taken as-is and wrote below
    the working directory or the bucket's top; a typo in the scheme was fsspec's bare "Protocol not known".
    """
    from fsspec.core import url_to_fs

    shown = masked_url(url)
    example = "s3://bucket/prefix, gs://bucket/prefix or file:///absolute/path"
    if "://" not in url or shown == UNPARSABLE:
        raise ArtifactStoreError(f"artifact URL {shown} is not a URL: use {example}")
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise ArtifactStoreError(f"artifact URL {shown}: a file URL takes an absolute path, file:///{parts.netloc}…")
    if parts.scheme in S3_SCHEMES and parts.username:
        raise ArtifactStoreError(
            f"artifact URL {shown}: S3 credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL"
        )
    try:
        fs, root = url_to_fs(_without_trailing_slash(url), **_options(parts.scheme))
    except ImportError as err:
        hint = " (pip install 'tuneloom[s3]')" if parts.scheme in S3_SCHEMES else ""
        raise ArtifactStoreError(f"artifact URL {shown} needs a package that is not installed: {err}{hint}") from None
    except ValueError as err:
        if "Protocol not known" in str(err):
            unknown = f"unknown scheme '{parts.scheme}://'"
            raise ArtifactStoreError(f"artifact URL {shown}: {unknown}; use {example}") from None
        raise ArtifactStoreError(f"artifact URL {shown} cannot be used: {_describe(err)}") from None
    if not str(root).strip("/"):
        raise ArtifactStoreError(f"artifact URL {shown} names no bucket or folder: use {example}")
    return fs, str(root)


def _without_trailing_slash(url: str) -> str:
    """`s3://bucket/prefix/` as `s3://bucket/prefix`; `s3://` stays itself (stripped it became a local path)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rstrip('/')}"


def _options(scheme: str) -> dict[str, Any]:
    """Storage options for `url_to_fs`: S3 gets a short connect timeout and few retries (see S3_MAX_ATTEMPTS);
    AWS_MAX_ATTEMPTS, where set, still decides the retries."""
    if scheme not in S3_SCHEMES:
        return {}
    config: dict[str, Any] = {"connect_timeout": S3_CONNECT_TIMEOUT_S}
    if "AWS_MAX_ATTEMPTS" not in os.environ:
        config["retries"] = {"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"}
    # fsspec's instance cache is keyed on these options, not on the environment the endpoint and the
    # credentials come from: a cached client could talk to another endpoint than the one now configured.
    return {"config_kwargs": config, "skip_instance_cache": True}


class ArtifactStore:
    """The data dir, optionally backed by a shared location every worker and server can reach."""

    def __init__(self, artifacts: Artifacts, url: str | None = None):
        self.artifacts = artifacts
        self.url = masked_url(_without_trailing_slash(url)) if url else None  # for messages: never a secret
        self._fs: Any = None
        self._root = ""
        if url:
            self._fs, self._root = open_location(url)

    @property
    def shared(self) -> bool:
        return self._fs is not None

    def check(self) -> None:
        """Write and delete a small object now, so a missing bucket, wrong credentials or an unreachable
        endpoint stop `serve`/`worker` at start with the reason, not the first run that publishes.

        `makedirs` was the check before: on S3 it created a missing bucket (a typo made a new one) and
        proved nothing about writing. A local folder is still created, as the data dir is.
        """
        from fsspec.implementations.local import LocalFileSystem

        local = isinstance(self._fs, LocalFileSystem)
        probe = self._remote(f"{PROBE_PREFIX}{new_id()}")
        try:
            if local:
                self._fs.makedirs(self._root, exist_ok=True)
            self._fs.pipe_file(probe, b"")
            self._fs.rm_file(probe)
        except Exception as err:  # fsspec and its backends raise their own kinds: name the URL and what happened
            hint = " (check the credentials: for S3 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            why = _describe(err) + (hint if isinstance(err, PermissionError) and not local else "")
            raise ArtifactStoreError(f"artifact URL {self.url} cannot be used: {why}") from None

    def publish(self, relative: str) -> None:
        """Copy the file or directory at `relative` (in the data dir) to the shared location; index last."""
        if not self.shared:
            return
        local = self.artifacts.resolve(relative)
        files = _files(local)
        try:
            for name, path in files.items():
                remote = self._remote(relative, name)
                self._fs.makedirs(posixpath.dirname(remote), exist_ok=True)  # a file system needs it; S3 ignores it
                self._fs.put_file(str(path), remote)
            index = {"files": {n: {"sha256": sha256_file(p), "size": p.stat().st_size} for n, p in files.items()}}
            self._fs.pipe_file(self._remote(relative) + INDEX_SUFFIX, json.dumps(index, indent=1).encode())
        except Exception as err:  # network, credentials, bucket: the artifact is not shared, say where and why
            raise ArtifactStoreError(f"could not publish {relative} to {self.url}: {_describe(err)}") from None

    def fetch(self, relative: str) -> Path:
        """The local path of `relative`, downloaded and verified first when this machine lacks it.

        Concurrent fetches of one artifact (two requests, or a server and a worker sharing a data
        dir) download once per process; whichever rename lands first wins and the others are dropped.
        """
        local = self.artifacts.resolve(relative)
        if local.exists() or not self.shared:
            return local
        with _lock_for(relative), self.artifacts.storing(f"the local copy of {relative} from {self.url}"):
            if not local.exists():
                self._download(relative, local)
        return local

    def read_member(self, relative: str, name: str) -> bytes:
        """The bytes of file `name` of the shared artifact `relative`, checked against its index."""
        expected = self._index(relative).get(name)
        if expected is None:
            raise FileNotFoundError(f"{relative}/{name} is not part of the published artifact")
        target = self.artifacts.staging_path(".fetch")
        try:
            with self.artifacts.storing(f"the local copy of {relative}/{name} from {self.url}"):
                self._get(relative, name, target)
            _check(relative, name, target, expected)
            return target.read_bytes()
        finally:
            _discard(target)

    def _download(self, relative: str, local: Path) -> None:
        index = self._index(relative)
        staging = self.artifacts.staging_path(".fetch")
        try:
            for name, expected in index.items():
                target = staging / name if name else staging
                target.parent.mkdir(parents=True, exist_ok=True)
                self._get(relative, name, target)
                _check(relative, name, target, expected)
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staging, local)
            except OSError:
                if not local.exists():  # not another process's copy landing first: a real failure
                    raise
        finally:
            _discard(staging)

    def _get(self, relative: str, name: str, target: Path) -> None:
        what = f"{relative}/{name}" if name else relative
        try:
            self._fs.get_file(self._remote(relative, name), str(target))
        except FileNotFoundError:
            raise ArtifactIntegrityError(f"{what} is listed in its index but missing from {self.url}") from None
        except Exception as err:
            if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
                raise  # this machine's disk is full, not the store's fault: the caller's `storing` says so
            raise ArtifactStoreError(f"could not fetch {what} from {self.url}: {_describe(err)}") from None

    def remove(self, relative: str | None) -> None:
        """Delete from the data dir and the shared location (the index first, so nothing half-deleted is fetched)."""
        self.artifacts.remove(relative)
        if self.shared and relative:
            self.remove_shared(relative)

    def remove_shared(self, relative: str) -> None:
        """Delete `relative` (an artifact and its index) from the shared location only, index first."""
        self.artifacts.resolve(relative)  # the same safety check as local paths
        remote = self._remote(relative)
        try:
            for path in (remote + INDEX_SUFFIX, remote):
                with contextlib.suppress(FileNotFoundError):  # not `exists`: on S3 it says False when unreachable
                    self._fs.rm(path, recursive=True)
        except Exception as err:
            raise ArtifactStoreError(f"could not delete {relative} from {self.url}: {_describe(err)}") from None

    def objects(self, relative: str = "") -> dict[str, dict[str, Any]]:
        """Every object on the shared location (or at or below `relative`, with its index): its path
        relative to the store's root, and what the file system says about it (`size`, its time). For
        `tuneloom store sweep`, which groups them into artifacts."""
        top = self._remote(relative)
        try:
            found = {path: info for path, info in self._fs.find(top, detail=True).items() if info}
            for single in (top, top + INDEX_SUFFIX) if relative else ():  # `find` gives a lone object no detail
                with contextlib.suppress(FileNotFoundError):
                    found.setdefault(single, self._fs.info(single))
        except Exception as err:
            raise ArtifactStoreError(f"could not list {self.url}/{relative}: {_describe(err)}") from None
        prefix = self._root.rstrip("/") + "/"
        return {
            str(path).removeprefix(prefix): info
            for path, info in found.items()
            if info.get("type", "file") != "directory"
        }

    def _index(self, relative: str) -> dict[str, dict[str, Any]]:
        where = f"{self.url}/{relative}"
        try:
            raw = self._fs.cat_file(self._remote(relative) + INDEX_SUFFIX)
        except FileNotFoundError:
            raise ArtifactIntegrityError(
                f"{where} is not in the shared store, or its upload never finished (no {INDEX_SUFFIX} index)"
            ) from None
        except Exception as err:
            raise ArtifactStoreError(f"could not read {where}{INDEX_SUFFIX}: {_describe(err)}") from None
        try:
            files = json.loads(raw)["files"]
            assert isinstance(files, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise ArtifactIntegrityError(f"{where}{INDEX_SUFFIX} is not a valid index") from None
        for name in files:
            if name and (Path(name).is_absolute() or ".." in Path(name).parts):
                raise ArtifactIntegrityError(f"{where}: the index names {name!r}, outside the artifact")
        return dict(files)

    def _remote(self, relative: str, name: str = "") -> str:
        return "/".join(part for part in (self._root, relative, name) if part)


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(relative: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(relative, threading.Lock())


def _describe(err: Exception) -> str:
    """What went wrong, in one line: the backend's messages run to regexes and request ids."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    if isinstance(err, PermissionError):
        return f"access denied: {text}"
    if isinstance(err, FileNotFoundError):
        return f"not found: {text}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _files(local: Path) -> dict[str, Path]:
    """Every file of an artifact by its name inside it ("" for a single-file artifact)."""
    if local.is_file():
        return {"": local}
    return {p.relative_to(local).as_posix(): p for p in sorted(local.rglob("*")) if p.is_file()}


def _check(relative: str, name: str, path: Path, expected: dict[str, Any]) -> None:
    what = f"{relative}/{name}" if name else relative
    size, digest = path.stat().st_size, sha256_file(path)
    if size != expected["size"] or digest != expected["sha256"]:
        raise ArtifactIntegrityError(
            f"{what} fetched from the shared store does not match its published checksum "
            f"(sha256 {digest[:12]}…, {size} bytes; expected {expected['sha256'][:12]}…, {expected['size']} bytes)"
        )


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
