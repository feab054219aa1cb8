"""`tuneloom workers`: the worker slots sharing a database, what each can run, runs none can, and the
live generation nodes (`serve --advertise-url`) that servers with `--backend remote` send to."""

from __future__ import annotations

import argparse
from typing import Any

from tuneloom.cli.render import console, print_json
from tuneloom.cli.storage_args import add_storage_args


def register(commands: Any) -> None:
    workers = commands.add_parser(
        "workers",
        help="list training workers (host, capacity, heartbeat, current run), runs none can take, generation nodes",
    )
    add_storage_args(workers)
    workers.add_argument("--json", action="store_true", help="machine-readable output")
    workers.set_defaults(run=run_workers)


def run_workers(args: argparse.Namespace) -> int:
    from tuneloom.store import workers
    from tuneloom.store.db import open_database, require_existing_database
    from tuneloom.store.models import utcnow
    from tuneloom.store.nodes import live_nodes

    require_existing_database(args.database_url, args.data_dir)
    db = open_database(args.database_url, data_dir=args.data_dir)
    now = utcnow()
    found = workers.list_workers(db, now=now)
    stuck = workers.stuck_jobs(db, now=now)
    nodes = live_nodes(db, now=now)
    if args.json:
        print_json(
            {
                "workers": [_worker_dict(w, now) for w in found],
                "waiting": [_stuck_dict(*s) for s in stuck],
                "generation_nodes": [{"id": n.id, "url": n.url, "backend": n.backend} for n in nodes],
            }
        )
        return 0
    _print_table(found, now)
    for job, why in stuck:
        console.print(f"queued {job.id} ({job.template}): {why}")
    for node in nodes:
        console.print(f"generation node {node.id} at {node.url} ({node.backend} backend), live")
    return 0


def _print_table(found: list[Any], now: Any) -> None:
    from rich.table import Table

    table = Table("worker", "host", "capacity", "state", "last heartbeat", "training")
    for w in found:
        state = "live" if w.live else "gone"
        table.add_row(w.id, w.host, w.capacity.describe(), state, _ago(w.heartbeat_at, now), w.job_id or "—")
    if found:
        console.print(table)
    else:
        console.print("no workers have registered (start `tuneloom worker` or `tuneloom serve`)")


def _worker_dict(w: Any, now: Any) -> dict[str, Any]:
    c = w.capacity
    return {
        "id": w.id,
        "host": w.host,
        "gpu_count": c.gpu_count,
        "gpu_memory_mb": c.gpu_memory_mb,
        "cpu_memory_mb": c.cpu_memory_mb,
        "live": w.live,
        "heartbeat_age_s": round((now - w.heartbeat_at).total_seconds(), 1),
        "job_id": w.job_id,
    }


def _stuck_dict(job: Any, why: str) -> dict[str, Any]:
    return {"model_version_id": job.id, "template": job.template, "reason": why}


def _ago(then: Any, now: Any) -> str:
    return f"{(now - then).total_seconds():.0f} s ago"
