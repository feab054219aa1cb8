"""Artifacts on an S3-compatible endpoint: moto's standalone server on loopback, reached through s3fs.

A dataset version and a model version published from one data dir come back, byte for byte and
checksum-verified, into another (a second machine's); a damaged or half-uploaded object is refused.
An `--artifact-url` that cannot work (malformed, a missing bucket, unknown keys, nothing listening)
stops `tuneloom worker` / `serve` at start within seconds, one line naming the URL (secrets masked).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from tests.conftest import _free_port, cli_command
from tests.s3_support import BUCKET, moto_s3

from tuneloom.cli import main, server_cmds
from tuneloom.model_version import open_version
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.shared import INDEX_SUFFIX, ArtifactIntegrityError, ArtifactStore, ArtifactStoreError
from tuneloom.train.recipe import TrainJob, run_training

s3fs = pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """A real moto S3 server process on a loopback port, with a bucket; the AWS variables point at it."""
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def published(s3_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Artifacts]:
    """A dataset-version file and a trained model-version directory, published from a first data dir."""
    first = Artifacts(tmp_path_factory.mktemp("machine-a"))
    dataset_file = first.dataset_version_file("dsv1")
    rows = [
        {"prompt": f"Is {i} even? ### Assistant:", "completion": " yes" if i % 2 == 0 else " no"} for i in range(40)
    ]
    first.write_atomic(dataset_file, [(json.dumps(r) + "\n").encode() for r in rows])
    run_training(
        TrainJob(
            data=dataset_file,
            output=first.model_version_dir("mv1"),
            template="tiny-random",
            data_format="jsonl",
            settings={"trainer_config": {"max_steps": 2, "per_device_train_batch_size": 8}},
        )
    )
    store = ArtifactStore(first, s3_url)
    dataset, model = first.relative(dataset_file), first.relative(first.model_version_dir("mv1"))
    store.publish(dataset)
    store.publish(model)
    return dataset, model, first


def test_a_second_machine_fetches_verified_copies(
    s3_url: str, published: tuple[str, str, Artifacts], tmp_path: Path
) -> None:
    dataset, model, first = published
    second = ArtifactStore(Artifacts(tmp_path / "machine-b"), s3_url)
    fetched = second.fetch(dataset)
    assert fetched.read_bytes() == first.resolve(dataset).read_bytes()
    version = open_version(second.fetch(model))  # the manifest's own checksums pass too
    assert version.template == "tiny-random"
    originals = sorted(p.relative_to(first.resolve(model)) for p in first.resolve(model).rglob("*") if p.is_file())
    assert sorted(p.relative_to(version.path) for p in version.path.rglob("*") if p.is_file()) == originals
    assert not list((tmp_path / "machine-b" / "tmp").iterdir())  # staging cleaned up


def test_a_damaged_object_is_refused_by_name_and_not_installed(
    s3_url: str, published: tuple[str, str, Artifacts], tmp_path: Path
) -> None:
    _, model, _ = published
    store = ArtifactStore(Artifacts(tmp_path / "machine-c"), s3_url)
    weights = next(p for p in store._fs.find(f"{BUCKET}/shared/{model}") if p.endswith(".safetensors"))
    original = store._fs.cat_file(weights)
    store._fs.pipe_file(weights, original[:-8] + b"\0" * 8)
    try:
        with pytest.raises(ArtifactIntegrityError, match=r"adapter/adapter_model\.safetensors .*published checksum"):
            store.fetch(model)
    finally:
        store._fs.pipe_file(weights, original)
    assert not (tmp_path / "machine-c" / model).exists()
    assert open_version(store.fetch(model)).template == "tiny-random"  # the repaired object fetches


def test_an_upload_without_its_index_is_never_fetched(s3_url: str, tmp_path: Path) -> None:
    source = Artifacts(tmp_path / "a")
    path = source.dataset_version_file("half")
    source.write_atomic(path, [b'{"prompt": "p", "completion": "c"}\n'])
    store = ArtifactStore(source, s3_url)
    relative = source.relative(path)
    store.publish(relative)
    store._fs.rm(f"{BUCKET}/shared/{relative}{INDEX_SUFFIX}")  # as if the uploader died before its last write
    with pytest.raises(ArtifactIntegrityError, match="upload never finished"):
        ArtifactStore(Artifacts(tmp_path / "b"), s3_url).fetch(relative)
    store.remove(relative)
    assert not store._fs.exists(f"{BUCKET}/shared/{relative}") and not path.exists()


StartWorker = Callable[[Path, str], tuple[int, str, float]]


@pytest.fixture
def start_worker(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> StartWorker:
    """`tuneloom worker --artifact-url URL` in this process, up to where its slots would start (a worker
    past its start-up checks fails the test with an internal error): exit code, stderr, seconds taken."""

    def past_the_checks(*_: object) -> NoReturn:
        raise RuntimeError("the worker got past its start-up checks")

    monkeypatch.setattr(server_cmds, "_start_workers", past_the_checks)

    def start(data_dir: Path, url: str) -> tuple[int, str, float]:
        started = time.monotonic()
        code = main(["worker", "--data-dir", str(data_dir), "--artifact-url", url])
        return code, capsys.readouterr().err, time.monotonic() - started

    return start


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("foo://bucket/x", "foo://bucket/x: unknown scheme 'foo://'"),
        ("tuneloom-artifacts", "tuneloom-artifacts is not a URL"),  # was a folder below the working directory
        ("s3://", "s3:// names no bucket"),  # was the bucket's top level, under any bucket name in the path
        ("file://mnt/share", "a file URL takes an absolute path"),  # was ./mnt/share
        ("s3://admin:hunter2@tuneloom-test/x", "s3://admin:***@tuneloom-test/x: S3 credentials go in"),
    ],
)
def test_a_malformed_artifact_url_stops_the_worker_naming_it(
    url: str, expected: str, tmp_path: Path, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err, _ = start_worker(tmp_path / "data", url)
    assert code == 1 and expected in " ".join(err.split()), err
    assert "hunter2" not in err and "internal error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing made below the working directory


def test_a_missing_bucket_stops_serve_and_is_not_created(s3_url: str, tmp_path: Path) -> None:
    """The start-up check used `makedirs`, which on S3 made the bucket: a typo quietly became a new bucket."""
    command = cli_command("serve", "--data-dir", str(tmp_path / "data"))
    command += ["--artifact-url", "s3://tuneloom-typo/prod", "--workers", "0", "--port", str(_free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr
    assert "artifact URL s3://tuneloom-typo/prod cannot be used: not found: The specified bucket does not exist" in (
        message
    )
    assert "Traceback" not in result.stderr
    assert not s3fs.S3FileSystem(skip_instance_cache=True).exists("tuneloom-typo")


def test_unknown_credentials_stop_the_worker_saying_so(tmp_path: Path, start_worker: StartWorker) -> None:
    with moto_s3(check_credentials=True) as url:
        code, err, _ = start_worker(tmp_path / "data", url)
    message = " ".join(err.split())
    assert code == 1 and f"artifact URL {url} cannot be used: access denied" in message, err
    assert "AWS_ACCESS_KEY_ID" in message


def test_an_unreachable_endpoint_is_an_error_in_seconds_at_start_and_on_delete(
    tmp_path: Path, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's defaults (5 attempts, 60 s connect timeout) took 20 s and more per call; and a delete
    asked `exists`, which s3fs answers False when it cannot connect, so nothing was deleted, silently."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    code, err, took = start_worker(tmp_path / "data", "s3://tuneloom-test/prod")
    assert code == 1 and "artifact URL s3://tuneloom-test/prod cannot be used" in err, err
    assert "Could not connect to the endpoint URL" in err and took < 10

    store = ArtifactStore(Artifacts(tmp_path / "data"), "s3://tuneloom-test/prod")
    started = time.monotonic()
    with pytest.raises(ArtifactStoreError, match=r"could not delete dataset-versions/x\.jsonl from s3://tuneloom-test"):
        store.remove("dataset-versions/x.jsonl")
    assert time.monotonic() - started < 10
