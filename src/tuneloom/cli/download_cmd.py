"""`tuneloom download`: a version trained on a tuneloom server, written here as `tuneloom export` writes it.

The other commands work on folders and a database this machine holds; this one is for the machine that
will run the model (a laptop with Ollama, an inference box) and can reach the server but not its data
dir. It goes through the SDK (`Model.export`): the server builds the export once, and the file comes
down behind a signed link, checked against its SHA-256 before it is unpacked. The API key comes from
$TUNELOOM_API_KEY or a file (`--api-key-file`, e.g. a secret mounted by the orchestrator), never the
command line, where `ps` and the shell's history would show it.
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
        help="the server (default: $TUNELOOM_URL, else http://127.0.0.1:8000)",
    )
    dl.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help="a file whose first line is the API key (default: the key in $TUNELOOM_API_KEY)",
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
        key = read_api_key(args.api_key_file) if args.api_key_file else None
    except ValueError as err:
        console_err.print(f"[bold red]error[/]: {escape(str(err))}")
        return 1
    try:
        with Client(args.url, key) as client, download_bar() as bar:
            task = bar.add_task(f"Building the {form} export on the server", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, description=f"Downloading the {form} export", completed=done, total=total)

            model = client.get_app(args.app).get_model(args.model)
            out = model.export(args.version, args.out, form, gguf_type=args.gguf, progress=progress)
    except TuneloomAPIError as err:
        keyless = not (args.api_key_file or os.environ.get("TUNELOOM_API_KEY"))
        hint = " (set $TUNELOOM_API_KEY or pass --api-key-file)" if keyless and err.status == 401 else ""
        console_err.print(f"[bold red]error[/] [dim]({err.code})[/]: {escape(err.message)}{hint}")
        return 1
    console.print(f"Downloaded the {form} export of version {escape(args.version)} to {escape(str(out))}")
    return 0


def read_api_key(path: Path) -> str:
    """The key on the first line of `path` (a trailing newline, as `echo` writes, is not part of it)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--api-key-file {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from err
    key = lines[0].strip() if lines else ""
    if not key:
        raise ValueError(f"--api-key-file {path}: its first line is empty; write the API key there")
    return key
