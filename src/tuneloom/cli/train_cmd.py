"""`tuneloom train`: one fine-tuning run with a live progress bar; Ctrl-C checkpoints and stops."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from rich.markup import escape

from tuneloom.cli.arg_types import add_data_arguments
from tuneloom.cli.render import console, console_err, print_json, progress_bar
from tuneloom.templates.catalogue import DEFAULT_TEMPLATE, SETTING_NAMES
from tuneloom.templates.settings import DEFAULT_TOLERANCE
from tuneloom.templates.settings_distributed import DEFAULTS, STRATEGIES


def register(commands: Any) -> None:
    train = commands.add_parser("train", help="fine-tune a template on a data file into a model-version directory")
    add_data_arguments(train, "data", "training data")
    train.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        help="the template to fine-tune, from `tuneloom templates` (default: %(default)s)",
    )
    for name in SETTING_NAMES:
        train.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar="JSON|@FILE",
            help=f"{name} overrides as a JSON object, or @path to a JSON file",
        )
    train.add_argument(
        "--invalid-data-tolerance-percent",
        type=float,
        dest="tolerance",
        help="invalid rows are dropped up to this %% of all rows; more stops the run before training "
        f"(default: {DEFAULT_TOLERANCE:g})",
    )
    _distributed_args(train)
    train.add_argument("--validation", type=Path, help="held-out file (default: 10%% of the data)")
    train.add_argument(
        "--output",
        type=Path,
        default=Path("runs/model"),
        help="the model-version directory to write (default: %(default)s)",
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of --output")
    train.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    train.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    train.set_defaults(run=run_train)


# `--num-processes 2` etc.: shorthands for the keys of the `distributed` setting (they override --distributed).
DISTRIBUTED_FLAGS = {
    "strategy": str,
    "num_processes": int,
    "num_machines": int,
    "machine_rank": int,
    "main_process_ip": str,
    "main_process_port": int,
}
DISTRIBUTED_HELP = {
    "strategy": f"{', '.join(STRATEGIES[:-1])} or {STRATEGIES[-1]} (default: {DEFAULTS['strategy']})",
    "num_processes": f"processes in total, over all machines: one per GPU (default: {DEFAULTS['num_processes']})",
    "num_machines": f"machines taking part, each running this command (default: {DEFAULTS['num_machines']})",
    "machine_rank": f"this machine's rank; rank 0 writes the model version (default: {DEFAULTS['machine_rank']})",
    "main_process_ip": "rank 0's address; required with several machines",
    "main_process_port": "rank 0's rendezvous port (default: a free one on one machine, 29500 over several)",
}


def _distributed_args(train: argparse.ArgumentParser) -> None:
    group = train.add_argument_group("several processes, GPUs or machines (through accelerate launch)")
    group.add_argument("--distributed", metavar="JSON|@FILE", help="the distributed setting as a JSON object")
    for key, kind in DISTRIBUTED_FLAGS.items():
        group.add_argument(
            f"--{key.replace('_', '-')}",
            dest=f"dist_{key}",
            type=kind,
            metavar=key.split("_")[-1].upper(),
            help=DISTRIBUTED_HELP[key],
        )


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from tuneloom.templates import parse_settings_json

    overrides: dict[str, Any] = {}
    for name in SETTING_NAMES:
        raw = getattr(args, name)
        if raw is None:
            continue
        if raw.startswith("@"):
            raw = _read_settings_file(raw[1:], name)
        overrides[name] = parse_settings_json(raw, name)
    if args.tolerance is not None:
        overrides["invalid_data_tolerance_percent"] = args.tolerance
    distributed = _distributed_from_args(args)
    if distributed:
        overrides["distributed"] = distributed
    return overrides


def _distributed_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from tuneloom.templates import parse_settings_json

    raw = getattr(args, "distributed", None)
    if raw is not None and raw.startswith("@"):
        raw = _read_settings_file(raw[1:], "distributed")
    given = parse_settings_json(raw, "distributed") if raw is not None else {}
    flags = {key: getattr(args, f"dist_{key}", None) for key in DISTRIBUTED_FLAGS}
    return {**given, **{k: v for k, v in flags.items() if v is not None}}


def _read_settings_file(where: str, name: str) -> str:
    """The text of `@where`; a bare `@` names no file (it would otherwise read as the current folder)."""
    from tuneloom.cli.arg_types import read_named_file
    from tuneloom.errors import SettingsError

    flag = f"--{name.replace('_', '-')}"
    if not where.strip():
        raise SettingsError(f"{flag}: '@' must be followed by a JSON file's path, e.g. @{name}.json", key=name)
    return read_named_file(Path(where), f"{flag}: @{where}", lambda message: SettingsError(message, key=name))


def run_train(args: argparse.Namespace) -> int:
    from tuneloom.train.launch import train
    from tuneloom.train.recipe import TrainJob

    job = TrainJob(
        data=args.data,
        output=args.output,
        template=args.template,
        settings=settings_from_args(args),
        validation=args.validation,
        data_format=args.format,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    _note_missing_checkpoint(job)
    stop = threading.Event()
    outcome = with_progress(lambda sink: train(job, on_event=sink, stop=stop), stop)
    if outcome is None:
        console.print("This machine's processes finished; the machine with machine_rank 0 writes the model version.")
        return 0
    report = outcome.report
    if report.invalid_rows:
        console_err.print(
            f"[yellow]{report.dropped}[/] (within the tolerance); "
            f"run `tuneloom validate {escape(str(args.data))}` to see them."
        )
    if args.json:
        print_json({"output": str(outcome.version.path), "metrics": outcome.metrics})
    else:
        m = outcome.metrics
        console.print(f"[bold green]Model version written to {escape(str(outcome.version.path))}[/]")
        console.print(
            f"train loss {m['train_loss']:.4f}"
            + (f", eval loss {m['eval_loss']:.4f}, perplexity {m['perplexity']:.2f}" if "eval_loss" in m else "")
            + f", {m['train_tokens_per_second']} tokens/s"
        )
    return 0


def _note_missing_checkpoint(job: Any) -> None:
    """`--resume` with nothing to resume from trains from the start (as a worker's first try does); say so.

    Not for a finished output: it is refused (`check_output`, "nothing to resume"), nothing trains.
    """
    from tuneloom.train.checkpoints import latest_checkpoint
    from tuneloom.train.recipe import workdir_for

    if job.output.exists() and not job.overwrite:
        return
    if job.resume and latest_checkpoint(workdir_for(job)) is None:
        console_err.print(
            f"[yellow]--resume: no checkpoint in {escape(str(workdir_for(job)))}[/]; training from the start."
        )


def with_progress(work: Any, stop: threading.Event) -> Any:
    """Run `work(sink)` under a progress bar; the first Ctrl-C asks the run to checkpoint and stop."""
    from tuneloom.train.events import TrainEvent

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console_err.print("[yellow]Stopping after this step and saving a checkpoint (Ctrl-C again to abort)…[/]")

    previous = signal.signal(signal.SIGINT, on_sigint)
    with progress_bar() as bar:
        task = bar.add_task("training", total=None, status="", visible=False)  # shown from the first step

        def sink(event: TrainEvent) -> None:
            if event.kind == "stage":
                bar.console.print(f"[dim]•[/] {escape(event.message)}")
            elif event.kind == "step":
                bar.update(task, total=event.total_steps, completed=event.step, visible=True)
            elif event.loss is not None:
                bar.update(task, status=f"loss {event.loss:.4f}")
            elif event.eval_loss is not None:
                bar.console.print(f"[dim]•[/] step {event.step}: eval loss {event.eval_loss:.4f}")

        try:
            return work(sink)
        finally:
            signal.signal(signal.SIGINT, previous)
