"""`tuneloom validate`, `tuneloom csv-template`, `tuneloom templates`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tuneloom.cli.arg_types import add_data_arguments, count
from tuneloom.cli.render import console, print_json, print_report
from tuneloom.templates.catalogue import DEFAULT_TEMPLATE
from tuneloom.templates.settings import DEFAULT_TOLERANCE

USABLE, NOT_USABLE = 0, 1


def register(commands: Any) -> None:
    validate = commands.add_parser("validate", help="check a data file: counts, invalid rows, token lengths")
    add_data_arguments(validate, "file", "the data file")
    validate.add_argument(
        "--template", default=DEFAULT_TEMPLATE, help="tokenize with this template's tokenizer (default: %(default)s)"
    )
    validate.add_argument("--no-tokenize", action="store_true", help="parse only (fastest; no token statistics)")
    validate.add_argument(
        "--invalid-data-tolerance-percent",
        type=float,
        default=DEFAULT_TOLERANCE,
        dest="tolerance",
        help="the most invalid rows, in %% of all rows, for the file to be usable; above it exits 1 "
        "(default: %(default)s)",
    )
    validate.add_argument("--preview", type=count, default=0, metavar="N", help="show N examples as tokenized")
    validate.add_argument("--json", action="store_true", help="print the verdict, the report and the preview as JSON")
    validate.set_defaults(run=run_validate)

    template = commands.add_parser("csv-template", help="write the CSV template with example rows")
    template.add_argument(
        "path",
        type=Path,
        nargs="?",
        default=Path("tuneloom-template.csv"),
        help="where to write it (default: %(default)s)",
    )
    template.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    template.set_defaults(run=run_csv_template)

    templates = commands.add_parser("templates", help="list templates, or show one's default settings")
    templates.add_argument(
        "action",
        nargs="?",
        choices=["list", "show"],
        default="list",
        help="list the templates, or show one's default settings as JSON (default: %(default)s)",
    )
    templates.add_argument("template_id", nargs="?", help="show: the id of the template to show")
    templates.add_argument("--json", action="store_true", help="list: print the templates as JSON")
    templates.set_defaults(run=run_templates)


def run_validate(args: argparse.Namespace) -> int:
    from tuneloom.data.validation import validate_file
    from tuneloom.templates import tokenizer_settings, tolerance_setting

    tolerance = tolerance_setting(args.tolerance)
    model_config, tokenizer_config = tokenizer_settings(args.template)
    tokenizer = None
    if not args.no_tokenize:
        from tuneloom.templates.loading import load_tokenizer

        tokenizer = load_tokenizer(model_config, tokenizer_config)
    result = validate_file(
        args.file,
        tokenizer=tokenizer,
        data_format=args.format,
        max_length=int(tokenizer_config.get("model_max_length", 512)),
        preview=args.preview,
    )
    usable = result.report.within_tolerance(tolerance)
    if args.json:
        previews = [[{"text": p.text, "trained": p.trained} for p in pv] for pv in result.previews]
        print_json(
            {
                "usable": usable,
                "tolerance_percent": tolerance,
                "report": result.report.to_dict(),
                "preview": previews,
            }
        )
    else:
        print_report(result.report, tolerance)
        for i, pieces in enumerate(result.previews, 1):
            text = Text(f"example {i}: ", style="bold")
            for piece in pieces:
                text.append(piece.text, style="bold green" if piece.trained else "dim")
            console.print(text)
        if result.previews:
            console.print("[dim]dim: prompt (masked from the loss)[/]  [bold green]green: completion (trained)[/]")
    return USABLE if usable else NOT_USABLE


def run_csv_template(args: argparse.Namespace) -> int:
    from tuneloom.data import write_csv_template
    from tuneloom.errors import DataFileError

    if args.path.is_file() and not args.overwrite:  # likely the user's own data, named like the template's
        raise DataFileError(f"{args.path} already exists; choose another path or pass --overwrite.")
    write_csv_template(args.path)
    console.print(f"Wrote the CSV template to {escape(str(args.path))}")
    return 0


def run_templates(args: argparse.Namespace) -> int:
    from tuneloom.templates import TEMPLATES, get_template, resolve_settings

    if args.action == "show":
        if not args.template_id:
            raise SystemExit("usage: tuneloom templates show TEMPLATE_ID")
        template = get_template(args.template_id)
        print_json({**template.summary(), "defaults": resolve_settings(template).to_dict()})
        return 0
    if args.json:
        print_json([t.summary() for t in TEMPLATES])
        return 0
    table = Table(title="Templates (tuneloom templates show ID for the defaults)", title_justify="left")
    for column in ("id", "size", "base model", "needs", "description"):
        table.add_column(column, overflow="fold")
    for t in TEMPLATES:
        needs = "GPU" if t.requires_gpu else ("offline ✓" if t.offline else "Hub or local copy")
        table.add_row(t.id, t.parameters, t.base_model, needs, t.description)
    console.print(table)
    return 0
