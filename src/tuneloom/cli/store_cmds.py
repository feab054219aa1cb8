"""`tuneloom store republish ID` and `tuneloom store sweep`: keeping the artifact store whole and tidy.

`republish` shares a trained run whose worker could not publish it (run on that worker's machine, as
the run's failure message says); `sweep` lists, and with `--delete` removes, what no database row
accounts for in the data dir and the shared store (`tuneloom.store.sweep`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape

from tuneloom.cli.arg_types import duration
from tuneloom.cli.render import console, console_err, print_json
from tuneloom.cli.storage_args import add_artifact_arg, add_storage_args

DEFAULT_GRACE = "24h"


def register(commands: Any) -> None:
    store = commands.add_parser(
        "store", help="artifact store upkeep: republish a run its worker could not share; sweep orphaned files"
    )
    actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    republish = actions.add_parser(
        "republish",
        help="on the worker that kept a run's files after the store refused them: publish them and mark the run "
        "MODEL_TRAINED",
    )
    republish.add_argument(
        "model_version_id",
        metavar="MODEL_VERSION_ID",
        help="the id of the run to publish, as its failure message names it",
    )
    add_storage_args(republish)
    add_artifact_arg(republish)
    republish.set_defaults(run=run_republish)

    sweep = actions.add_parser(
        "sweep",
        help="list files in the data dir and the shared store that no database row accounts for (--delete removes)",
    )
    add_storage_args(sweep)
    add_artifact_arg(sweep)
    sweep.add_argument(
        "--grace",
        type=duration,
        default=DEFAULT_GRACE,
        help=f"leave anything changed within this long, e.g. 90m, 2d (default {DEFAULT_GRACE}): a publish or "
        "upload in flight is younger",
    )
    sweep.add_argument("--delete", action="store_true", help="remove what is listed (default: a dry run)")
    sweep.add_argument("--json", action="store_true", help="machine-readable output")
    sweep.set_defaults(run=run_sweep)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    """The database (which must exist already) and the data dir, with the shared store when one is given."""
    from tuneloom.store.artifacts import Artifacts
    from tuneloom.store.db import open_database, require_existing_database
    from tuneloom.store.shared import share

    require_existing_database(args.database_url, args.data_dir)
    db = open_database(args.database_url, data_dir=args.data_dir)
    artifacts = Artifacts(args.data_dir)
    share(artifacts, args.artifact_url)
    return db, artifacts


def run_republish(args: argparse.Namespace) -> int:
    from tuneloom.store.republish import republish

    db, artifacts = _open(args)
    run = republish(db, artifacts, args.model_version_id)
    console.print(f"model version {run.id} published to {escape(artifacts.shared.url)}: MODEL_TRAINED")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from tuneloom.store.sweep import sweep

    db, artifacts = _open(args)
    swept = sweep(db, artifacts, grace_s=args.grace, delete=args.delete)
    if args.json:
        print_json(
            {
                "grace_s": args.grace,
                "delete": args.delete,
                "orphans": [{**asdict(o), "removed": o in swept.removed} for o in swept.found],
                "not_removed": [{"where": o.where, "path": o.path, "why": why} for o, why in swept.kept],
            }
        )
        return 1 if swept.kept else 0
    for orphan in swept.found:
        files = f"{orphan.files} file{'s' if orphan.files != 1 else ''}"
        what = f"({files}, {_size(orphan.size)}, changed {_when(orphan.modified)}): {orphan.why}"
        console.print(f"{escape(orphan.where)}: {escape(orphan.path)}  {escape(what)}")
    for orphan, why in swept.kept:
        console_err.print(f"not removed: {escape(orphan.where)}: {escape(orphan.path)}: {escape(why)}")
    console_err.print(_summary(swept, args, artifacts))
    return 1 if swept.kept else 0


def _summary(swept: Any, args: argparse.Namespace, artifacts: Any) -> str:
    places = " and ".join(p for p in (str(artifacts.root), artifacts.shared and artifacts.shared.url) if p)
    if not swept.found:
        return f"nothing to sweep: no orphan unchanged for {_hours(args.grace)} in {escape(places)}"
    total = _size(sum(o.size for o in swept.found))
    if not args.delete:
        return f"would remove {len(swept.found)} orphan(s), {total} in all; nothing was removed (--delete removes them)"
    return f"removed {len(swept.removed)} orphan(s), {_size(sum(o.size for o in swept.removed))} in all"


def _size(count: int) -> str:
    value, unit = float(count), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def _when(modified: float | None) -> str:
    return "at an unknown time" if modified is None else f"{datetime.fromtimestamp(modified, UTC):%Y-%m-%d %H:%M} UTC"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h"
