"""The durable training queue: model-version rows are the jobs, workers lease them.

Life of a job: `enqueue` → QUEUED → `claim_next` (one worker, `attempts` + 1, a lease until
`lease_expires_at`) → TRAINING → `heartbeat`s extend the lease → `finish` with a final status.
A worker that dies stops heartbeating; `requeue_expired` (run periodically by any process) puts its
job back in the queue, or fails it once `attempts` reached `max_attempts` — so a job that kills its
worker every time cannot loop forever. A requeued job keeps its place (queue order is creation
order) and its progress; the next worker resumes from `artifacts.checkpoint_dir(job.id)`. A worker
shutting down cleanly calls `release` instead, which requeues without spending an attempt.

No job is ever claimed twice: on PostgreSQL `claim_next` locks the row with
`FOR UPDATE SKIP LOCKED` (concurrent claimers skip it and take the next one); on SQLite the
whole claim runs inside `BEGIN IMMEDIATE`, so claimers are serialized by the writer lock. Every
other transition is a compare-and-set on (id, status, worker_id), so a worker whose lease was taken
away learns it (`LeaseLostError`) instead of overwriting the new owner's state. Times are the
callers' clocks in UTC; machines sharing a database are assumed to keep them in sync (NTP).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, true, update
from sqlalchemy.orm import Session

from tuneloom.errors import SettingsError, TuneloomError
from tuneloom.store.db import Database, fetch
from tuneloom.store.ids import ConflictError, NotFoundError, check_id, new_id
from tuneloom.store.models import QUEUED, RUNNING, Dataset, DatasetVersion, ModelVersion, TrainingStatus, utcnow
from tuneloom.store.registry import find_model
from tuneloom.store.workers import Capacity, live_capacities
from tuneloom.templates.requirements import job_requirement
from tuneloom.templates.settings import TrainingSettings
from tuneloom.templates.settings_distributed import check_queueable

DEFAULT_MAX_ATTEMPTS = 3


class LeaseLostError(TuneloomError):
    """This worker no longer holds the job (lease expired and requeued, job deleted): stop working on it."""

    code = "LEASE_LOST"


class RunDeletedError(LeaseLostError):
    """The job's row is gone (the run, its model or its app was deleted while it ran): stop and drop its files.

    Unlike a lease taken over by another worker, nobody will ever resume it, and its checkpoints and
    output are nobody's: the API removed them already, but the training process may have written more
    before its worker noticed.
    """

    code = "RUN_DELETED"


def enqueue(
    db: Database,
    app_id: str,
    model_id: str,
    *,
    dataset_version_id: str,
    template: str,
    settings: Mapping[str, Any],
    resume_from: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> ModelVersion:
    """Queue a training run. `settings` are already validated (`resolve_settings(...).to_dict()`).

    Checked here as well, because a bad job would only fail later on a worker: the six settings
    keys are present, the run is on one machine, the dataset version is READY and in the same app,
    and `resume_from` is a trained version of the same model. The model, the dataset and
    `resume_from` are locked while the run is inserted (`FOR UPDATE`; on SQLite the writer lock), as
    their deletes lock them: a delete either sees this run (a dataset's or a starting point's is then
    refused, a model's deletes the run with it) or commits first and this run is refused.
    """
    stored = TrainingSettings.from_dict(settings).to_dict()
    check_queueable(stored.get("distributed") or {})
    needs = job_requirement(template, stored)
    with db.write() as session:
        model = find_model(session, app_id, model_id, lock=True)
        _check_dataset_version(session, model.app_id, dataset_version_id)
        if resume_from is not None:
            _check_resume_from(session, model.pk, resume_from, template)
        job = ModelVersion(
            id=new_id(),
            model_pk=model.pk,
            dataset_version_id=dataset_version_id,
            resume_from=resume_from,
            template=template,
            settings=stored,
            max_attempts=max(1, int(max_attempts)),
            needs_cuda=needs.cuda,
            needs_memory_mb=needs.memory_mb,
            needs_gpu_count=needs.gpus,
        )
        _set_status(job, TrainingStatus.MODEL_QUEUED_FOR_TRAINING)
        session.add(job)
    return job


def claim_next(
    db: Database,
    worker_id: str,
    lease_seconds: float,
    *,
    capacity: Capacity | None = None,
    now: datetime | None = None,
) -> ModelVersion | None:
    """Take the oldest queued job for `worker_id` that fits its `capacity` (None: any job), or None.

    A job that does not fit is skipped, not waited for: the worker takes the next one that does.
    """
    now = now or utcnow()
    fits = capacity.fits_clause() if capacity is not None else true()
    with db.write() as session:
        job = session.scalar(
            select(ModelVersion)
            .where(ModelVersion.status == QUEUED, fits)
            .order_by(ModelVersion.created_at, ModelVersion.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if job is None:
            return None
        _set_status(job, TrainingStatus.MODEL_TRAINING)
        job.worker_id = worker_id
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.attempts += 1
        job.started_at = job.started_at or now
        job.message = None
    return job


def heartbeat(
    db: Database,
    job_id: str,
    worker_id: str,
    lease_seconds: float,
    *,
    step: int | None = None,
    total_steps: int | None = None,
    eta_s: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Extend the lease and record progress; returns True when the user asked to cancel."""
    now = now or utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
    values.update({k: v for k, v in (("step", step), ("total_steps", total_steps), ("eta_s", eta_s)) if v is not None})
    with db.write() as session:
        _compare_and_set(session, job_id, worker_id, values)
        return bool(session.scalar(select(ModelVersion.cancel_requested).where(ModelVersion.id == job_id)))


def finish(
    db: Database,
    job_id: str,
    status: TrainingStatus,
    message: str | None = None,
    artifact_path: str | None = None,
    *,
    worker_id: str,
    now: datetime | None = None,
) -> ModelVersion:
    """Record a run's final status (and, for MODEL_TRAINED, the data-dir-relative artifact path)."""
    if not status.is_final:
        raise ValueError(f"{status.name} is not a final status")
    if (status is TrainingStatus.MODEL_TRAINED) != (artifact_path is not None):
        raise ValueError("an artifact path is given exactly when the run is MODEL_TRAINED")
    values = {
        "status": status.name,
        "status_code": status.code,
        "message": message,
        "artifact_path": artifact_path,
        "finished_at": now or utcnow(),
        "lease_expires_at": None,
        "eta_s": None,
    }
    with db.write() as session:
        _compare_and_set(session, job_id, worker_id, values)
        job = session.get(ModelVersion, job_id)
        assert job is not None
        return job


def release(db: Database, job_id: str, worker_id: str, message: str | None = None) -> ModelVersion:
    """Give a claimed job back to the queue without spending an attempt (a worker shutting down cleanly).

    The job keeps its place and progress; the next claimer resumes it from its checkpoints.
    """
    with db.write() as session:
        job = session.get(ModelVersion, check_id(job_id, "model version id"), with_for_update=True)
        if job is None:
            raise RunDeletedError(f"model version '{job_id}' was deleted while worker {worker_id} held it")
        if job.status != RUNNING or job.worker_id != worker_id:
            raise LeaseLostError(f"worker {worker_id} no longer holds model version '{job_id}'")
        if job.cancel_requested:
            _end(job, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled", utcnow())
        else:
            _set_status(job, TrainingStatus.MODEL_QUEUED_FOR_TRAINING)
            job.attempts = max(0, job.attempts - 1)
            job.message = message or f"released by worker {worker_id}; waiting for another"
        job.worker_id = None
        job.lease_expires_at = None
    return job


def requeue_expired(db: Database, *, now: datetime | None = None) -> list[ModelVersion]:
    """Return jobs whose lease ran out to the queue, or end them; returns the jobs changed."""
    now = now or utcnow()
    with db.write() as session:
        expired = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.status == RUNNING, ModelVersion.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            _expire(job, now)
    return list(expired)


def _expire(job: ModelVersion, now: datetime) -> None:
    lost = f"worker {job.worker_id} stopped responding (attempt {job.attempts} of {job.max_attempts})"
    if job.cancel_requested:
        _end(job, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled", now)
    elif job.attempts >= job.max_attempts:
        _end(job, TrainingStatus.MODEL_TRAINING_FAILED, f"training failed: {lost}; giving up", now)
    else:
        _set_status(job, TrainingStatus.MODEL_QUEUED_FOR_TRAINING)
        job.message = f"requeued: {lost}"
    job.worker_id = None
    job.lease_expires_at = None


def queue_position(db: Database, job_id: str, *, now: datetime | None = None) -> int | None:
    """1 for the next job to be claimed; None when the job is not waiting in the queue.

    Runs ahead that no live worker can take (a GPU-only run among CPU workers) hold nobody up, so they
    are not counted; with no live worker at all, every earlier run is.
    """
    with db.read() as session:
        job = _get(session, job_id)
        if job.status != QUEUED:
            return None
        live = live_capacities(session, now or utcnow())
        ahead = session.scalar(
            select(func.count()).where(
                ModelVersion.status == QUEUED,
                or_(
                    ModelVersion.created_at < job.created_at,
                    and_(ModelVersion.created_at == job.created_at, ModelVersion.id < job.id),
                ),
                or_(*(capacity.fits_clause() for capacity in live)) if live else true(),
            )
        )
        return int(ahead or 0) + 1


def request_cancel(db: Database, job_id: str, *, now: datetime | None = None) -> ModelVersion:
    """Cancel: a queued job ends at once; a training one is flagged and its worker stops at its next heartbeat.

    A job that has already ended is a ConflictError naming its status (in `details["status"]`): a 200
    would tell the caller the run was stopped when it had trained, failed or been cancelled before.
    """
    with db.write() as session:
        job = fetch(session, ModelVersion, job_id, "model version", lock=True)
        if job.status == QUEUED:
            _end(job, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled before training started", now or utcnow())
        elif job.status == RUNNING:
            job.cancel_requested = True
        else:
            raise ConflictError(
                f"model version '{job_id}' has already ended as {job.status}; only a queued or training run can "
                "be cancelled",
                details={"status": job.status},
            )
    return job


def _compare_and_set(session: Session, job_id: str, worker_id: str, values: dict[str, Any]) -> None:
    """Update the job only while `worker_id` holds it; otherwise raise LeaseLostError."""
    changed = session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.id == check_id(job_id, "model version id"),
            ModelVersion.status == RUNNING,
            ModelVersion.worker_id == worker_id,
        )
        .values(**values)
    ).rowcount  # type: ignore[attr-defined]
    if changed:
        return
    if session.get(ModelVersion, job_id) is None:
        raise RunDeletedError(f"model version '{job_id}' was deleted while worker {worker_id} held it")
    raise LeaseLostError(f"worker {worker_id} no longer holds model version '{job_id}'")


def _check_dataset_version(session: Session, app_id: str, version_id: str) -> None:
    """The version is READY and in the app; its dataset's row stays locked (the dataset's and the version's
    deletes lock it too).

    The version is read again once the lock is held: a version delete locks the dataset's row without
    changing it, so the locking read still returns the version as it was before waiting (READ COMMITTED),
    and the run's insert would then fail on the foreign key.
    """
    found = session.execute(
        select(Dataset.app_id)
        .join(DatasetVersion, DatasetVersion.dataset_pk == Dataset.pk)
        .where(DatasetVersion.id == check_id(version_id, "dataset version id"))
        .with_for_update(of=Dataset)
    ).first()
    state = session.scalar(select(DatasetVersion.state).where(DatasetVersion.id == version_id))
    if found is None or found.app_id != app_id or state is None:
        raise NotFoundError(
            f"dataset version '{version_id}' not found in app '{app_id}'", details={"key": "dataset_version_id"}
        )
    if state != "READY":
        raise ConflictError(f"dataset version '{version_id}' is {state}; only a READY version can be trained on")


def _check_resume_from(session: Session, model_pk: int, version_id: str, template: str) -> None:
    earlier = session.get(ModelVersion, check_id(version_id, "resume_from"), with_for_update=True)
    if earlier is None or earlier.model_pk != model_pk:
        raise SettingsError(f"resume_from '{version_id}' is not a version of this model", key="resume_from")
    if earlier.status != TrainingStatus.MODEL_TRAINED.name:
        raise SettingsError(f"resume_from '{version_id}' is {earlier.status}, not MODEL_TRAINED", key="resume_from")
    if earlier.template != template:
        raise SettingsError(
            f"resume_from '{version_id}' was trained from template '{earlier.template}', not '{template}'; "
            "training again continues the same base model",
            key="template",
        )


def _get(session: Session, job_id: str) -> ModelVersion:
    return fetch(session, ModelVersion, job_id, "model version")


def _set_status(job: ModelVersion, status: TrainingStatus) -> None:
    job.status = status.name
    job.status_code = status.code


def _end(job: ModelVersion, status: TrainingStatus, message: str, now: datetime) -> None:
    _set_status(job, status)
    job.message = message
    job.finished_at = now
    job.eta_s = None
