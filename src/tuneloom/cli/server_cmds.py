"""`tuneloom serve`, `tuneloom worker` and `tuneloom keys create|list|revoke`."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from tuneloom.cli.arg_types import count, port, positive, seconds
from tuneloom.cli.render import console, console_err
from tuneloom.cli.storage_args import add_artifact_arg, add_storage_args


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the platform server (REST API) and its training workers")
    add_storage_args(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on; 0.0.0.0 for every interface (default: %(default)s)",
    )
    serve.add_argument("--port", type=port, default=8000, help="the port to listen on (default: %(default)s)")
    serve.add_argument("--max-upload-mb", type=positive, default=200, help="largest accepted upload")
    serve.add_argument("--model-cache-mb", type=positive, default=4096, help="memory for loaded model versions")
    serve.add_argument(
        "--backend",
        choices=["auto", "transformers", "vllm", "remote"],
        default="auto",
        help="generation engine: vllm (tuneloom[vllm] on a CUDA GPU), transformers, auto (vllm where it can run), "
        "or remote (the generation nodes on this database)",
    )
    serve.add_argument(
        "--advertise-url",
        default=os.environ.get("TUNELOOM_ADVERTISE_URL") or None,
        help="generate for servers started with --backend remote on this database, which reach this one at "
        "this URL (env TUNELOOM_ADVERTISE_URL)",
    )
    _limit_args(serve)
    add_artifact_arg(serve)
    _worker_args(serve, default_help="training workers beside the API (default: one per GPU, or 1; 0: none)")
    serve.set_defaults(run=run_serve)

    worker = commands.add_parser("worker", help="run training workers only, sharing a server's database and data")
    add_storage_args(worker)
    add_artifact_arg(worker)
    _worker_args(worker, default_help="slots, one job each (default: one per GPU, or 1)", slots=positive)
    worker.set_defaults(run=run_worker)

    keys = commands.add_parser("keys", help="manage API keys: create, list, revoke")
    keys.add_argument(
        "action",
        choices=["create", "list", "revoke"],
        help="create a key (shown once), list the keys, or revoke one",
    )
    keys.add_argument("key", nargs="?", help="revoke: the key id (from `keys list`) or the key itself")
    add_storage_args(keys)
    keys.add_argument("--app", default=None, help="create: scope the key to one app (default: admin); list: one app's")
    keys.set_defaults(run=run_keys)


def _limit_args(serve: argparse.ArgumentParser) -> None:
    from tuneloom.generate.params import MAX_TOKENS_LIMIT
    from tuneloom.server.limit_defaults import (
        DEFAULT_EXPORTS_CACHE_BYTES,
        DEFAULT_MAX_BATCH_TOKENS,
        DEFAULT_MAX_GENERATIONS_PER_KEY,
        DEFAULT_MAX_JSON_BYTES,
        DEFAULT_UPLOAD_IDLE_S,
    )

    serve.add_argument(
        "--max-json-kb", type=positive, default=DEFAULT_MAX_JSON_BYTES // 1024, help="largest JSON request body"
    )
    serve.add_argument(
        "--max-concurrent-generations-per-key",
        type=positive,
        default=DEFAULT_MAX_GENERATIONS_PER_KEY,
        help="generations one key may run at once; more are refused with 429",
    )
    serve.add_argument(
        "--max-tokens-limit",
        type=positive,
        default=MAX_TOKENS_LIMIT,
        help=f"the most tokens a request may ask to generate (at most {MAX_TOKENS_LIMIT})",
    )
    serve.add_argument(
        "--max-batch-tokens",
        type=positive,
        default=DEFAULT_MAX_BATCH_TOKENS,
        help="the most inputs × (prompt + max_tokens) tokens one request may hold; more is refused with 422",
    )
    serve.add_argument(
        "--upload-idle-seconds",
        type=seconds,
        default=DEFAULT_UPLOAD_IDLE_S,
        help="the longest an upload may send nothing before it is dropped with 408",
    )
    serve.add_argument(
        "--exports-cache-mb",
        type=positive,
        default=DEFAULT_EXPORTS_CACHE_BYTES // 1024**2,
        help="disk kept for built downloads (exports); past it the least recently used go, rebuilt when asked for",
    )


def _worker_args(parser: argparse.ArgumentParser, *, default_help: str, slots: Callable[[str], int] = count) -> None:
    """`slots`: how --workers is read; `serve --workers 0` trains nothing, `worker --workers 0` would do nothing."""
    parser.add_argument("--workers", type=slots, default=None, help=default_help)
    parser.add_argument("--lease-seconds", type=seconds, default=60.0, help="a silent worker loses its job after this")
    parser.add_argument("--checkpoint-every", type=seconds, default=300.0, help="seconds between timed checkpoints")


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloom.generate.params import MAX_TOKENS_LIMIT
    from tuneloom.server.advertise import check_advertise_url
    from tuneloom.server.app import create_app
    from tuneloom.server.backends import choose_backend
    from tuneloom.server.context import ServerContext

    backend = choose_backend(args.backend)  # before anything starts: an impossible --backend vllm is one message
    if backend == "remote" and args.advertise_url:
        console_err.print("Error: --advertise-url makes this server a generation node; it cannot be --backend remote")
        return 2
    advertise_url = check_advertise_url(args.advertise_url) if args.advertise_url else None
    ctx = ServerContext.open(
        args.data_dir,
        args.database_url,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        model_cache_bytes=args.model_cache_mb * 1024 * 1024,
        max_json_bytes=args.max_json_kb * 1024,
        max_generations_per_key=args.max_concurrent_generations_per_key,
        max_tokens_limit=min(args.max_tokens_limit, MAX_TOKENS_LIMIT),
        max_batch_tokens=args.max_batch_tokens,
        upload_idle_s=args.upload_idle_seconds,
        exports_cache_bytes=args.exports_cache_mb * 1024 * 1024,
    )
    ctx.inference_backend = backend
    _share(ctx.artifacts, args)
    _recover(ctx)
    pool = _start_workers(ctx.db, ctx.artifacts, args)
    advert = _advertise(ctx, advertise_url)
    _warm_up()
    where = f"http://{args.host}:{args.port} (data in {args.data_dir}, {backend} backend)"
    console_err.print(f"tuneloom serving on {where}")
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the handler it
    # found installed; make that one return, so the workers below get to checkpoint and release their jobs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(create_app(ctx), host=args.host, port=args.port, log_level="warning")
    finally:
        if advert is not None:
            advert.stop()
        if pool is not None:
            console_err.print("stopping workers: checkpointing and returning running jobs to the queue")
            pool.stop()
    return 0


def _advertise(ctx: Any, url: str | None) -> Any:
    """Register as a generation node (`--advertise-url`): servers with `--backend remote` then send here."""
    if url is None:
        return None
    from tuneloom.server.advertise import NodeAdvert

    advert = NodeAdvert(ctx.db, url, ctx.inference_backend)
    ctx.node_token = advert.token
    advert.start()
    console_err.print(f"generating for servers with --backend remote, which reach this one at {advert.url}")
    return advert


def _recover(ctx: Any) -> None:
    """Tidy what a crashed server left half done (see `tuneloom.store.recovery`), and say so."""
    from tuneloom.store.recovery import recover_after_crash

    recovered = recover_after_crash(ctx.db, ctx.artifacts)
    if recovered.failed_versions:
        names = ", ".join(recovered.failed_versions)
        console_err.print(f"dataset versions interrupted by a crash, marked FAILURE: {names}")
    if recovered.removed_files:
        console_err.print(f"removed {len(recovered.removed_files)} partial file(s) left by a crash")
    if recovered.orphaned_uploads:
        console_err.print(f"removed {len(recovered.orphaned_uploads)} raw upload file(s) of deleted datasets")
    if recovered.orphaned_versions:
        where = Counter(path.partition("/")[0] for path in recovered.orphaned_versions)
        counts = ", ".join(f"{count} in {folder}/" for folder, count in sorted(where.items()))
        console_err.print(f"removed the files of deleted dataset and model versions: {counts}")


def _warm_up() -> None:
    """Import the settings validators (transformers, peft) now, so the first training request is not slow."""
    from tuneloom.templates import DEFAULT_TEMPLATE, resolve_settings

    resolve_settings(DEFAULT_TEMPLATE)


def run_worker(args: argparse.Namespace) -> int:
    from tuneloom.store.artifacts import Artifacts, prepare_data_dir
    from tuneloom.store.db import open_database

    db = open_database(args.database_url, data_dir=prepare_data_dir(args.data_dir))
    artifacts = Artifacts(args.data_dir)
    _share(artifacts, args)
    pool = _start_workers(db, artifacts, args)
    if pool is None:
        return 0
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    console_err.print("stopping workers: checkpointing and returning running jobs to the queue")
    pool.stop()
    return 0


def _share(artifacts: Any, args: argparse.Namespace) -> None:
    """Publish to and fetch from `--artifact-url` (checked reachable now, not at the first training run)."""
    from tuneloom.store.shared import share

    store = share(artifacts, args.artifact_url)
    if store is not None:
        console_err.print(f"artifacts shared through {store.url} (the data dir is this machine's cache)")


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

    if (args.action == "revoke") != (args.key is not None):
        console_err.print("Error: `keys revoke` takes one key id (or key); `create` and `list` take none")
        return 2
    # Listing and revoking work from any data dir; only a new key needs the database's own pepper.
    if args.action != "create":
        from tuneloom.store.db import require_existing_database

        require_existing_database(args.database_url, args.data_dir)
    ctx = ServerContext.open(args.data_dir, args.database_url, checked_pepper=args.action == "create")
    return {"create": _create_key, "list": _list_keys, "revoke": _revoke_key}[args.action](ctx, args)


def _create_key(ctx: Any, args: argparse.Namespace) -> int:
    from tuneloom.store.keys import create_key

    plaintext, record = create_key(ctx.db, args.app, ctx.pepper)
    scope = f"app '{args.app}'" if args.app else "admin (all apps)"
    console_err.print(f"Created key {record.prefix}… (id {record.id}) for {scope}. It is shown once; store it safely.")
    console.print(plaintext)
    return 0


def _list_keys(ctx: Any, args: argparse.Namespace) -> int:
    """One line per key: id, scope, display prefix, created, and revoked (if it is)."""
    from tuneloom.store.keys import list_keys

    for key in list_keys(ctx.db, args.app):
        scope = f"app:{key.app_id}" if key.app_id else "admin"
        revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "active"
        console.print(f"{key.id}  {scope}  {key.prefix}…  created {key.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
    return 0


def _revoke_key(ctx: Any, args: argparse.Namespace) -> int:
    """Revoke by id or by the key itself; the server refuses it from its next request on (no restart).

    An unknown key's NotFoundError goes up to `cli.main`, printed as every command's errors are.
    """
    from tuneloom.store.keys import key_id_of, revoke_key

    key_id = key_id_of(args.key) or args.key
    record = revoke_key(ctx.db, key_id)
    console_err.print(f"Key {record.prefix}… (id {record.id}) is revoked; requests with it now get 401.")
    return 0
