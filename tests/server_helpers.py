"""A trained model version in a running server's database, made without waiting on its training worker.

The dataset version comes through the HTTP API (upload, then snapshot); the model and its training
job go through the store, as a worker would see them. The job is claimed by the test itself and
trained with the real `tuneloom train` (tiny-random: seconds) into `<data_dir>/model-versions/<id>/`.
`tuneloom serve` also runs a worker that polls the queue every second; if it wins the claim, it
trains the job itself and the helper waits for it — either way the version ends MODEL_TRAINED.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.conftest import DATABASE_URL_FILE, api_key, run_cli, sentiment_lines

from tuneloom.store import jobs, registry
from tuneloom.store.db import Database, open_database
from tuneloom.store.models import ModelVersion, TrainingStatus
from tuneloom.templates import resolve_settings

TRAIN_FAST = {"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 0.05}
WORKER_ID = "tests"


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
    marker = data_dir / DATABASE_URL_FILE
    url = marker.read_text(encoding="utf-8") if marker.is_file() else None
    return open_database(url, data_dir=data_dir, migrate=False)


def deploy(url: str, data_dir: Path, app_id: str = "shop", model_id: str = "sentiment-gen") -> Deployed:
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": app_id}, headers=admin).status_code == 201
    headers = {"Authorization": f"Key {api_key(data_dir, '--app', app_id)}"}
    dataset_version = ready_dataset_version(url, headers, app_id)
    db = server_database(data_dir)
    try:
        registry.create_model(db, app_id, model_id)
        version_id = train_version(db, data_dir, app_id, model_id, dataset_version)
    finally:
        db.dispose()
    return Deployed(url, data_dir, headers, app_id, model_id, version_id, dataset_version)


def ready_dataset_version(url: str, headers: dict[str, str], app_id: str, dataset_id: str = "reviews") -> str:
    base = f"{url}/api/apps/{app_id}/datasets"
    assert httpx.post(base, json={"id": dataset_id}, headers=headers).status_code == 201
    body = ("\n".join(sentiment_lines()) + "\n").encode()
    assert httpx.post(f"{base}/{dataset_id}/uploads", content=body, headers=headers).status_code == 201
    version = httpx.post(f"{base}/{dataset_id}/versions", headers=headers).json()
    assert version["state"] == "READY", version
    return str(version["id"])


def enqueue(db: Database, app_id: str, model_id: str, dataset_version_id: str) -> ModelVersion:
    settings = resolve_settings("tiny-random", {"trainer_config": TRAIN_FAST}).to_dict()
    return jobs.enqueue(
        db, app_id, model_id, dataset_version_id=dataset_version_id, template="tiny-random", settings=settings
    )


def train_version(db: Database, data_dir: Path, app_id: str, model_id: str, dataset_version_id: str) -> str:
    """Queue a run and see it through to MODEL_TRAINED (trained here, or by the server's worker)."""
    job = enqueue(db, app_id, model_id, dataset_version_id)
    claimed = jobs.claim_next(db, WORKER_ID, lease_seconds=3600)
    if claimed is None:  # the server's worker took it first
        return wait_until_trained(db, app_id, model_id, job.id)
    assert claimed.id == job.id, "another job was queued"
    data = data_dir / "model-versions-train.txt"
    data.write_text("\n".join(sentiment_lines()) + "\n", encoding="utf-8")
    out = data_dir / "model-versions" / job.id
    result = run_cli(
        "train",
        str(data),
        "--template",
        "tiny-random",
        "--output",
        str(out),
        "--trainer-config",
        json.dumps(TRAIN_FAST),
    )
    assert result.returncode == 0, result.stderr
    path = f"model-versions/{job.id}"
    jobs.finish(db, job.id, TrainingStatus.MODEL_TRAINED, artifact_path=path, worker_id=WORKER_ID)
    return job.id


def wait_until_trained(db: Database, app_id: str, model_id: str, version_id: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        version = registry.get_model_version(db, app_id, model_id, version_id)
        if version.status_enum.is_final:
            assert version.status == TrainingStatus.MODEL_TRAINED.name, (version.status, version.message)
            return version_id
        time.sleep(0.5)
    raise AssertionError(f"model version {version_id} did not finish training in {timeout_s:.0f} s")


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
