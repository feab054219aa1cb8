"""Terminal output shared by the commands: errors, reports, tables, progress bars (rich)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tuneloom.data.types import DataReport
from tuneloom.errors import SettingsError, TuneloomError

console = Console(highlight=False, soft_wrap=True)
console_err = Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(err: TuneloomError) -> None:
    if isinstance(err, SettingsError) and len(err.parts) > 1:  # one line each: a list of mistakes reads as a list
        console_err.print(f"[bold red]error[/] [dim]({err.code})[/]: {escape(err.headline)}:")
        for part in err.parts:
            console_err.print(f"  • {escape(part['message'])}")
        return
    console_err.print(f"[bold red]error[/] [dim]({err.code})[/]: {escape(err.message)}")
    report = err.details.get("report") if isinstance(err.details.get("report"), dict) else None
    if report is None and "invalid" in err.details:
        report = err.details
    if report:
        print_invalid_rows(report.get("invalid", []), console_err)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_invalid_rows(rows: list[dict[str, Any]], out: Console = console, limit: int = 10) -> None:
    if not rows:
        return
    table = Table(title=f"First invalid rows ({min(limit, len(rows))} shown)", title_justify="left")
    table.add_column("line", justify="right")
    table.add_column("reason")
    table.add_column("row starts with", overflow="fold", max_width=50)
    for row in rows[:limit]:
        table.add_row(str(row["line"]), escape(row["reason"]), escape(row.get("excerpt", "")))
    out.print(table)


def print_report(report: DataReport, tolerance: float) -> None:
    usable = report.within_tolerance(tolerance)
    verdict = "[green]usable[/]" if usable else "[red]not usable[/]"
    console.print(
        f"[bold]{escape(report.source)}[/] ({report.format}): {report.total_rows} rows, "
        f"[green]{report.valid_rows} valid[/], [red]{report.invalid_rows} invalid[/] "
        f"({report.invalid_percent:.1f}%, tolerance {tolerance:g}%) → {verdict}"
    )
    if report.token_stats and report.token_stats.get("count"):
        s = report.token_stats
        console.print(
            f"tokens per example: min {s['min']}, median {s['p50']:g}, p90 {s['p90']:g}, "
            f"max {s['max']}, total {s['total']}"
        )
    print_invalid_rows([{"line": r.line, "reason": r.reason, "excerpt": r.excerpt} for r in report.invalid])


def metrics_table(
    title: str,
    columns: dict[str, dict[str, Any]],
    *,
    ranked: Mapping[str, tuple[str | None, Sequence[bool]]] | None = None,
) -> Table:
    """One row per metric, one column per model (e.g. before / after).

    With `ranked` (metric → which way is better, and which columns hold its best value; see
    tuneloom.evaluate.compare) a "better" column says lower or higher and each best value gets a ★,
    which still reads when the output is piped and loses its colour.
    """
    table = Table(title=title, title_justify="left", caption=f"{BEST} best of the row" if ranked else None)
    table.add_column("metric")
    if ranked is not None:
        table.add_column("better")
    for name in columns:
        table.add_column(escape(name), justify="right", overflow="fold")  # a long path wraps, never cut
    keys = [k for k in dict.fromkeys(k for m in columns.values() for k in m) if k != "count"]
    for key in keys:
        better, best = ranked.get(key, (None, ())) if ranked is not None else (None, ())
        cells = [_fmt(m.get(key)) for m in columns.values()]
        cells = [_best(cell) if i < len(best) and best[i] else cell for i, cell in enumerate(cells)]
        table.add_row(key, *([better or ""] if ranked is not None else []), *cells)
    return table


BEST = "★"


def _best(text: str) -> str:
    return f"[bold green]{text} {BEST}[/]"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return "—" if value is None else str(value)


class _ProgressLeavingNoBlankLine(Progress):
    """A progress display that leaves nothing behind when it never showed a task.

    rich ends a display on a non-terminal (a pipe, a log file, CI) with a blank line, drawn or not: a
    `tuneloom train` refused on its settings printed an empty line on stderr above the error.
    """

    def stop(self) -> None:
        if any(task.visible for task in self.tasks):
            super().stop()
            return
        self.live.transient = True  # nothing was drawn: nothing to keep on screen, no line to end
        self.live.stop()


def progress_bar() -> Progress:
    return _bar(TaskProgressColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())


def download_bar() -> Progress:
    """Bytes, speed and ETA; a pulsing bar while the total is unknown (the server still building the file)."""
    return _bar(DownloadColumn(), TransferSpeedColumn())


def _bar(*figures: ProgressColumn) -> Progress:
    """A described bar on stderr, then `figures`, then the ETA."""
    return _ProgressLeavingNoBlankLine(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *figures,
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console_err,
        transient=False,
    )
