"""`tuneloom serve` and `tuneloom keys create`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuneloom.cli.render import console, console_err


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the platform server (REST API) on a port")
    serve.add_argument("--data-dir", type=Path, default=Path("tuneloom-data"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--database-url", default=None, help="default: SQLite in the data dir")
    serve.add_argument("--max-upload-mb", type=int, default=200, help="largest accepted upload")
    serve.set_defaults(run=run_serve)

    keys = commands.add_parser("keys", help="manage API keys")
    keys.add_argument("action", choices=["create"])
    keys.add_argument("--data-dir", type=Path, default=Path("tuneloom-data"))
    keys.add_argument("--database-url", default=None)
    keys.add_argument("--app", default=None, help="scope the key to one app (default: an admin key)")
    keys.set_defaults(run=run_keys)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloom.server.app import create_app
    from tuneloom.server.context import ServerContext

    ctx = ServerContext.open(args.data_dir, args.database_url, max_upload_bytes=args.max_upload_mb * 1024 * 1024)
    console_err.print(f"tuneloom serving on http://{args.host}:{args.port} (data in {args.data_dir})")
    uvicorn.run(create_app(ctx), host=args.host, port=args.port, log_level="warning")
    return 0


def run_keys(args: argparse.Namespace) -> int:
    from tuneloom.server.context import ServerContext
    from tuneloom.store.keys import create_key

    ctx = ServerContext.open(args.data_dir, args.database_url)
    plaintext, record = create_key(ctx.db, args.app, ctx.pepper)
    scope = f"app '{args.app}'" if args.app else "admin (all apps)"
    console_err.print(f"Created key {record.prefix}… for {scope}. It is shown once; store it safely.")
    console.print(plaintext)
    return 0
