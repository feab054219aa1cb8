"""Server-sent events for a training run: what changed since the last look, until the run ends.

The worker writes progress into the database (it may be on another machine), so the stream polls
the database once a second and sends only what is new: a `status` event when the run's status or
progress changed, each new `metric` point, each new `log` line. It ends with the final status,
sent after the run's last metrics and logs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tuneloom.store import telemetry
from tuneloom.store.db import Database
from tuneloom.store.models import LogLine, TrainingStatus

POLL_SECONDS = 1.0


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
) -> AsyncIterator[str]:
    """The run's events after `after_step` and `after_seq` (None and 0: all of them), until it ends.

    Points at the last step sent are read again (an eval point may join a loss point there); only
    their ids are remembered, so a stream that lasts days holds no more than one step's worth.
    """
    last_status = ""
    last_step = after_step
    sent_at_last_step: set[int] = set()
    last_seq = after_seq
    while True:
        current = await run_in_threadpool(snapshot)  # read first: what it says happened is sent below
        after = None if last_step is None else last_step - 1
        for point in await run_in_threadpool(telemetry.list_metrics, db, version_id, after_step=after):
            if point.pk in sent_at_last_step:
                continue
            if point.step != last_step:
                last_step, sent_at_last_step = point.step, set()
            sent_at_last_step.add(point.pk)
            yield sse("metric", {"step": point.step, "loss": point.loss, "eval_loss": point.eval_loss})
        async for line in _new_lines(db, version_id, last_seq):
            last_seq = line.seq
            yield sse("log", {"seq": line.seq, "level": line.level, "message": line.message, "at": line.at})
        status_json = current.model_dump_json()
        if status_json != last_status:
            last_status = status_json
            yield sse("status", current)
        if TrainingStatus[current.status.name].is_final or await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


async def _new_lines(db: Database, version_id: str, after_seq: int) -> AsyncIterator[LogLine]:
    """Every line after `after_seq`, a page at a time: a run logging faster than a page a poll never falls behind."""
    while True:
        page = await run_in_threadpool(
            telemetry.list_logs, db, version_id, after_seq=after_seq, limit=telemetry.MAX_PAGE
        )
        for line in page:
            yield line
        if len(page) < telemetry.MAX_PAGE:
            return
        after_seq = page[-1].seq
