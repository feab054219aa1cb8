"""`tuneloom compare RUN RUN [RUN ...]`: what differs between model versions, and which one is best.

Rendering only. The rules (flattened settings, the best of each metric and which way is better) are
`tuneloom.evaluate.compare`, shared with the web console's Compare page; `--data` is the evaluation of
`tuneloom evaluate` and `--prompt` the greedy generation of `tuneloom generate`. Each run is loaded
once for both and let go before the next, so two large models never need to fit in memory together.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from tuneloom.cli.render import console, metrics_table, print_json
from tuneloom.data import FORMATS

if TYPE_CHECKING:
    from tuneloom.data.parse import ParsedFile
    from tuneloom.evaluate.compare import DiffRow, MetricRow, Run
    from tuneloom.evaluate.runner import EvaluationResult
    from tuneloom.generate.params import InferenceParams
    from tuneloom.generate.results import Generation

DIFFERS = "≠"
EXAMPLES_SHOWN = 8


def register(commands: Any) -> None:
    cmp = commands.add_parser(
        "compare",
        help="compare model versions: settings that differ, metrics side by side with the best marked",
        description="Compare two or more model-version directories: what they were trained on and with, "
        "their training metrics (the best of each marked), and optionally their scores on one held-out file "
        "and their answers to the same prompts.",
    )
    cmp.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        action=TwoOrMoreRuns,
        help="model-version directories (two or more)",
    )
    cmp.add_argument("--all-settings", action="store_true", help="list every setting, not only those that differ")
    cmp.add_argument("--data", type=Path, help="held-out file: evaluate each run on it, as `tuneloom evaluate` does")
    cmp.add_argument("--format", choices=FORMATS, help="format of --data (default: auto)")
    cmp.add_argument("--prompt", action="append", type=_prompt, help="answer it with each run, greedily (repeatable)")
    cmp.add_argument(
        "--max-tokens",
        type=int,
        help="for --prompt (default 128) and --data (default: enough for the longest expected completion)",
    )
    cmp.add_argument("--json", action="store_true", help="print one JSON object with all of it (for scripts)")
    cmp.set_defaults(run=run_compare, usage_error=cmp.error)


class TwoOrMoreRuns(argparse.Action):
    """RUN RUN [RUN ...], each directory once: a usage error (exit 2) before any file is read."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        from tuneloom.evaluate.compare import first_duplicate

        runs: list[Path] = list(values)
        if len(runs) < 2:
            parser.error(f"give at least two model-version directories to compare, got one ({runs[0]})")
        duplicate = first_duplicate(runs)
        if duplicate is not None:
            first, again = (str(p) for p in duplicate)
            named = f"{first} is given twice" if first == again else f"{first} and {again} are the same directory"
            parser.error(f"{named}; give each run once")
        setattr(namespace, self.dest, runs)


def _prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty: give the text each run answers")
    return text


def run_compare(args: argparse.Namespace) -> int:
    from tuneloom.cli.model_cmds import read_heldout
    from tuneloom.evaluate import compare

    prompts, prompt_params, eval_params = _checked_options(args)
    runs = [compare.open_run(path) for path in args.runs]  # every run verified before any model loads
    parsed = read_heldout(args.data, args.format or "auto") if args.data else None
    results, answers = _run_each(runs, parsed, eval_params, prompts, prompt_params)
    eval_rows = compare.metric_rows([r.metrics for r in results])
    notes = compare.notes(runs, evaluated=parsed is not None)
    overview, settings = compare.overview_rows(runs), compare.settings_rows(runs)
    training = compare.training_metric_rows(runs)
    if args.json:
        print_json(
            {
                "runs": [run.name for run in runs],
                "overview": [row.to_dict() for row in overview],
                "settings": [row.to_dict() for row in settings],
                "metrics": [row.to_dict() for row in training],
                "evaluation": _evaluation_json(args.data, parsed, eval_rows, results),
                "prompts": _prompts_json(runs, prompts, answers),
                "notes": notes,
            }
        )
        return 0
    names = [run.name for run in runs]
    console.print(_diff_table("Runs", names, overview))
    _print_settings(names, settings, show_all=args.all_settings)
    console.print(_ranked_table("Training metrics (metrics.json)", names, training))
    if parsed is not None:
        title = f"On {args.data} ({len(parsed.examples)} examples)"
        console.print(_ranked_table(escape(title), names, eval_rows))
        _print_examples(names, results)
    for i, prompt in enumerate(prompts):
        _print_answers(prompt, names, [per_run[i] for per_run in answers])
    for note in notes:
        console.print(f"[yellow]note[/]: {escape(note)}")
    return 0


def _checked_options(args: argparse.Namespace) -> tuple[list[str], InferenceParams, InferenceParams | None]:
    """The prompts and generation parameters, refused before any run is read: an option with nothing to act
    on is a usage error rather than silently ignored."""
    from tuneloom.cli.model_cmds import evaluation_params
    from tuneloom.generate.params import MAX_INPUTS, InferenceParams

    prompts: list[str] = args.prompt or []
    if args.max_tokens is not None and not (prompts or args.data):
        args.usage_error("--max-tokens applies to --prompt and --data; give one of them")
    if args.format is not None and not args.data:
        args.usage_error("--format is the format of --data; give --data too")
    if len(prompts) > MAX_INPUTS:
        args.usage_error(f"at most {MAX_INPUTS} --prompt options, got {len(prompts)}")
    prompt_params = InferenceParams.from_dict({"max_tokens": args.max_tokens, "temperature": 0})
    return prompts, prompt_params, evaluation_params(args.max_tokens)


