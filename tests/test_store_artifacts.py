"""Artifact paths are derived from ids and never leave the data dir; writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.test_store_support import make_artifacts_fixture

from tuneloom.store.artifacts import Artifacts, UnsafePathError
from tuneloom.store.ids import InvalidIdError, check_id, new_id

artifacts = make_artifacts_fixture()

BAD_IDS = ["../x", "..", "a/b", "/etc", "A", "", "-x", "x" * 65, "a b", "a\x00", "é", ".hidden", "a\\b"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_refused_everywhere(artifacts: Artifacts, bad: str) -> None:
    for method in (
        artifacts.dataset_version_file,
        artifacts.model_version_dir,
        artifacts.checkpoint_dir,
        artifacts.upload_file,
    ):
        with pytest.raises(InvalidIdError):
            method(bad)


def test_good_ids_land_under_the_data_dir(artifacts: Artifacts) -> None:
    vid = new_id()
    assert check_id(vid) == vid
    assert artifacts.dataset_version_file(vid) == artifacts.root / "dataset-versions" / f"{vid}.jsonl"
    assert artifacts.model_version_dir("my-model_1") == artifacts.root / "model-versions" / "my-model_1"
    assert artifacts.relative(artifacts.model_version_dir(vid)) == f"model-versions/{vid}"


@pytest.mark.parametrize("rel", ["../outside", "a/../../outside", "/etc/passwd", ".", ""])
def test_stored_paths_cannot_escape(artifacts: Artifacts, rel: str) -> None:
    with pytest.raises(UnsafePathError):
        artifacts.resolve(rel)


def test_symlinks_out_of_the_data_dir_are_refused(artifacts: Artifacts, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (artifacts.root / "model-versions").mkdir()
    os.symlink(outside, artifacts.root / "model-versions" / "evil")
    with pytest.raises(UnsafePathError):
        artifacts.model_version_dir("evil")
    with pytest.raises(UnsafePathError):
        artifacts.relative(tmp_path / "outside")


def test_write_atomic_leaves_no_partial_file(artifacts: Artifacts) -> None:
    target = artifacts.dataset_version_file("v1")
    assert artifacts.write_atomic(target, [b"a\n", b"b\n"]) == 4
    assert target.read_bytes() == b"a\nb\n"

    def failing() -> list[bytes]:
        raise OSError("disk full")

    def chunks():  # type: ignore[no-untyped-def]
        yield b"new content"
        failing()

    with pytest.raises(OSError, match="disk full"):
        artifacts.write_atomic(target, chunks())
    assert target.read_bytes() == b"a\nb\n"
    assert list((artifacts.root / "tmp").iterdir()) == []
    artifacts.remove("dataset-versions/v1.jsonl")
    assert not target.exists()
