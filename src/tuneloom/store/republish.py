"""Sharing a trained model version again after its worker could not: `tuneloom store republish ID`.

A worker publishes what it trained to the shared store before the run is MODEL_TRAINED. When the
store refuses it through every retry (`WorkerConfig.publish_retry_s`), the run ends
MODEL_TRAINING_FAILED and its files stay in that worker's data dir; the run's message says where and
names the command (`unshared_message`). Run on that machine once the store is back, `republish`
checks the kept folder against the checksums training wrote into its `tuneloom.json`, publishes it
(content, then its index) and only then marks the run MODEL_TRAINED, with the message
compare-and-set, so a second republish or a delete meanwhile is seen rather than overwritten.

A run waiting for this still owns `model-versions/<id>` on the store (`awaits_republish`): the sweep
(`store.sweep`) leaves what a cut-short publish left there, which republishing rewrites anyway.
"""

from __future__ import annotations

import shlex
import socket

from sqlalchemy import update

from tuneloom.errors import ConflictError, ModelVersionError, NotFoundError, TuneloomError
from tuneloom.model_version import open_version
from tuneloom.store import telemetry
from tuneloom.store.artifacts import CHECKPOINTS, Artifacts
from tuneloom.store.db import Database, default_url, shown_url
from tuneloom.store.ids import check_id
from tuneloom.store.models import ModelVersion, TrainingStatus
from tuneloom.store.registry import get_model_version_by_id

UNSHARED = "training finished but the model version could not be shared"
FAILED = TrainingStatus.MODEL_TRAINING_FAILED


class NoSharedStoreError(TuneloomError):
    """`republish` was run without the shared store to publish to."""

    code = "NO_ARTIFACT_STORE"


def awaits_republish(status: str, message: str | None) -> bool:
    """Whether a run trained but could not be shared, so `republish` may still publish its kept files."""
    return status == FAILED.name and (message or "").startswith(UNSHARED)


def unshared_message(problem: str, db: Database, artifacts: Artifacts, version_id: str, worker_id: str) -> str:
    """A run's failure message when the store never took it: why, where its files are, the exact command."""
    where = f"its files stay in {artifacts.model_version_dir(version_id)} on worker {worker_id}"
    return f"{UNSHARED}: {problem} ({where}; to share them, run there: {republish_command(db, artifacts, version_id)})"


def republish_command(db: Database, artifacts: Artifacts, version_id: str) -> str:
    """`tuneloom store republish` with this worker's data dir, database (password hidden) and store."""
    words = ["tuneloom", "store", "republish", version_id, "--data-dir", str(artifacts.root)]
    if db.url != default_url(artifacts.root):
        words += ["--database-url", shown_url(db.url)]
    if artifacts.shared is not None and artifacts.shared.url:
        words += ["--artifact-url", artifacts.shared.url]
    return shlex.join(words)


def republish(db: Database, artifacts: Artifacts, version_id: str) -> ModelVersion:
    """Publish the kept files of a run its worker could not share, then mark it MODEL_TRAINED.

    Refused, with nothing published, when there is no shared store, when the run is in any other
    state, or when its folder is missing here or does not match its checksums (the file named).
    """
    if artifacts.shared is None:
        raise NoSharedStoreError(
            "republish shares a model version through the store: give the worker's --artifact-url "
            "(or set TUNELOOM_ARTIFACT_URL)"
        )
    run = get_model_version_by_id(db, check_id(version_id, "model version id"))
    _check_waiting(run)
    folder = artifacts.model_version_dir(run.id)
    try:
        open_version(folder, label=f"model version '{run.id}' ({folder})")
    except ModelVersionError as err:
        elsewhere = "" if folder.exists() else f"; its files are kept by worker {run.worker_id}: run this there"
        raise ModelVersionError(f"{err.message}{elsewhere}; nothing was published", details=err.details) from None
    relative = artifacts.relative(folder)
    artifacts.publish(relative)
    trained = _mark_trained(db, artifacts, run, relative)
    line = f"model version shared by `tuneloom store republish` on {socket.gethostname()}; it is MODEL_TRAINED"
    telemetry.append_logs(db, run.id, [("info", line)])
    artifacts.remove(f"{CHECKPOINTS}/{run.id}")  # as after a run that published at once: it never resumes
    return trained


def _check_waiting(run: ModelVersion) -> None:
    if run.status == TrainingStatus.MODEL_TRAINED.name:
        raise ConflictError(f"model version '{run.id}' is already MODEL_TRAINED: nothing to republish")
    if not awaits_republish(run.status, run.message):
        raise ConflictError(
            f"model version '{run.id}' is {run.status} ({run.message or 'no message'}); only a run whose training "
            f"finished but whose files could not be shared ('{UNSHARED}') can be republished",
            details={"status": run.status},
        )


def _mark_trained(db: Database, artifacts: Artifacts, run: ModelVersion, relative: str) -> ModelVersion:
    """MODEL_TRAINED, if the run is still as read; a run deleted meanwhile loses the copy just published."""
    with db.write() as session:
        changed = session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == run.id, ModelVersion.status == FAILED.name, ModelVersion.message == run.message)
            .values(
                status=TrainingStatus.MODEL_TRAINED.name,
                status_code=TrainingStatus.MODEL_TRAINED.code,
                artifact_path=relative,
                message=None,
            )
        ).rowcount  # type: ignore[attr-defined]
        now = session.get(ModelVersion, run.id)
    if now is None:
        assert artifacts.shared is not None
        artifacts.shared.remove_shared(relative)
        raise NotFoundError(
            f"model version '{run.id}' was deleted while it was being published; its copy on the store was removed"
        )
    if not changed and now.status != TrainingStatus.MODEL_TRAINED.name:
        raise ConflictError(f"model version '{run.id}' changed while it was being published: it is now {now.status}")
    return now