def _run_each(
    runs: Sequence[Run],
    parsed: ParsedFile | None,
    eval_params: InferenceParams | None,
    prompts: list[str],
    prompt_params: InferenceParams,
) -> tuple[list[EvaluationResult], list[list[Generation]]]:
    """Each run's evaluation on `parsed` and answers to `prompts`, one loaded model at a time."""
    results: list[EvaluationResult] = []
    answers: list[list[Generation]] = []
    if parsed is None and not prompts:
        return results, answers
    from tuneloom.cli.model_cmds import evaluate_with_progress
    from tuneloom.generate.generator import generate
    from tuneloom.generate.loading import load_version

    for run in runs:
        loaded = load_version(run.version)  # verified by open_run already
        if parsed is not None:
            results.append(evaluate_with_progress(loaded, parsed.examples, eval_params))
        if prompts:
            answers.append(generate(loaded, prompts, prompt_params))
        del loaded  # released before the next run loads
    return results, answers


def _evaluation_json(
    data: Path | None, parsed: ParsedFile | None, rows: list[MetricRow], results: list[EvaluationResult]
) -> dict[str, Any] | None:
    if parsed is None:
        return None
    examples = [
        {
            "line": first["line"],
            "prompt": first["prompt"],
            "expected": first["expected"],
            "generated": [r.rows[i]["generated"] for r in results],
            "match": [r.rows[i]["match"] for r in results],
        }
        for i, first in enumerate(results[0].rows)
    ]
    return {
        "data": str(data),
        "data_report": parsed.report.to_dict(),
        "metrics": [row.to_dict() for row in rows],
        "examples": examples,
    }


def _prompts_json(runs: Sequence[Run], prompts: list[str], answers: list[list[Generation]]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": prompt,
            "answers": [
                {"run": run.name, "text": g.text, "tokens": g.tokens, "finish_reason": g.finish_reason}
                for run, g in zip(runs, (per_run[i] for per_run in answers), strict=True)
            ],
        }
        for i, prompt in enumerate(prompts)
    ]


def _cell(value: Any) -> str:
    """A setting as the user wrote it in --trainer-config: JSON, except that a string needs no quotes."""
    if value is None:
        return "—"
    return escape(value if isinstance(value, str) else json.dumps(value))


def _diff_table(title: str, names: list[str], rows: Sequence[DiffRow]) -> Table:
    table = Table(title=title, title_justify="left", caption=f"{DIFFERS} differs between the runs")
    table.add_column("", width=1)
    table.add_column("setting" if title == "Settings" else "", overflow="fold")
    for name in names:
        table.add_column(escape(name), overflow="fold")
    for row in rows:
        style = "yellow" if row.differs else None
        table.add_row(DIFFERS if row.differs else "", row.key, *(_cell(v) for v in row.values), style=style)
    return table


def _print_settings(names: list[str], rows: Sequence[DiffRow], *, show_all: bool) -> None:
    differing = [row for row in rows if row.differs]
    summary = f"{len(differing)} of {len(rows)} settings differ"
    if not differing and not show_all:
        console.print(f"{summary}: the runs were trained with the same settings (--all-settings lists them).")
        return
    console.print(f"{summary}{'' if show_all else ' (--all-settings lists every one)'}:")
    console.print(_diff_table("Settings", names, rows if show_all else differing))


def _ranked_table(title: str, names: list[str], rows: Sequence[MetricRow]) -> Table:
    """The metrics table of `tuneloom evaluate`, one column per run, with which way is better and the best ★."""
    columns = {name: {row.key: row.values[i] for row in rows} for i, name in enumerate(names)}
    return metrics_table(title, columns, ranked={row.key: (row.better, row.best) for row in rows})


def _print_examples(names: list[str], results: list[EvaluationResult]) -> None:
    """The first held-out examples with each run's answer, as `tuneloom evaluate` shows one run's."""
    count = len(results[0].rows)
    table = Table(title=f"Examples ({min(EXAMPLES_SHOWN, count)} of {count})", title_justify="left")
    for column in ("line", "expected", *names):
        table.add_column(escape(column), overflow="fold")
    for i, first in enumerate(results[0].rows[:EXAMPLES_SHOWN]):
        answers = [_marked(r.rows[i]["generated"], r.rows[i]["match"]) for r in results]
        table.add_row(str(first["line"]), escape(first["expected"]), *answers)
    console.print(table)


def _marked(text: str, match: bool) -> str:
    return f"{escape(text)} [green]✓[/]" if match else f"{escape(text)} [red]✗[/]"


def _print_answers(prompt: str, names: list[str], generations: list[Generation]) -> None:
    table = Table(title=f"Prompt: {escape(prompt)}", title_justify="left", show_lines=True)
    for column in ("run", "answer (greedy)", "tokens", "finish"):
        table.add_column(column, overflow="fold")
    for name, g in zip(names, generations, strict=True):
        table.add_row(escape(name), escape(g.text) or "∅", str(g.tokens), g.finish_reason)
    console.print(table)
