"""The flags that say where a command's data is: `--data-dir`, `--database-url` and `--artifact-url`.

`serve`, `worker`, `keys`, `workers` and `store` take the first two alike, and those that read artifacts
(`serve`, `worker`, `store`) the third, so they are defined once, here.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuneloom.cli.arg_types import data_dir


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=data_dir, default=Path("tuneloom-data"), help="artifacts (and SQLite)")
    parser.add_argument("--database-url", default=None, help="e.g. postgresql://… (default: SQLite in the data dir)")


def add_artifact_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact-url",
        default=os.environ.get("TUNELOOM_ARTIFACT_URL") or None,
        help="shared artifact store, e.g. s3://bucket/prefix (env TUNELOOM_ARTIFACT_URL); the data dir becomes a cache",
    )
