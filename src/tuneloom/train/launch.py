"""One entry point for a training run, in one process or across several through `accelerate launch`.

`train(job)` runs the recipe here when the settings ask for one process. When the `distributed`
setting asks for more (DDP, FSDP, DeepSpeed; one machine or several), it starts
`accelerate launch … -m tuneloom.train.rank spec.json` in its own session and relays:

- rank 0's `TrainEvent`s, one JSON line each on the launcher's stdout (`EVENT_PREFIX`), to `on_event`
  (everything else the processes print goes to stderr untouched);
- `stop` (Ctrl-C, a worker shutting down) as a `STOP` file that rank 0 notices and all ranks agree on;
- rank 0's outcome (`result.json`): the metrics and data report, or the error, raised here as the
  same `TuneloomError` a one-process run would raise.

The launcher and its ranks die with the process that called `train` (parent-death signal), so a
killed worker or a cancelled run leaves nothing behind. The CLI and the worker both call this.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from tuneloom.data.types import DataReport, InvalidRow
from tuneloom.errors import (
    DataFileError,
    ModelUnavailableError,
    ModelVersionError,
    SettingsError,
    ToleranceExceededError,
    TuneloomError,
)
from tuneloom.model_version import open_version
from tuneloom.templates import require_supported_hardware, resolve_settings
from tuneloom.templates.settings_distributed import processes_per_machine
from tuneloom.train.events import EventSink, TrainEvent, ignore_events
from tuneloom.train.recipe import TrainingInterrupted, TrainJob, TrainOutcome, check_output, run_training

EVENT_PREFIX = "@tuneloom-event "
SPEC, RESULT, STOP = "spec.json", "result.json", "STOP"
_PATH_FIELDS = ("data", "output", "validation", "workdir", "start_from")
_ERRORS: dict[str, type[TuneloomError]] = {
    cls.code: cls
    for cls in (
        DataFileError,
        ToleranceExceededError,
        SettingsError,
        ModelUnavailableError,
        ModelVersionError,
        TrainingInterrupted,
    )
}


class DistributedRunError(TuneloomError):
    code = "DISTRIBUTED_RUN_FAILED"


def train(
    job: TrainJob, *, on_event: EventSink = ignore_events, stop: threading.Event | None = None
) -> TrainOutcome | None:
    """Train `job`; None only on a machine other than machine_rank 0 (that one writes the model version)."""
    settings = resolve_settings(job.template, job.settings)
    distributed = settings.distributed
    if not distributed:
        return run_training(job, on_event=on_event, stop=stop)
    require_supported_hardware(settings, cuda_available=torch.cuda.is_available())  # once, before N ranks start
    check_this_machine(distributed)
    check_output(job)
    command = launch_command(distributed)
    with tempfile.TemporaryDirectory(prefix="tuneloom-launch-") as tmp:
        channel = Path(tmp)
        (channel / SPEC).write_text(job_to_json(job))
        returncode = _run_launcher([*command, str(channel)], channel, on_event, stop or threading.Event())
        result = _read_result(channel)
    return _outcome(job, distributed, result, returncode)


def check_this_machine(distributed: dict[str, Any]) -> None:
    """What only this machine can tell, checked before any rank starts (else each rank fails, or waits, alone).

    A GPU per process: NCCL refuses two ranks on one device. Rank 0's address must resolve here: a
    name that does not was retried by every rank until torch's rendezvous timed out.
    """
    per_machine = processes_per_machine(distributed)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and per_machine > gpus:
        raise SettingsError(
            f"distributed.num_processes: {per_machine} processes on this machine need a GPU each, and it has "
            f"{gpus}; run at most {gpus} per machine",
            key="distributed.num_processes",
        )
    host = distributed["main_process_ip"]
    if host:
        try:
            socket.getaddrinfo(host, distributed["main_process_port"], type=socket.SOCK_STREAM)
        except OSError as err:
            raise SettingsError(
                f"distributed.main_process_ip '{host}' cannot be resolved on this machine ({err.strerror or err}); "
                "give the IP address of the machine with machine_rank 0",
                key="distributed.main_process_ip",
            ) from None


def launch_command(distributed: dict[str, Any]) -> list[str]:
    """`accelerate launch` with the flags for `distributed`, ending with the rank module (add the channel dir)."""
    strategy = distributed["strategy"]
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise SettingsError(
            f"distributed.strategy '{strategy}' needs DeepSpeed, which is not installed: "
            "`pip install deepspeed` on a machine with CUDA, or choose 'ddp' or 'fsdp'",
            key="distributed.strategy",
        )
    flags = [
        f"--num_processes={distributed['num_processes']}",
        f"--num_machines={distributed['num_machines']}",
        f"--machine_rank={distributed['machine_rank']}",
        f"--main_process_port={distributed['main_process_port']}",
        "--mixed_precision=no",  # trainer_config's bf16/fp16 decide, as in a one-process run
        "--dynamo_backend=no",
    ]
    if distributed["main_process_ip"]:
        flags.append(f"--main_process_ip={distributed['main_process_ip']}")
    flags += _STRATEGY_FLAGS[strategy]
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "tuneloom.train.rank"]


_FSDP = [
    "--use_fsdp",
    "--fsdp_version=2",
    "--fsdp_auto_wrap_policy=TRANSFORMER_BASED_WRAP",  # the model's own _no_split_modules (decoder layers)
    "--fsdp_state_dict_type=FULL_STATE_DICT",
    "--fsdp_reshard_after_forward=true",
]
_STRATEGY_FLAGS: dict[str, list[str]] = {
    "ddp": ["--multi_gpu"],  # torchrun under the hood; gloo on CPUs, NCCL on GPUs
    "fsdp": _FSDP,
    "deepspeed_zero2": ["--use_deepspeed", "--zero_stage=2"],
    "deepspeed_zero3": ["--use_deepspeed", "--zero_stage=3", "--zero3_save_16bit_model=true"],
}


def job_to_json(job: TrainJob) -> str:
    data = dataclasses.asdict(job)
    data["settings"] = dict(job.settings)
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in data.items()})


def job_from_json(text: str) -> TrainJob:
    data = json.loads(text)
    for name in _PATH_FIELDS:
        if data.get(name) is not None:
            data[name] = Path(data[name])
    return TrainJob(**data)


def _run_launcher(command: list[str], channel: Path, on_event: EventSink, stop: threading.Event) -> int:
    """Run the launcher to its end, relaying events and stop; kill its whole session if we are interrupted."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the ranks' advisory chatter, times N processes
    env.setdefault("PYTHONWARNINGS", "ignore::UserWarning,ignore::FutureWarning")
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # else accelerate sees no GPU and no distributed run: gloo on CPUs
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a terminal's Ctrl-C reaches us (we ask for a checkpoint), not the ranks
        preexec_fn=_parent_death_signal(),
    )
    threading.Thread(target=_relay_stop, args=(process, stop, channel), daemon=True).start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(EVENT_PREFIX):
                on_event(TrainEvent(**json.loads(line[len(EVENT_PREFIX) :])))
            else:
                sys.stderr.write(line)
        return process.wait()
    finally:
        _end_session(process)


