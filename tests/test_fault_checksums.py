"""One flipped byte in a stored artifact, against a real server: found by its checksum, named, never used.

A trained version's weight file with one byte flipped is a 409 on /predict and /v1/completions
naming the file inside the version (never the server's data-dir path), and `tuneloom generate`
names it too; a dataset version's snapshot with one byte flipped fails the training job naming
the dataset version and its file; continuing training from a damaged version is refused naming
the file. Each test restores the byte afterwards, and the trained version serves again.
SQLite only: the checks are on files, the same for both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.process_helpers import state, wait_for
from tests.server_helpers import TRAIN_FAST, Deployed, deploy

from tuneloom.cli import main

pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
WEIGHTS = "adapter/adapter_model.safetensors"
GREEDY = {"max_tokens": 4, "temperature": 0}
SHORT = {"max_steps": 2, "per_device_train_batch_size": 8}  # what it learns does not matter here, only its files


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    """A trained version that nothing has predicted with yet (a loaded model is not read from disk again)."""
    return deploy(*server, trainer_config=SHORT)


@contextmanager
def flipped(path: Path, offset: int) -> Iterator[None]:
    """One byte of `path` inverted for the duration (the same write twice restores it)."""

    def flip() -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x20
        path.chmod(0o644)
        path.write_bytes(bytes(data))

    flip()
    try:
        yield
    finally:
        flip()


def _predict(deployed: Deployed) -> httpx.Response:
    body = {"inputs": ["really nice"], "version": deployed.version_id, "inference_params": GREEDY}
    return httpx.post(f"{deployed.model_url}/predict", json=body, headers=deployed.headers, timeout=120)


def _complete(deployed: Deployed) -> httpx.Response:
    model = f"{deployed.app_id}/{deployed.model_id}/{deployed.version_id}"
    body = {"model": model, "prompt": "really nice", "max_tokens": 4, "temperature": 0}
    return httpx.post(f"{deployed.url}/v1/completions", json=body, headers=deployed.headers, timeout=120)


def _final_status(deployed: Deployed, body: dict[str, Any]) -> dict[str, Any]:
    queued = httpx.post(f"{deployed.model_url}/versions", json=body, headers=deployed.headers, timeout=60)
    assert queued.status_code == 201, queued.text
    url = f"{deployed.model_url}/versions/{queued.json()['id']}"
    running = ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING")
    found = wait_for(lambda: (s := state(url, deployed.headers)["status"])["name"] not in running and s, "the run")
    return dict(found)


def _assert_still_trained(deployed: Deployed) -> None:
    version = state(f"{deployed.model_url}/versions/{deployed.version_id}", deployed.headers)
    assert version["status"]["name"] == "MODEL_TRAINED"
    assert _predict(deployed).status_code == 200


def test_a_flipped_weight_byte_is_a_409_naming_the_file(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    weights = deployed.version_dir / WEIGHTS
    damaged = f"model version '{deployed.version_id}': file {WEIGHTS} is damaged (checksum mismatch)"
    with flipped(weights, weights.stat().st_size // 2):
        predicted = _predict(deployed)
        assert predicted.status_code == 409, predicted.text
        assert predicted.json()["code"] == "INVALID_MODEL_VERSION"
        assert predicted.json()["message"] == f"{damaged}."
        completed = _complete(deployed)
        assert completed.status_code == 409, completed.text
        assert completed.json()["error"]["message"] == f"{damaged}."
        assert str(deployed.data_dir) not in predicted.text + completed.text

        assert main(["generate", str(deployed.version_dir), "really nice"]) == 1  # the CLI, in this process
        stderr = capsys.readouterr().err
        assert f"{deployed.version_dir}: file {WEIGHTS} is damaged (checksum mismatch)" in " ".join(stderr.split())
    assert _predict(deployed).status_code == 200  # the same bytes again: it loads and serves


def test_a_flipped_snapshot_byte_fails_training_naming_the_dataset_version(deployed: Deployed) -> None:
    snapshot = deployed.data_dir / "dataset-versions" / f"{deployed.dataset_version_id}.jsonl"
    offset = snapshot.read_bytes().index(b"great product")  # 'g' → 'G': still valid JSON, other content
    with flipped(snapshot, offset):
        body = {
            "dataset_version_id": deployed.dataset_version_id,
            "template": "tiny-random",
            "trainer_config": TRAIN_FAST,
        }
        status = _final_status(deployed, body)
    assert status["name"] == "MODEL_TRAINING_FAILED", status
    assert status["message"] == (
        f"dataset version '{deployed.dataset_version_id}' is damaged: its snapshot file "
        f"dataset-versions/{deployed.dataset_version_id}.jsonl does not match its SHA-256 content hash "
        "(it changed after versioning)"
    )
    _assert_still_trained(deployed)  # nothing trained is lost


def test_continuing_from_a_damaged_version_is_refused_naming_the_file(deployed: Deployed) -> None:
    weights = deployed.version_dir / WEIGHTS
    body = {
        "dataset_version_id": deployed.dataset_version_id,
        "template": "tiny-random",
        "trainer_config": TRAIN_FAST,
        "resume_from_model": deployed.version_id,
    }
    with flipped(weights, weights.stat().st_size // 2):
        status = _final_status(deployed, body)
    assert status["name"] == "MODEL_TRAINING_FAILED", status
    assert status["message"] == (
        f"model version '{deployed.version_id}' to continue from: file {WEIGHTS} is damaged (checksum mismatch)."
    )
    _assert_still_trained(deployed)
