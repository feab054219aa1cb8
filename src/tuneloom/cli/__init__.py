"""The `tuneloom` command: argument parsing and dispatch. Each command lives in a sibling module.

Exit codes: 0 success, 1 the input or model is not usable (a TuneloomError, printed as one clear
message), 2 usage errors (argparse). No command shows a traceback for anything a user can cause.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tuneloom import __version__


def build_parser() -> argparse.ArgumentParser:
    from tuneloom.cli import (
        compare_cmd,
        data_cmds,
        demo_cmd,
        download_cmd,
        model_cmds,
        server_cmds,
        store_cmds,
        train_cmd,
        workers_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="tuneloom", description="Fine-tune text-generation models on '###'-sectioned instruction data."
    )
    parser.add_argument("--version", action="version", version=f"tuneloom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands_in_order = (
        data_cmds,
        train_cmd,
        model_cmds,
        download_cmd,
        compare_cmd,
        demo_cmd,
        server_cmds,
        workers_cmd,
        store_cmds,
    )
    for module in commands_in_order:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from tuneloom.cli.render import console_err, report_error
    from tuneloom.errors import TuneloomError

    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.run(args) or 0)
    except TuneloomError as err:
        report_error(err)
        return 1
    except KeyboardInterrupt:
        console_err.print("[yellow]Interrupted.[/]")
        return 130
    except Exception as err:  # a bug, not a user error: one line, the traceback on request
        if os.environ.get("TUNELOOM_DEBUG"):
            raise
        console_err.print(f"[bold red]internal error[/]: {type(err).__name__}: {err}")
        console_err.print("[dim]This is a bug in tuneloom. Set TUNELOOM_DEBUG=1 to see the traceback.[/]")
        return 3


def _quiet_libraries() -> None:
    """Our own bars and messages replace the libraries' progress bars and advisory warnings.

    Through the environment transformers reads as it first logs (progress bars: `main` sets Hugging
    Face's switch), not its logging module: importing that costs a second, which commands that never
    load a model (`templates`, `keys`, `validate --no-tokenize`) need not pay. A user's own
    TRANSFORMERS_VERBOSITY is kept.
    """
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
