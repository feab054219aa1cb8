"""What a training run reports while it runs: metric points (loss per step) and log lines.

Both are append-only and read back incrementally (`after_step`, `after_seq`), so the API can
stream them to a client that polls or listens without re-sending what it already has. Log lines
are numbered per run under the run's row lock, so two writers (a worker and the server noting a
cancel) never collide on a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from tuneloom.store.db import Database
from tuneloom.store.ids import check_id
from tuneloom.store.jobs import RunDeletedError
from tuneloom.store.models import LogLine, MetricPoint, ModelVersion, utcnow

LEVELS = ("debug", "info", "warning", "error")
MAX_LOG_MESSAGE = 4000
MAX_PAGE = 1000


def add_metrics(db: Database, job_id: str, points: Iterable[Mapping[str, Any]]) -> int:
    """Store points given as {"step", "loss"?, "eval_loss"?, "learning_rate"?, "at"?}; returns how many."""
    now = utcnow()
    rows = [
        {
            "model_version_id": job_id,
            "step": int(p["step"]),
            "loss": _float(p.get("loss")),
            "eval_loss": _float(p.get("eval_loss")),
            "learning_rate": _float(p.get("learning_rate")),
            "at": p.get("at") or now,
        }
        for p in points
    ]
    if rows:
        with db.write() as session:
            _lock_job(session, job_id)
            session.execute(insert(MetricPoint), rows)
    return len(rows)


def list_metrics(db: Database, job_id: str, *, after_step: int | None = None) -> list[MetricPoint]:
    query = select(MetricPoint).where(MetricPoint.model_version_id == check_id(job_id, "model version id"))
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    with db.read() as session:
        return list(session.scalars(query.order_by(MetricPoint.step, MetricPoint.pk)))


def append_logs(db: Database, job_id: str, lines: Iterable[tuple[str, str]], *, at: datetime | None = None) -> int:
    """Append (level, message) lines; returns the number of the last line (0 if none exist)."""
    with db.write() as session:
        _lock_job(session, job_id)
        seq = int(session.scalar(select(func.max(LogLine.seq)).where(LogLine.model_version_id == job_id)) or 0)
        rows = []
        for level, message in lines:
            seq += 1
            rows.append(
                {
                    "model_version_id": job_id,
                    "seq": seq,
                    "at": at or utcnow(),
                    "level": level if level in LEVELS else "info",
                    "message": message[:MAX_LOG_MESSAGE],
                }
            )
        if rows:
            session.execute(insert(LogLine), rows)
    return seq


def list_logs(db: Database, job_id: str, *, after_seq: int = 0, limit: int = 200) -> list[LogLine]:
    limit = max(1, min(int(limit), MAX_PAGE))
    query = select(LogLine).where(
        LogLine.model_version_id == check_id(job_id, "model version id"), LogLine.seq > after_seq
    )
    with db.read() as session:
        return list(session.scalars(query.order_by(LogLine.seq).limit(limit)))


def _lock_job(session: Session, job_id: str) -> None:
    """Lock the run's row (log lines are numbered under it).

    Only workers write here, so a run that is gone was deleted while it trained (its model or app
    deleted): RunDeletedError tells the worker to stop it, where a NotFoundError ended the worker's thread.
    """
    if session.get(ModelVersion, check_id(job_id, "model version id"), with_for_update=True) is None:
        raise RunDeletedError(f"model version '{job_id}' was deleted while it was training")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
