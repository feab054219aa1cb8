"""Shared artifact storage across machines: a server and a worker that share nothing but S3 and the database.

`tuneloom serve --workers 0` on data dir A and `tuneloom worker` on data dir B, both with
`--artifact-url s3://…` (moto's S3 server on loopback) and one database (SQLite file, or PostgreSQL
when configured). The dataset version the server snapshots reaches the worker only through S3; the
model version the worker trains reaches the server only through S3, fetched and checksum-verified on
the first prediction. A snapshot damaged in S3 fails its run with the file named.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import cli_command, run_cli
from tests.process_helpers import Processes, ended, prepare_model, queue, running_processes
from tests.s3_support import BUCKET, moto_s3
from tests.test_store_support import BACKENDS

from tuneloom.store.db import default_url

s3fs = pytest.importorskip("s3fs")
pytestmark = pytest.mark.soak  # two real processes, S3 and a training run per test: minutes on a loaded machine


@pytest.fixture(params=BACKENDS)
def machines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Processes, str, Path]]:
    """The server's processes (data dir A), the S3 URL, and the worker's data dir B (empty)."""
    with moto_s3() as url, running_processes(tmp_path, request.param) as procs:
        worker_dir = tmp_path / "worker-machine"
        worker_dir.mkdir()
        yield procs, url, worker_dir


def start_worker(procs: Processes, url: str, worker_dir: Path) -> subprocess.Popen[bytes]:
    """A `tuneloom worker` on its own data dir, reaching the server's database and the S3 store only."""
    database = procs.extra or ["--database-url", default_url(procs.data_dir)]
    cmd = cli_command("worker", "--data-dir", str(worker_dir), *database)
    cmd += ["--artifact-url", url, "--workers", "1", "--lease-seconds", "20"]
    log = (worker_dir.parent / "worker.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    procs.running.append(proc)
    return proc


def test_a_worker_trains_from_s3_and_the_server_predicts_from_s3(machines: tuple[Processes, str, Path]) -> None:
    procs, url, worker_dir = machines
    _, server = procs.serve("--workers", "0", "--artifact-url", url)
    model, headers, dataset_version = prepare_model(server, procs.data_dir)
    snapshot = f"dataset-versions/{dataset_version}.jsonl"
    s3 = s3fs.S3FileSystem(skip_instance_cache=True)  # this test's moto server, not a cached earlier one
    assert s3.exists(f"{BUCKET}/shared/{snapshot}.sha256.json")  # published before the API said READY
    start_worker(procs, url, worker_dir)
    version = queue(model, headers, dataset_version, steps=4)
    trained = ended(f"{model}/versions/{version}", headers)
    assert trained["status"]["name"] == "MODEL_TRAINED", trained
    assert (worker_dir / snapshot).is_file()  # the worker fetched it from S3
    assert s3.exists(f"{BUCKET}/shared/model-versions/{version}.sha256.json")
    assert not (procs.data_dir / "model-versions" / version).exists()  # trained on "the other machine" only
    assert trained["metrics"]["steps"] == 4  # the summary read from S3 alone, without fetching the weights

    answer = httpx.post(f"{model}/predict", json={"inputs": ["great results"]}, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version_id"] == version and answer.json()["outputs"][0]["tokens"] > 0
    fetched = procs.data_dir / "model-versions" / version
    assert sorted(p.name for p in fetched.rglob("*") if p.is_file()) == sorted(
        p.name for p in (worker_dir / "model-versions" / version).rglob("*") if p.is_file()
    )

    listed = run_cli("workers", "--data-dir", str(procs.data_dir), *procs.extra)
    assert listed.returncode == 0, listed.stderr
    assert "CPU only" in listed.stdout and "live" in listed.stdout

    assert httpx.delete(model, headers=headers).status_code == 204  # deleting the model deletes its S3 copies too
    assert not s3.exists(f"{BUCKET}/shared/model-versions/{version}.sha256.json")
    assert not s3.exists(f"{BUCKET}/shared/model-versions/{version}")


def test_a_snapshot_damaged_in_s3_fails_its_run_naming_the_file(machines: tuple[Processes, str, Path]) -> None:
    procs, url, worker_dir = machines
    _, server = procs.serve("--workers", "0", "--artifact-url", url)
    model, headers, dataset_version = prepare_model(server, procs.data_dir)
    snapshot = f"dataset-versions/{dataset_version}.jsonl"
    s3 = s3fs.S3FileSystem(skip_instance_cache=True)
    s3.pipe_file(
        f"{BUCKET}/shared/{snapshot}", s3.cat_file(f"{BUCKET}/shared/{snapshot}").replace(b"positive", b"negative")
    )
    start_worker(procs, url, worker_dir)
    failed = ended(f"{model}/versions/{queue(model, headers, dataset_version, steps=4)}", headers)
    status = failed["status"]
    assert status["name"] == "MODEL_TRAINING_FAILED", status
    assert f"{snapshot} fetched from the shared store does not match its published checksum" in status["message"]
    assert not (worker_dir / snapshot).exists()  # nothing damaged was installed
