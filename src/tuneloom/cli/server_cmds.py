"""`tuneloom serve`, `tuneloom worker` and `tuneloom keys create`."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from tuneloom.cli.render import console, console_err


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the platform server (REST API) and its training workers")
    _storage_args(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-upload-mb", type=int, default=200, help="largest accepted upload")
    serve.add_argument("--model-cache-mb", type=int, default=4096, help="memory for loaded model versions")
    _worker_args(serve, default_help="training workers beside the API (default: one per GPU, or 1; 0: none)")
    serve.set_defaults(run=run_serve)

    worker = commands.add_parser("worker", help="run training workers only, sharing a server's database and data")
    _storage_args(worker)
    _worker_args(worker, default_help="slots, one job each (default: one per GPU, or 1)")
    worker.set_defaults(run=run_worker)

    keys = commands.add_parser("keys", help="manage API keys")
    keys.add_argument("action", choices=["create"])
    _storage_args(keys)
    keys.add_argument("--app", default=None, help="scope the key to one app (default: an admin key)")
    keys.set_defaults(run=run_keys)


def _storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("tuneloom-data"), help="artifacts (and SQLite)")
    parser.add_argument("--database-url", default=None, help="e.g. postgresql://… (default: SQLite in the data dir)")


def _worker_args(parser: argparse.ArgumentParser, *, default_help: str) -> None:
    parser.add_argument("--workers", type=int, default=None, help=default_help)
    parser.add_argument("--lease-seconds", type=float, default=60.0, help="a silent worker loses its job after this")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between timed checkpoints")


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloom.server.app import create_app
    from tuneloom.server.context import ServerContext

    ctx = ServerContext.open(
        args.data_dir,
        args.database_url,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        model_cache_bytes=args.model_cache_mb * 1024 * 1024,
    )
    _recover(ctx)
    pool = _start_workers(ctx.db, ctx.artifacts, args)
    _warm_up()
    console_err.print(f"tuneloom serving on http://{args.host}:{args.port} (data in {args.data_dir})")
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the handler it
    # found installed; make that one return, so the workers below get to checkpoint and release their jobs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(create_app(ctx), host=args.host, port=args.port, log_level="warning")
    finally:
        if pool is not None:
            console_err.print("stopping workers: checkpointing and returning running jobs to the queue")
            pool.stop()
    return 0


def _recover(ctx: Any) -> None:
    """Tidy what a crashed server left half done (see `tuneloom.store.recovery`), and say so."""
    from tuneloom.store.recovery import recover_after_crash

    recovered = recover_after_crash(ctx.db, ctx.artifacts)
    if recovered.failed_versions:
        names = ", ".join(recovered.failed_versions)
        console_err.print(f"dataset versions interrupted by a crash, marked FAILURE: {names}")
    if recovered.removed_files:
        console_err.print(f"removed {len(recovered.removed_files)} partial file(s) left by a crash")


def _warm_up() -> None:
    """Import the settings validators (transformers, peft) now, so the first training request is not slow."""
    from tuneloom.templates import DEFAULT_TEMPLATE, resolve_settings

    resolve_settings(DEFAULT_TEMPLATE)


def run_worker(args: argparse.Namespace) -> int:
    from tuneloom.store.artifacts import Artifacts
    from tuneloom.store.db import open_database

    db = open_database(args.database_url, data_dir=args.data_dir)
    pool = _start_workers(db, Artifacts(args.data_dir), args)
    if pool is None:
        return 0
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    console_err.print("stopping workers: checkpointing and returning running jobs to the queue")
    pool.stop()
    return 0


def _start_workers(db: Any, artifacts: Any, args: argparse.Namespace) -> Any:
    from tuneloom.worker import WorkerConfig, WorkerPool, default_slot_count

    slots = default_slot_count() if args.workers is None else args.workers
    if slots <= 0:
        return None
    config = WorkerConfig(lease_s=args.lease_seconds, checkpoint_every_s=args.checkpoint_every)
    pool = WorkerPool(db, artifacts, slots, config)
    pool.start()
    console_err.print(f"{slots} training worker slot{'s' if slots > 1 else ''} started")
    return pool


def run_keys(args: argparse.Namespace) -> int:
    from tuneloom.server.context import ServerContext
    from tuneloom.store.keys import create_key

    ctx = ServerContext.open(args.data_dir, args.database_url)
    plaintext, record = create_key(ctx.db, args.app, ctx.pepper)
    scope = f"app '{args.app}'" if args.app else "admin (all apps)"
    console_err.print(f"Created key {record.prefix}… for {scope}. It is shown once; store it safely.")
    console.print(plaintext)
    return 0
