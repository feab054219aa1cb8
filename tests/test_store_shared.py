"""Artifacts on an S3-compatible endpoint: moto's standalone server on loopback, reached through s3fs.

A dataset version and a model version published from one data dir come back, byte for byte and
checksum-verified, into another (a second machine's); a damaged or half-uploaded object is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.s3_support import BUCKET, moto_s3

from tuneloom.model_version import open_version
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.shared import INDEX_SUFFIX, ArtifactIntegrityError, ArtifactStore
from tuneloom.train.recipe import TrainJob, run_training

pytest.importorskip("s3fs")


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
