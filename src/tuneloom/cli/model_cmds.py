"""`tuneloom generate`, `tuneloom evaluate`, `tuneloom export`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from tuneloom.cli.arg_types import add_data_arguments, read_named_file
from tuneloom.cli.render import console, console_err, metrics_table, print_json, progress_bar
from tuneloom.errors import DataFileError
from tuneloom.export_gguf import DEFAULT_GGUF_TYPE, GGUF_TYPES

if TYPE_CHECKING:
    from tuneloom.data.parse import ParsedFile
    from tuneloom.data.types import Example
    from tuneloom.evaluate.runner import EvaluationResult
    from tuneloom.generate.loading import InferenceModel
    from tuneloom.generate.params import InferenceParams


def register(commands: Any) -> None:
    from tuneloom.generate.params import InferenceParams, range_text

    default = InferenceParams()
    gen = commands.add_parser("generate", help="generate with a model version (or a template id, untrained)")
    gen.add_argument("model", help="model-version directory or template id")
    source = gen.add_mutually_exclusive_group()  # both given: one of them would be silently ignored
    source.add_argument("text", nargs="?", help="the input text (or use --file, or pipe it on stdin)")
    source.add_argument("--file", type=Path, help="one input per line (up to 128)")
    gen.add_argument(
        "--max-tokens",
        type=int,
        help=f"the most new tokens per input, {range_text('max_tokens')} (default: {default.max_tokens})",
    )
    gen.add_argument(
        "--temperature",
        type=float,
        help=f"{range_text('temperature')}: above 0 samples, higher is more random; 0 decodes greedily "
        f"(default: {default.temperature:g})",
    )
    gen.add_argument(
        "--top-p",
        type=float,
        help="above 0, at most 1: when sampling, draw only from the likeliest tokens whose probabilities add up "
        f"to this (default: {default.top_p:g}, all)",
    )
    gen.add_argument(
        "--top-k",
        type=int,
        help=f"{range_text('top_k')}: when sampling, draw only from this many likeliest tokens "
        f"(default: {default.top_k}, all)",
    )
    gen.add_argument(
        "--repetition-penalty",
        type=float,
        help="above 0, at most 10: tokens already in the prompt or output are made less likely (>1) or more (<1); "
        "default: the model's generation config's, else 1 (none)",
    )
    gen.add_argument("--presence-penalty", type=float, help="-2 to 2: subtracted from each token the output holds")
    gen.add_argument(
        "--frequency-penalty", type=float, help="-2 to 2: subtracted once per time the output holds a token"
    )
    gen.add_argument(
        "--num-beams",
        type=int,
        help=f"{range_text('num_beams')}: beam search over this many beams (default: {default.num_beams}, none)",
    )
    gen.add_argument(
        "--do-sample",
        action="store_true",
        default=None,
        help="sample rather than decode greedily (default: sample exactly when --temperature is above 0)",
    )
    gen.add_argument(
        "--return-full-text",
        action="store_true",
        default=None,
        help="print the prompt followed by the generated text (default: the generated text alone)",
    )
    gen.add_argument(
        "--system-prompt",
        help="fills the prompt format's {system_prompt}, or goes before the prompt where it has none",
    )
    gen.add_argument("--prompt-template", help="must contain {prompt}; may contain {system_prompt}")
    gen.add_argument(
        "--stop",
        action="append",
        type=_unescape,
        help="stop string (repeatable; \\n, \\t as escapes); '###' always stops",
    )
    gen.add_argument(
        "--seed", type=int, help="sample reproducibly: the same seed gives the same text (input i uses seed + i)"
    )
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.add_argument(
        "--compile",
        action="store_true",
        help="on a GPU, decode single inputs through a compiled step (static KV cache, CUDA graphs): "
        "tens of seconds to compile once, then several times faster per token",
    )
    gen.add_argument(
        "--json",
        action="store_true",
        help="print each input's prompt, text, new-token count and finish reason as JSON",
    )
    gen.set_defaults(run=run_generate)

    ev = commands.add_parser("evaluate", help="score a model version (or a template id) on held-out examples")
    ev.add_argument("model", help="model-version directory or template id")
    add_data_arguments(ev, "data", "held-out examples")
    ev.add_argument(
        "--max-tokens",
        type=int,
        help=f"the most new tokens per example, {range_text('max_tokens')} "
        "(default: enough for the longest expected completion)",
    )
    ev.add_argument(
        "--json", action="store_true", help="print the metrics, each example's row and the data report as JSON"
    )
    ev.set_defaults(run=run_evaluate)

    ex = commands.add_parser(
        "export", help="write a standard Hugging Face folder (adapter, or --merged), or a GGUF file (--gguf)"
    )
    ex.add_argument("model", type=Path, help="the model-version directory to export")
    ex.add_argument("out", type=Path, help="the folder to write (must not exist yet)")
    add_export_form_args(ex)
    ex.set_defaults(run=run_export)


def add_export_form_args(parser: argparse.ArgumentParser) -> None:
    """`--merged` or `--gguf [TYPE]` (neither: the adapter), for `export` and `download` alike."""
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--merged", action="store_true", help="merge LoRA into the base weights")
    how.add_argument(
        "--gguf",
        nargs="?",
        const=DEFAULT_GGUF_TYPE,
        choices=GGUF_TYPES,
        metavar="TYPE",
        help=f"one GGUF file for llama.cpp / Ollama (LoRA merged), weights in TYPE: {', '.join(GGUF_TYPES)} "
        f"(default: {DEFAULT_GGUF_TYPE}); with an Ollama Modelfile in the prompt format",
    )


def _inference_params(args: argparse.Namespace) -> Any:
    from tuneloom.generate.params import InferenceParams

    keys = (
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "num_beams",
        "do_sample",
        "return_full_text",
        "system_prompt",
        "prompt_template",
        "stop",
        "seed",
    )
    return InferenceParams.from_dict({k: getattr(args, k, None) for k in keys})


# What a user types for a stop string in a shell, where "\n" arrives as a backslash and an n.
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r", "\\\\": "\\"}


def _unescape(text: str) -> str:
    """`--stop "\\n"` means a newline (as the README shows it): a literal backslash-n would never match."""
    return re.sub(r"\\[ntr\\]", lambda m: _ESCAPES[m.group(0)], text)


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.file is not None:
        return _file_inputs(args.file)
    if args.text is not None:
        if not args.text.strip():  # `tuneloom generate RUN "$EMPTY"`: as the server, never an empty prompt
            raise DataFileError("no input: TEXT is empty; give a TEXT, --file F, or pipe the input on stdin")
        return [args.text]
    if not sys.stdin.isatty():
        text = sys.stdin.read().strip()
        if not text:  # `… | tuneloom generate RUN` from a command that printed nothing
            raise DataFileError("no input: stdin was empty; give a TEXT, --file F, or pipe the input on stdin")
        return [text]
    raise SystemExit("tuneloom generate: give a TEXT, --file F, or pipe the input on stdin")


def _file_inputs(path: Path) -> list[str]:
    """The non-blank lines of `path`, refused before the model loads when there are none or too many."""
    from tuneloom.generate.params import MAX_INPUTS

    lines = read_named_file(path, f"--file: {path}", DataFileError).splitlines()
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise DataFileError(f"{path}: no inputs (the file is empty or holds only blank lines)")
    if len(texts) > MAX_INPUTS:
        raise DataFileError(
            f"{path}: {len(texts)} inputs, more than the {MAX_INPUTS} one call takes; split the file",
            details={"limit": MAX_INPUTS},
        )
    return texts


def run_generate(args: argparse.Namespace) -> int:
    from tuneloom.generate.compiled import compile_decode
    from tuneloom.generate.generator import generate, stream
    from tuneloom.generate.loading import load_for_inference

    params = _inference_params(args)
    texts = _inputs(args)
    loaded = load_for_inference(args.model)
    if args.compile and not compile_decode(loaded):
        console_err.print("[yellow]--compile has no effect without a GPU; generating as usual.[/yellow]")
    if args.stream:
        for i, text in enumerate(texts):
            for piece in stream(loaded, text, params.for_input(i)):  # as `generate` would sample input i
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        return 0
    generations = generate(loaded, texts, params)
    if args.json:
        print_json(
            [
                {
                    "input": t,
                    "prompt": g.prompt,
                    "text": g.text,
                    "tokens": g.tokens,
                    "finish_reason": g.finish_reason,
                }
                for t, g in zip(texts, generations, strict=True)
            ]
        )
    else:
        for g in generations:
            sys.stdout.write(g.text + "\n")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tuneloom.generate.loading import load_for_inference

    params = evaluation_params(args.max_tokens)
    parsed = read_heldout(args.data, args.format)
    loaded = load_for_inference(args.model)
    result = evaluate_with_progress(loaded, parsed.examples, params)
    if args.json:
        print_json({**result.to_dict(), "data_report": parsed.report.to_dict()})
        return 0
    console.print(metrics_table(f"{escape(loaded.name)} on {escape(str(args.data))}", {"value": result.metrics}))
    print_evaluation_rows(result.rows)
    return 0


def evaluation_params(max_tokens: int | None) -> InferenceParams | None:
    """`--max-tokens` checked before any model loads; None lets the evaluation fit the expected completions."""
    from tuneloom.generate.params import InferenceParams

    return InferenceParams.from_dict({"max_tokens": max_tokens}) if max_tokens is not None else None


def read_heldout(path: Path, data_format: str) -> ParsedFile:
    """The held-out file parsed before any model loads; no valid example is an error, skipped rows a note."""
    from tuneloom.data import parse_file

    parsed = parse_file(path, format=data_format)
    if not parsed.examples:
        raise DataFileError(
            f"{path}: no valid examples to evaluate on ({parsed.report.invalid_rows} invalid rows)",
            details={"report": parsed.report.to_dict()},
        )
    if parsed.report.invalid_rows:
        console_err.print(
            f"[yellow]{parsed.report.invalid_rows} invalid rows skipped[/]; "
            f"run `tuneloom validate {escape(str(path))}` to see them."
        )
    return parsed


def evaluate_with_progress(
    loaded: InferenceModel, examples: list[Example], params: InferenceParams | None
) -> EvaluationResult:
    """`evaluate_examples` under a progress bar on stderr (generation is the slow part of an evaluation)."""
    from tuneloom.evaluate.runner import evaluate_examples

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating {escape(loaded.name)}", total=len(examples), status="")

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return evaluate_examples(loaded, examples, params=params, on_progress=advance)


def print_evaluation_rows(rows: list[dict[str, Any]], limit: int = 8) -> None:
    table = Table(title=f"Examples ({min(limit, len(rows))} of {len(rows)})", title_justify="left")
    for column in ("line", "expected", "generated", "match"):
        table.add_column(column, overflow="fold")
    for row in rows[:limit]:
        table.add_row(
            str(row["line"]),
            escape(row["expected"]),
            escape(row["generated"]),
            "[green]✓[/]" if row["match"] else "[red]✗[/]",
        )
    console.print(table)


def run_export(args: argparse.Namespace) -> int:
    from tuneloom.export import GGUF_FILE, export_version

    exported = export_version(args.model, args.out, merged=args.merged, gguf_type=args.gguf)
    if exported.holds == "GGUF":
        where = escape(str(exported.path / GGUF_FILE))
        console.print(f"Exported {where} (runs with llama.cpp; for Ollama, the Modelfile beside it)")
        return 0
    loads_with = "peft" if exported.holds == "adapter" else "plain transformers"
    console.print(f"Exported the {exported.holds} to {escape(str(exported.path))} (loads with {loads_with})")
    return 0
