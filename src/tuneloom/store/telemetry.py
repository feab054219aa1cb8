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
    """The run's curve after `after_step`, by step: the tail a resumed run went back over left out (`abandoned`).

    Which points are abandoned depends on the whole curve: the curve read whole is judged as it is;
    a part of it is judged on the whole curve's bare numbers, read beside it in one snapshot.
    """
    job = MetricPoint.model_version_id == check_id(job_id, "model version id")
    query = select(MetricPoint).where(job)
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    with db.read(snapshot=True) as session:
        points = list(session.scalars(query.order_by(MetricPoint.step, MetricPoint.pk)))
        whole: Sequence[Any] = points
        if after_step is not None:
            whole = session.execute(select(MetricPoint.pk, MetricPoint.step, MetricPoint.loss).where(job)).all()
        dropped = abandoned((p.pk, p.step, p.loss) for p in whole)
        return [p for p in points if p.pk not in dropped]


def metrics_recorded_after(db: Database, job_id: str, point: int) -> list[MetricPoint]:
    """The points recorded after the one numbered `point` (its `pk`), in the order recorded, `MAX_PAGE` at most.

    What a live stream sends: a resumed run's steps go back, and it sends them as they come. The
    numbers grow as points are recorded, since a run's points are added under its row's lock.
    """
    query = select(MetricPoint).where(
        MetricPoint.model_version_id == check_id(job_id, "model version id"), MetricPoint.pk > point
    )
    with db.read() as session:
        return list(session.scalars(query.order_by(MetricPoint.pk).limit(MAX_PAGE)))


def abandoned(points: Iterable[tuple[int, int, float | None]]) -> set[int]:
    """The points, given as (pk, step, loss), of the tails that a run resumed from a checkpoint went back over.

    A retried run resumes from its last checkpoint, so it logs again steps it had logged past it:
    its curve is what it logs now, and the abandoned attempt's tail (its points from the step the
    run went back to on) was training no model kept. Within one attempt each loss is logged at a
    later step than the one before (an eval point joins its step, and may be recorded later), so a
    loss point at or below the step of the loss point recorded before it is where an attempt resumed.
    """
    ordered = sorted(points)  # by pk: the order they were recorded in
    resumed: list[tuple[int, int]] = []  # (pk, step) of each point an attempt resumed at
    previous: int | None = None
    for pk, step, loss in ordered:
        if loss is not None:
            if previous is not None and step <= previous:
                resumed.append((pk, step))
            previous = step
    dropped: set[int] = set()
    went_back_to: int | None = None  # the lowest step an attempt recorded later resumed at
    for pk, step, _ in reversed(ordered):
        while resumed and resumed[-1][0] > pk:
            later = resumed.pop()[1]
            went_back_to = later if went_back_to is None else min(went_back_to, later)
        if went_back_to is not None and step >= went_back_to:
            dropped.add(pk)
    return dropped


def downsampled_metrics(
    db: Database, job_id: str, max_points: int, *, after_step: int | None = None
) -> list[dict[str, Any]]:
    """At most `max_points` points per series (loss, eval loss), drawn as the whole curve would be.

    A chart is a few hundred pixels wide: 20,000 points draw no better than 1,000 but cost
    megabytes and a path the browser redraws slowly. Each series keeps its first and last point
    exactly and, in between, the lowest and the highest value of each of equal runs of points, so
    spikes and the trend stay; a row keeps only the values chosen for it (the other is null). The
    last row (the latest step's) is kept too: its number (`point`) is where a live stream goes on. A
    resumed run's abandoned tail is left out, as in `list_metrics`. The curve is read as bare
    numbers and only the rows kept are read whole: 170,000 points take about a second, where
    reading them all as rows took three.
    """
    query = select(MetricPoint.pk, MetricPoint.step, MetricPoint.loss, MetricPoint.eval_loss).where(
        MetricPoint.model_version_id == check_id(job_id, "model version id")
    )
    with db.read(snapshot=True) as session:
        rows = session.execute(query.order_by(MetricPoint.step, MetricPoint.pk)).all()
        dropped = abandoned((row.pk, row.step, row.loss) for row in rows)
        rows = [row for row in rows if row.pk not in dropped and (after_step is None or row.step > after_step)]
        loss, evals = _extremes(rows, "loss", max_points), _extremes(rows, "eval_loss", max_points)
        kept = sorted(loss | evals | ({len(rows) - 1} if rows else set()))
        whole = _points_by_pk(session, [rows[i].pk for i in kept])
    return [
        {
            "point": rows[i].pk,
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
