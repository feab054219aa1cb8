"""A trained model version in a running server, made the way a user makes one: through the HTTP API.

Upload, snapshot, create the model, `train` (tiny-random: seconds), and wait for the server's own
worker to report MODEL_TRAINED. Versions that must stay unfinished are made through the store
instead (claimed by the test itself, so no worker touches them).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import api_key, database_url, sentiment_lines, serving

from tuneloom.store import jobs
from tuneloom.store.db import Database, open_database
from tuneloom.store.models import ModelVersion, TrainingStatus
from tuneloom.templates import resolve_settings

TRAIN_FAST = {"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 0.05}
ONE_STEP = {"max_steps": 1, "per_device_train_batch_size": 8}  # a version whose format matters, not what it learned
WORKER_ID = "tests"


@pytest.fixture(scope="module", name="server")
def server_on_sqlite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The `server` fixture on SQLite alone, for a module that imports it: its tests exercise what the server
    answers (generation, the OpenAI shapes, the SDK, the web console), which no backend changes; a second
    backend doubled their time (a trained version per module) and tested the storage other modules test."""
    with serving("sqlite", request.module, tmp_path_factory) as served:
        yield served


@dataclass(frozen=True)
class Deployed:
    """A server with one app, one model and one trained version of it."""

    url: str
    data_dir: Path
    headers: dict[str, str]  # an app-scoped key
    app_id: str
    model_id: str
    version_id: str
    dataset_version_id: str

    @property
    def model_url(self) -> str:
        return f"{self.url}/api/apps/{self.app_id}/models/{self.model_id}"

    @property
    def version_dir(self) -> Path:
        return self.data_dir / "model-versions" / self.version_id

    @property
    def key(self) -> str:
        return self.headers["Authorization"].split(" ", 1)[1]


def server_database(data_dir: Path) -> Database:
    """The database the test server uses (SQLite in its data dir, or the PostgreSQL URL noted there)."""
    return open_database(database_url(data_dir), data_dir=data_dir, migrate=False)


def deploy(
    url: str,
    data_dir: Path,
    app_id: str = "shop",
    model_id: str = "sentiment-gen",
    *,
    trainer_config: dict[str, Any] = TRAIN_FAST,
    lines: list[str] | None = None,
) -> Deployed:
    """An app, its key, a READY dataset version (of `lines`; default: the sectioned sentiment lines) and a
    trained version (`trainer_config`: how long it trains)."""
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": app_id}, headers=admin).status_code == 201
    headers = {"Authorization": f"Key {api_key(data_dir, '--app', app_id)}"}
    dataset_version = ready_dataset_version(url, headers, app_id, lines=lines)
    models = f"{url}/api/apps/{app_id}/models"
    assert httpx.post(models, json={"id": model_id}, headers=headers).status_code == 201
    version_id = train_version(f"{models}/{model_id}", headers, dataset_version, trainer_config=trainer_config)
    return Deployed(url, data_dir, headers, app_id, model_id, version_id, dataset_version)


def ready_dataset_version(
    url: str, headers: dict[str, str], app_id: str, dataset_id: str = "reviews", lines: list[str] | None = None
) -> str:
    """A READY snapshot of a dataset holding `lines` (default: the sectioned sentiment lines)."""
    base = f"{url}/api/apps/{app_id}/datasets"
    assert httpx.post(base, json={"id": dataset_id}, headers=headers).status_code == 201
    body = ("\n".join(sentiment_lines() if lines is None else lines) + "\n").encode()
    assert httpx.post(f"{base}/{dataset_id}/uploads", content=body, headers=headers).status_code == 201
    version = httpx.post(f"{base}/{dataset_id}/versions", headers=headers).json()
    assert version["state"] == "READY", version
    return str(version["id"])


def enqueue(db: Database, app_id: str, model_id: str, dataset_version_id: str) -> ModelVersion:
    return jobs.enqueue(
        db, app_id, model_id, dataset_version_id=dataset_version_id, template="tiny-random", settings=_settings()
    )


@functools.cache
def _settings() -> dict[str, Any]:
    """Resolved once: resolving takes a sixth of a second, and tests queue runs by the hundred."""
    return resolve_settings("tiny-random", {"trainer_config": TRAIN_FAST}).to_dict()


def train_version(
    model_url: str,
    headers: dict[str, str],
    dataset_version_id: str,
    timeout_s: float = 180,
    *,
    trainer_config: dict[str, Any] = TRAIN_FAST,
) -> str:
    """Queue a run through the API and wait for the server's worker to train it."""
    body = {"dataset_version_id": dataset_version_id, "template": "tiny-random", "trainer_config": trainer_config}
    queued = httpx.post(f"{model_url}/versions", json=body, headers=headers, timeout=60)
    assert queued.status_code == 201, queued.text
    version_url = f"{model_url}/versions/{queued.json()['id']}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(version_url, headers=headers, timeout=30).json()["status"]
        if status["name"] not in ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING"):
            assert status["name"] == "MODEL_TRAINED", status
            return str(queued.json()["id"])
        time.sleep(0.5)
    raise AssertionError(f"{version_url} did not finish training in {timeout_s:.0f} s")


def unfinished_version(db: Database, app_id: str, model_id: str, dataset_version_id: str, *, fail: bool) -> str:
    """A version that never becomes trained: claimed here and left MODEL_TRAINING, or ended FAILED.

    Retried if the server's worker wins the claim (that job then trains; it is simply not used).
    """
    for _ in range(5):
        job = enqueue(db, app_id, model_id, dataset_version_id)
        claimed = jobs.claim_next(db, WORKER_ID, lease_seconds=3600)
        if claimed is not None and claimed.id == job.id:
            if fail:
                status = TrainingStatus.MODEL_TRAINING_FAILED
                jobs.finish(db, job.id, status, "ran out of memory (test)", worker_id=WORKER_ID)
            return job.id
    raise AssertionError("the server's worker claimed every job first")
