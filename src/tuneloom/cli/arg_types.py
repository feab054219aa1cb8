"""argparse types for the CLI's numbers and folders: a bad value is a usage error naming the flag (exit 2).

Also `read_named_file`, the one reader of a file a flag names (`--file F`, `--trainer-config @F`).

Plain `int`/`float`/`Path` took `--port 70000`, `--workers -1` or a file as `--data-dir`, and failed
later with a traceback, or not at all.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

from tuneloom.data import FORMATS
from tuneloom.errors import TuneloomError


def positive(text: str) -> int:
    """A whole number of at least 1: a size or a limit, where 0 or less would refuse everything."""
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port a client can be told (0 would bind a random one, and the banner would print :0)."""
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number of at least 0 (`--workers 0`: none); a negative one was silently taken as 0."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return int(text)


def seconds(text: str) -> float:
    """A positive, finite number of seconds: a lease or checkpoint interval of 0 or less never makes sense."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def data_dir(text: str) -> Path:
    """A folder, or a path where one can be made: a file on the way was an internal error (FileExistsError)."""
    from tuneloom.model_version import first_non_folder

    path = Path(text)
    culprit = first_non_folder(path)
    if culprit is not None:
        raise argparse.ArgumentTypeError(f"{culprit} is a file, not a folder")
    return path


DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds, from `30s`, `90m`, `24h` or `2d` (a bare number is seconds); 0 or more."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"must be a duration such as 90m, 24h or 2d, got {text!r}")
    return float(match[1]) * DURATION_UNITS[match[2]]


def read_named_file(path: Path, label: str, error: Callable[[str], TuneloomError]) -> str:
    """The UTF-8 text of a file named on the command line, or `error("LABEL: why")`.

    `label` names the flag and the path once (`--trainer-config: @nofile.txt`); Python's own words
    ("[Errno 2] No such file or directory: 'nofile.txt'") repeated the path and read as a crash.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        why = "no such file"
    except IsADirectoryError:
        why = "a folder, not a file"
    except PermissionError:
        why = "permission denied"
    except UnicodeDecodeError as err:
        why = f"not UTF-8 text (byte {err.start})"
    except OSError as err:
        why = (err.strerror or type(err).__name__).lower()
    raise error(f"{label}: {why}")


def add_data_arguments(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    """The data file argument `name` (`what` it holds) and its `--format`, worded alike by every command."""
    parser.add_argument(
        name, type=Path, help=f"{what}: ###-sectioned lines (### Human: … ### Assistant: …), CSV or JSONL"
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="the file's format (default: %(default)s, detected from the content)",
    )
