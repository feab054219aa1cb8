"""Terminal output shared by the commands: errors, reports, tables, progress bars (rich)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tuneloom.data.types import DataReport
from tuneloom.errors import TuneloomError

console = Console(highlight=False, soft_wrap=True)
console_err = Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(err: TuneloomError) -> None:
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


def metrics_table(title: str, columns: dict[str, dict[str, Any]]) -> Table:
    """One row per metric, one column per model (e.g. before / after)."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    keys = [k for k in dict.fromkeys(k for m in columns.values() for k in m) if k != "count"]
    for key in keys:
        table.add_row(key, *(_fmt(m.get(key)) for m in columns.values()))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return "—" if value is None else str(value)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console_err,
        transient=False,
    )
