"""`tuneloom download`: a version trained on a tuneloom server, written here as `tuneloom export` writes it.

The other commands work on folders and a database this machine holds; this one is for the machine that
will run the model (a laptop with Ollama, an inference box) and can reach the server but not its data
dir. It goes through the SDK (`Model.export`): the server builds the export once, and the file comes
down behind a signed link, checked against its SHA-256 before it is unpacked. The API key comes from
$TUNELOOM_API_KEY, never the command line, where `ps` and the shell's history would show it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from tuneloom.cli.model_cmds import add_export_form_args
from tuneloom.cli.render import console, console_err, download_bar


def register(commands: Any) -> None:
    dl = commands.add_parser(
        "download",
        help="download a version trained on a tuneloom server: its adapter, --merged weights or a --gguf file",
    )
    dl.add_argument("version", help="the model version's id (as the server lists it)")
    dl.add_argument("out", type=Path, help="the folder to write (must not exist yet)")
    dl.add_argument("--app", required=True, help="the app the model belongs to")
    dl.add_argument("--model", required=True, help="the model the version belongs to")
    dl.add_argument(
        "--url",
        default=None,
        help="the server (default: $TUNELOOM_URL, else http://127.0.0.1:8000); the key: $TUNELOOM_API_KEY",
    )
    add_export_form_args(dl)
    dl.set_defaults(run=run_download)


def run_download(args: argparse.Namespace) -> int:
    from tuneloom.client import Client, TuneloomAPIError

    form = "gguf" if args.gguf else "merged" if args.merged else "adapter"
    if args.out.exists():
        console_err.print(f"[bold red]error[/]: {escape(str(args.out))} already exists; choose another folder")
        return 1
    try:
        with Client(args.url) as client, download_bar() as bar:
            task = bar.add_task(f"Building the {form} export on the server", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, description=f"Downloading the {form} export", completed=done, total=total)

            model = client.get_app(args.app).get_model(args.model)
            out = model.export(args.version, args.out, form, gguf_type=args.gguf, progress=progress)
    except TuneloomAPIError as err:
        hint = "" if os.environ.get("TUNELOOM_API_KEY") or err.status != 401 else " (set $TUNELOOM_API_KEY)"
        console_err.print(f"[bold red]error[/] [dim]({err.code})[/]: {escape(err.message)}{hint}")
        return 1
    console.print(f"Downloaded the {form} export of version {escape(args.version)} to {escape(str(out))}")
    return 0