def _parent_death_signal() -> Any:
    """A pre-exec hook: the launcher gets SIGKILL when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    return lambda: libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _relay_stop(process: subprocess.Popen[str], stop: threading.Event, channel: Path) -> None:
    while process.poll() is None:
        if stop.wait(0.5):
            with contextlib.suppress(OSError):
                (channel / STOP).touch()
            return


def _end_session(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
            return


def _read_result(channel: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((channel / RESULT).read_text()))
    except (OSError, ValueError):
        return None


def _outcome(job: TrainJob, distributed: dict[str, Any], result: dict[str, Any] | None, rc: int) -> TrainOutcome | None:
    """What rank 0 reported, as the one-process run would have returned or raised it."""
    if result is None:
        if rc == 0 and distributed["machine_rank"] != 0:
            return None
        raise DistributedRunError(
            f"the {distributed['strategy']} run over {distributed['num_processes']} processes failed "
            f"(launcher exit code {rc}); the processes' output above says why"
        )
    if result["kind"] == "done":
        return TrainOutcome(open_version(job.output), result["metrics"], report_from_dict(result["report"]))
    error = result["error"]
    cls = _ERRORS.get(error["code"], TuneloomError)
    details = error.get("details") or {}
    if cls is SettingsError:
        raise SettingsError(error["message"], key=details.get("key"), details=details)
    raise cls(error["message"], code=error["code"], details=details)


def report_from_dict(data: dict[str, Any]) -> DataReport:
    """`DataReport.to_dict` read back (the derived `invalid_percent` is recomputed)."""
    names = {f.name for f in dataclasses.fields(DataReport)}
    fields = {k: v for k, v in data.items() if k in names}
    fields["invalid"] = [InvalidRow(**row) for row in data.get("invalid", [])]
    return DataReport(**fields)
