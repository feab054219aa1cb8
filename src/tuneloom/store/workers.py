"""Worker slots and what they can run: capacity advertised in the database, matched against each run's needs.

Every slot of a `tuneloom worker` / `tuneloom serve` process upserts its row here when it starts and
then every few seconds (`beat`); a row whose `heartbeat_at` is older than its `lease_s` is a worker
that is gone. `claim_next` (in `jobs`) takes only runs that `fits` the claiming slot's capacity, in
the same SQL as the claim, so a run that one worker cannot take does not stop it from taking the
ones behind. A run that no live worker can take stays queued, and `waiting_reason` says why, for
the API and the CLI ("waiting for a worker with a CUDA GPU (quantization_config needs one) (live
workers: 1, CPU only, 15,990 MiB)").

GPUs are counted per slot: a worker's slots split its GPUs (`tuneloom.worker.pool`), and a run over
N processes takes N of its slot's GPUs, so it waits for a slot with N (or, when it can train on
CPUs, for one with none) rather than fail on one with fewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import Session

from tuneloom.errors import TuneloomError
from tuneloom.store.db import Database
from tuneloom.store.models import QUEUED, RUNNING, ModelVersion, Worker, utcnow
from tuneloom.templates.requirements import Requirement, job_requirement

FORGET_AFTER = timedelta(days=1)  # rows of workers gone this long are deleted


@dataclass(frozen=True)
class Capacity:
    """What one worker slot offers a training run."""

    gpu_count: int = 0  # the GPUs this slot may use (its share of the machine's)
    gpu_memory_mb: int = 0  # the smallest of its GPUs
    cpu_memory_mb: int = 0

    def fits(self, job: ModelVersion) -> bool:
        """The same test as `fits_clause`, for a run already read.

        With GPUs, a run takes one per process, so it needs that many, and each process's share of
        the weights lives on its own GPU. Without, its processes share the CPUs, which any run that
        does not need CUDA can do (`train.launch.check_this_machine`), and the machine's memory,
        which must then hold every process's copy.
        """
        if self.gpu_count:
            gpus_ok, memory_mb = job.needs_gpu_count <= self.gpu_count, job.needs_memory_mb
        else:
            gpus_ok = not job.needs_cuda
            memory_mb = None if job.needs_memory_mb is None else job.needs_memory_mb * job.needs_gpu_count
        return gpus_ok and (memory_mb is None or memory_mb <= self._memory_mb)

    def fits_clause(self) -> ColumnElement[bool]:
        """SQL: the queued runs this capacity can take (see `fits`)."""
        if self.gpu_count:
            gpus_ok = ModelVersion.needs_gpu_count <= self.gpu_count
            memory_ok = ModelVersion.needs_memory_mb <= self._memory_mb
        else:
            gpus_ok = ModelVersion.needs_cuda.is_(False)
            memory_ok = ModelVersion.needs_memory_mb * ModelVersion.needs_gpu_count <= self._memory_mb
        return and_(gpus_ok, or_(ModelVersion.needs_memory_mb.is_(None), memory_ok))

    @property
    def _memory_mb(self) -> int:
        """Where the weights live while training: the GPUs' memory when there are any, else the machine's."""
        return self.gpu_memory_mb if self.gpu_count else self.cpu_memory_mb

    def describe(self) -> str:
        if not self.gpu_count:
            return f"CPU only, {self.cpu_memory_mb:,} MiB"
        gpus = f"{self.gpu_count} GPU{'s' if self.gpu_count > 1 else ''}"
        return f"{gpus} × {self.gpu_memory_mb:,} MiB, {self.cpu_memory_mb:,} MiB CPU"


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    capacity: Capacity
    started_at: datetime
    heartbeat_at: datetime
    live: bool
    job_id: str | None  # the run it trains now


def beat(db: Database, worker_id: str, capacity: Capacity, lease_s: float, *, now: datetime | None = None) -> None:
    """Register or refresh a slot: its capacity and that it is alive (first call registers it)."""
    now = now or utcnow()
    values: dict[str, Any] = {
        "host": worker_id.rsplit(":", 2)[0],
        "gpu_count": capacity.gpu_count,
        "gpu_memory_mb": capacity.gpu_memory_mb,
        "cpu_memory_mb": capacity.cpu_memory_mb,
        "lease_s": lease_s,
        "heartbeat_at": now,
    }
    with db.write() as session:
        row = session.get(Worker, worker_id)
        if row is None:
            session.add(Worker(id=worker_id, started_at=now, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)


def leave(db: Database, worker_id: str) -> None:
    """A slot stopping cleanly removes its row, so it no longer counts as a live worker."""
    with db.write() as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))


def list_workers(db: Database, *, now: datetime | None = None) -> list[WorkerInfo]:
    """Every known slot, live ones first; rows of workers gone for a day are forgotten."""
    now = now or utcnow()
    with db.write() as session:
        session.execute(delete(Worker).where(Worker.heartbeat_at < now - FORGET_AFTER))
        rows = session.execute(
            select(Worker, ModelVersion.id)
            .outerjoin(ModelVersion, and_(ModelVersion.worker_id == Worker.id, ModelVersion.status == RUNNING))
            .order_by(Worker.host, Worker.id)
        ).all()
    found = [_info(worker, job_id, now) for worker, job_id in rows]
    return sorted(found, key=lambda w: not w.live)


def live_capacities(session: Session, now: datetime) -> list[Capacity]:
    workers = session.scalars(select(Worker)).all()
    return [_capacity(w) for w in workers if _is_live(w, now)]


def waiting_reason(db: Database, job: ModelVersion, *, now: datetime | None = None) -> str | None:
    """Why a queued run cannot start on any live worker, or None when one could take it."""
    now = now or utcnow()
    with db.read() as session:
        live = live_capacities(session, now)
    return _reason(job, live)


def stuck_jobs(db: Database, *, now: datetime | None = None, limit: int = 100) -> list[tuple[ModelVersion, str]]:
    """Queued runs (oldest first, at most `limit`) that no live worker can take, each with why."""
    now = now or utcnow()
    with db.read() as session:
        live = live_capacities(session, now)
        queued = session.scalars(
            select(ModelVersion).where(ModelVersion.status == QUEUED).order_by(ModelVersion.created_at).limit(limit)
        ).all()
    return [(job, why) for job in queued if (why := _reason(job, live))]


def _reason(job: ModelVersion, live: list[Capacity]) -> str | None:
    if any(c.fits(job) for c in live):
        return None
    requirement = _requirement(job)
    needs = [need for need in (_gpu_need(job, requirement), _memory_need(job, requirement)) if need]
    wanted = f" with {' and '.join(needs)}" if needs else ""
    return f"waiting for a worker{wanted} (live workers: {_summary(live)}{_split_hint(job, live)})"


def _gpu_need(job: ModelVersion, requirement: Requirement) -> str | None:
    gpus, why = job.needs_gpu_count, requirement.cuda_why or "its settings"
    if gpus > 1 and job.needs_cuda:
        return f"at least {gpus} CUDA GPUs ({why} needs CUDA, and each of its {gpus} processes a GPU of its own)"
    if gpus > 1:
        return f"at least {gpus} GPUs or none (each of its {gpus} processes needs a GPU of its own where there are any)"
    return f"a CUDA GPU ({why} needs one)" if job.needs_cuda else None


def _memory_need(job: ModelVersion, requirement: Requirement) -> str | None:
    if not job.needs_memory_mb:
        return None
    where = "GPU memory" if job.needs_cuda else "memory"
    each = f" per process ({job.needs_gpu_count} processes)" if job.needs_gpu_count > 1 else ""
    return f"at least {job.needs_memory_mb:,} MiB of {where}{each} for {requirement.memory_what}"


def _split_hint(job: ModelVersion, live: list[Capacity]) -> str:
    """Where the GPUs are there but split among slots, how to put them together."""
    if not any(0 < c.gpu_count < job.needs_gpu_count for c in live):
        return ""
    return "; a worker's slots split its GPUs: `tuneloom worker --workers 1` gives its one slot all of them"


def _requirement(job: ModelVersion) -> Requirement:
    try:
        return job_requirement(job.template, job.settings)
    except TuneloomError:  # settings an older tuneloom stored in another shape: the stored figures still hold
        return Requirement()


def _summary(live: list[Capacity]) -> str:
    if not live:
        return "none"
    kinds = sorted({c.describe() for c in live})
    return f"{len(live)}, " + "; ".join(kinds)


def _info(worker: Worker, job_id: str | None, now: datetime) -> WorkerInfo:
    return WorkerInfo(
        worker.id, worker.host, _capacity(worker), worker.started_at, worker.heartbeat_at, _is_live(worker, now), job_id
    )


def _capacity(worker: Worker) -> Capacity:
    return Capacity(worker.gpu_count, worker.gpu_memory_mb, worker.cpu_memory_mb)


def _is_live(worker: Worker, now: datetime) -> bool:
    return worker.heartbeat_at + timedelta(seconds=worker.lease_s) >= now
