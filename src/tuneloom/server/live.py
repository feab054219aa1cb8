"""Server-sent events for a training run: what changed since the last look, until the run ends.

The worker writes progress into the database (it may be on another machine), so the stream polls
the database once a second and sends only what is new: a `status` event when the run's status or
progress changed, each new `metric` point, each new `log` line. It ends with the final status,
sent after the run's last metrics and logs.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tuneloom.server.schemas.models import LogLineOut, MetricPointOut
from tuneloom.store import telemetry
from tuneloom.store.db import Database
from tuneloom.store.models import LogLine, MetricPoint, TrainingStatus

POLL_SECONDS = 1.0
T = TypeVar("T")


def sse(event: str, data: Any) -> str:
    """One server-sent event; `data` is JSON on a single line."""
    payload = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data, default=str)
    return f"event: {event}\ndata: {payload}\n\n"


async def training_events(
    db: Database,
    version_id: str,
    snapshot: Callable[[], Any],
    request: Request,
    *,
    after_step: int | None = None,
    after_seq: int = 0,
    after_point: int | None = None,
) -> AsyncIterator[str]:
    """The run's events after `after_point` (or `after_step`) and `after_seq`, until it ends.

    Metric points go in the order they were recorded, each once, numbered by `point`. A run retried
    from its checkpoint logs again steps it had logged past it: those points are sent as they come,
    step going back, and a client replaces the tail they go back over (`telemetry.abandoned`; the
    console's chart does). A stream that had been following by step waited, blind, for the resumed
    run to pass its old last step. `after_point` goes on after a point the client has; without it
    the run's current curve is sent from `after_step` on (its points at that step again, as an eval
    point may join them; all of it without `after_step`), then what is recorded after it; a client
    ahead of the curve (the run went back since it read it) is sent every point again, as recorded.
    """
    last_status = ""
    last_seq = after_seq
    if after_point is None:
        after = None if after_step is None else after_step - 1
        caught_up = await run_in_threadpool(telemetry.list_metrics, db, version_id, after_step=after)
        for point in caught_up:
            yield _metric(point)
        after_point = max((point.pk for point in caught_up), default=0)  # the last recorded: its step is the last
    while True:
        current = await run_in_threadpool(snapshot)  # read first: what it says happened is sent below
        async for point in _new_points(db, version_id, after_point):
            after_point = point.pk
            yield _metric(point)
        async for line in _new_lines(db, version_id, last_seq):
            last_seq = line.seq
            yield sse("log", LogLineOut.model_validate(line))  # as /logs has it: `at` in ISO 8601, as browsers parse it
        status_json = current.model_dump_json()
        if status_json != last_status:
            last_status = status_json
            yield sse("status", current)
        if TrainingStatus[current.status.name].is_final or await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


def _metric(point: MetricPoint) -> str:
    """A point as /metrics has it, so a client reads the curve and the stream with one parser."""
    return sse("metric", MetricPointOut.model_validate(point))


async def _new_points(db: Database, version_id: str, after_point: int) -> AsyncIterator[MetricPoint]:
    """Every point recorded after `after_point`, a page at a time (as `_new_lines` reads the log)."""
    read = functools.partial(telemetry.metrics_recorded_after, db, version_id)
    async for point in _paged(read, after_point, lambda point: point.pk):
        yield point


async def _new_lines(db: Database, version_id: str, after_seq: int) -> AsyncIterator[LogLine]:
    """Every line after `after_seq`, a page at a time: a run logging faster than a page a poll never falls behind."""

    def read(after: int) -> list[LogLine]:
        return telemetry.list_logs(db, version_id, after_seq=after, limit=telemetry.MAX_PAGE)

    async for line in _paged(read, after_seq, lambda line: line.seq):
        yield line


async def _paged(read: Callable[[int], list[T]], after: int, number: Callable[[T], int]) -> AsyncIterator[T]:
    """What `read` gives after `after`, page after page (each `telemetry.MAX_PAGE` at most) until a short one."""
    while True:
        page = await run_in_threadpool(read, after)
        for item in page:
            yield item
        if len(page) < telemetry.MAX_PAGE:
            return
        after = number(page[-1])
