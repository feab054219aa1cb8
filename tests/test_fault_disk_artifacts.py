"""A full disk under the data dir while the server stores a user's files: a 507 naming what, nothing partial kept.

A real server whose data dir is on a size-limited tmpfs (`test_fault_disk`'s `small_disk`: root, as in
CI; skipped elsewhere, saying why), its SQLite database on the ordinary disk, so that the artifact
store is what meets the full disk: an upload (it used to be a bare 500 and a traceback in the log),
a dataset version's snapshot (a 201 FAILURE blaming nothing), and a fetch from the shared store
(a 503 blaming the store). Each is refused with 507 `DISK_FULL`, leaves no `.part` or staging file,
and works again once there is room, without a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import DATABASE_URL_FILE, api_key, sentiment_lines
from tests.process_helpers import running_processes
from tests.test_fault_disk import SmallDisk, small_disk  # noqa: F401  (the module's tmpfs fixture)

from tuneloom.errors import DiskFullError
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import default_url
from tuneloom.store.shared import share

FULL = "the disk holding the data dir (--data-dir) is full: "
KEPT = " could not be stored, and nothing of it was kept (No space left on device)"
Server = tuple[str, dict[str, str], Path]


@pytest.fixture(scope="module")
def disk_server(small_disk: SmallDisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    """A dataset's URL, a key's headers and the data dir of a server whose data dir is on `small_disk`."""
    small_disk.grow()
    with running_processes(tmp_path_factory.mktemp("disk-server"), "sqlite") as processes:
        data_dir = small_disk.path / "server"
        _, url = processes.serve("--workers", "0", data_dir=data_dir)  # the database stays in processes.data_dir
        (data_dir / DATABASE_URL_FILE).write_text(default_url(processes.data_dir), encoding="utf-8")
        headers = {"Authorization": f"Key {api_key(data_dir)}"}
        assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=headers).status_code == 201
        base = f"{url}/api/apps/shop/datasets"
        assert httpx.post(base, json={"id": "reviews"}, headers=headers).status_code == 201
        yield f"{base}/reviews", headers, data_dir


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_an_upload_that_fills_the_disk_is_a_507_and_leaves_no_part_file(
    disk_server: Server,
    small_disk: SmallDisk,  # noqa: F811
) -> None:
    base, headers, data_dir = disk_server
    small_disk.grow()
    kept = _files(data_dir / "uploads")
    total = httpx.get(f"{base}/inputs", headers=headers).json()["total"]
    body = ("\n".join(sentiment_lines(60)) + "\n").encode()  # about 110 KB: the disk fills half-way through
    small_disk.leave_free(48 * 1024)
    refused = httpx.post(f"{base}/uploads", params={"filename": "reviews.txt"}, content=body, headers=headers)
    assert refused.status_code == 507, refused.text
    assert refused.json() == {"code": "DISK_FULL", "message": refused.json()["message"]}
    assert refused.json()["message"].startswith(f"{FULL}the upload 'reviews.txt'{KEPT}")
    assert str(data_dir) not in refused.text
    assert _files(data_dir / "uploads") == kept
    assert httpx.get(f"{base}/inputs", headers=headers).json()["total"] == total

    small_disk.grow()
    stored = httpx.post(f"{base}/uploads", params={"filename": "reviews.txt"}, content=body, headers=headers)
    assert stored.status_code == 201 and stored.json()["valid_rows"] == 960, stored.text


def test_a_dataset_version_on_a_full_disk_is_a_507_and_a_failure_saying_so(
    disk_server: Server,
    small_disk: SmallDisk,  # noqa: F811
) -> None:
    base, headers, data_dir = disk_server
    small_disk.grow()
    lines = ("\n".join(sentiment_lines(1)) + "\n").encode()
    assert httpx.post(f"{base}/uploads", content=lines, headers=headers).status_code == 201
    snapshots = _files(data_dir / "dataset-versions")
    small_disk.leave_free(0)
    refused = httpx.post(f"{base}/versions", headers=headers)
    assert refused.status_code == 507, refused.text
    message = refused.json()["message"]
    assert refused.json()["code"] == "DISK_FULL" and message.startswith(f"{FULL}the snapshot of dataset version '")
    assert KEPT in message
    failed = httpx.get(f"{base}/versions", headers=headers).json()[0]  # newest first
    assert failed["state"] == "FAILURE" and failed["message"] == message
    assert _files(data_dir / "dataset-versions") == snapshots and _files(data_dir / "tmp") == []

    small_disk.grow()
    ready = httpx.post(f"{base}/versions", headers=headers)
    assert ready.status_code == 201 and ready.json()["state"] == "READY", ready.text


def test_a_fetch_from_the_shared_store_onto_a_full_disk_is_disk_full(
    small_disk: SmallDisk,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Where `/predict` fetches a model version: this machine's full disk, not the store, is named (was a 503)."""
    small_disk.grow()
    store = f"file://{tmp_path / 'shared'}"
    elsewhere = Artifacts(tmp_path / "machine-a")
    snapshot = elsewhere.dataset_version_file("dsv1")
    elsewhere.write_atomic(snapshot, [b"x" * 256 * 1024])
    share(elsewhere, store)
    relative = elsewhere.relative(snapshot)
    elsewhere.publish(relative)
    here = Artifacts(small_disk.path / "machine-b")
    share(here, store)
    small_disk.leave_free(16 * 1024)
    with pytest.raises(DiskFullError) as failure:
        here.fetch(relative)
    assert failure.value.message.startswith(f"{FULL}the local copy of {relative} from {store}{KEPT}")
    assert not here.resolve(relative).exists() and _files(here.root / "tmp") == []

    small_disk.grow()
    assert here.fetch(relative).read_bytes() == snapshot.read_bytes()
