"""What a training run reports while it runs: metric points (loss per step) and log lines.

Both are append-only and read back incrementally (`after_step`, `after_seq`), so the API can
stream them to a client that polls or listens without re-sending what it already has. Log lines
are numbered per run under the run's row lock, so two writers (a worker and the server noting a
cancel) never collide on a number. A long run's curve is read `downsampled_metrics` for charts and its log
from the `tail`, so a page opens on a bounded download however long the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select
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


def downsampled_metrics(
    db: Database, job_id: str, max_points: int, *, after_step: int | None = None
) -> list[dict[str, Any]]:
    """At most `max_points` points per series (loss, eval loss), drawn as the whole curve would be.

    A chart is a few hundred pixels wide: 20,000 points draw no better than 1,000 but cost
    megabytes and a path the browser redraws slowly. Each series keeps its first and last point
    exactly and, in between, the lowest and the highest value of each of equal runs of points, so
    spikes and the trend stay; a row keeps only the values chosen for it (the other is null). The
    curve is read as bare numbers and only the rows kept are read whole: 170,000 points take
    about a second, where reading them all as rows took three.
    """
    query = select(MetricPoint.pk, MetricPoint.step, MetricPoint.loss, MetricPoint.eval_loss).where(
        MetricPoint.model_version_id == check_id(job_id, "model version id")
    )
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    with db.read() as session:
        rows = session.execute(query.order_by(MetricPoint.step, MetricPoint.pk)).all()
        loss, evals = _extremes(rows, "loss", max_points), _extremes(rows, "eval_loss", max_points)
        kept = sorted(loss | evals)
        whole = _points_by_pk(session, [rows[i].pk for i in kept])
    return [
        {
            "step": rows[i].step,
            "loss": rows[i].loss if i in loss else None,
            "eval_loss": rows[i].eval_loss if i in evals else None,
            "learning_rate": whole[rows[i].pk].learning_rate,
            "at": whole[rows[i].pk].at,
        }
        for i in kept
    ]


def _points_by_pk(session: Session, pks: list[int]) -> dict[int, MetricPoint]:
    """The points numbered `pks`, read `MAX_PAGE` to a statement (PostgreSQL binds at most 65,535 values)."""
    found: dict[int, MetricPoint] = {}
    for start in range(0, len(pks), MAX_PAGE):
        query = select(MetricPoint).where(MetricPoint.pk.in_(pks[start : start + MAX_PAGE]))
        found.update((p.pk, p) for p in session.scalars(query))
    return found


def _extremes(rows: Sequence[Row[int, int, float | None, float | None]], series: str, max_points: int) -> set[int]:
    """Which `rows` to draw of `series`: all those with a value when few; else the first, the last,
    and between them the lowest and highest value of each of (max_points - 2) // 2 buckets."""

    def value(i: int) -> float:
        return float(getattr(rows[i], series))

    indices = [i for i, row in enumerate(rows) if getattr(row, series) is not None]
    if len(indices) <= max_points:
        return set(indices)
    keep = {indices[0], indices[-1]}
    inner = indices[1:-1]
    buckets = (max_points - 2) // 2
    for b in range(buckets):
        bucket = inner[b * len(inner) // buckets : (b + 1) * len(inner) // buckets]
        if bucket:
            keep.update((min(bucket, key=value), max(bucket, key=value)))
    return keep


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


def list_logs(db: Database, job_id: str, *, after_seq: int = 0, limit: int = 200, tail: bool = False) -> list[LogLine]:
    """Lines numbered after `after_seq`, oldest first: the first `limit` of them, or with `tail` the last.

    The tail is where a console opens a long run's log (its last line's number is the line count).
    """
    limit = max(1, min(int(limit), MAX_PAGE))
    query = select(LogLine).where(
        LogLine.model_version_id == check_id(job_id, "model version id"), LogLine.seq > after_seq
    )
    with db.read() as session:
        if tail:
            return list(session.scalars(query.order_by(LogLine.seq.desc()).limit(limit)))[::-1]
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
