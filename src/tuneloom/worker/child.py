"""The training process: one run of the engine's recipe, talking to its supervisor over a pipe.

Training runs in its own process so that a crash, an out-of-memory kill or a cancel takes down
only the run, never the worker (or the API beside it), and so that the process's memory is
returned when the run ends. The child never touches the database: it sends `TrainEvent`s and one
final result, and the supervisor writes them. It dies with its parent (a worker killed with
SIGKILL must not leave an orphan training on a GPU the next worker will want): by parent-death
signal, and when the supervisor's end of the pipe closes.

Messages to the supervisor: ("event", {...TrainEvent}), then exactly one of ("done", {}),
("stopped", {}) or ("error", {"status": TrainingStatus name, "message": str, "trace": str}).
The supervisor sends "stop" to ask for a checkpoint and a clean exit (worker shutting down).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tuneloom.train.process import die_with_parent


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything the child needs, as plain picklable data (paths already resolved by the supervisor)."""

    job_id: str
    data: str
    output: str
    workdir: str
    template: str
    settings: dict[str, Any]
    start_from: str | None = None
    checkpoint_every_s: float | None = None
    cuda_devices: tuple[int, ...] = ()  # the slot's GPUs (`pool.slot_gpus`); () on a machine without


def run_child(spec: RunSpec, conn: Connection) -> None:
    """Process entry point (multiprocessing: forked from the supervisor's forkserver)."""
    die_with_parent()
    if spec.cuda_devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(spec.cuda_devices, spec.settings.get("distributed") or {})
    stop = threading.Event()
    threading.Thread(target=_listen_for_stop, args=(conn, stop), daemon=True).start()
    conn.send(_train(spec, stop, conn))
    conn.close()


def visible_devices(slot_gpus: tuple[int, ...], distributed: dict[str, Any]) -> str:
    """CUDA_VISIBLE_DEVICES for a run on a slot: one of the slot's GPUs per process, never another slot's.

    The indices count the GPUs this worker sees, so under a CUDA_VISIBLE_DEVICES of its own they pick
    from that list (index 0 of "2,3" is GPU 2). A run with more processes than the slot has GPUs gets
    them all, and `train.launch.check_this_machine` refuses it naming both counts.
    """
    from tuneloom.templates.settings_distributed import processes_per_machine

    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in inherited.split(",")] if inherited else None
    mine = slot_gpus[: processes_per_machine(distributed)]
    return ",".join(names[i] if names else str(i) for i in mine)


def _train(spec: RunSpec, stop: threading.Event, conn: Connection) -> tuple[str, dict[str, Any]]:
    from tuneloom.errors import DataFileError, SettingsError, ToleranceExceededError, TuneloomError
    from tuneloom.train.disk_full import DiskFullError
    from tuneloom.train.launch import train
    from tuneloom.train.recipe import TrainingInterrupted, TrainJob

    def send_event(event: Any) -> None:
        conn.send(("event", dataclasses.asdict(event)))

    job = TrainJob(
        data=Path(spec.data),
        output=Path(spec.output),
        template=spec.template,
        settings=spec.settings,
        data_format="jsonl",
        resume=True,
        overwrite=True,
        workdir=Path(spec.workdir),
        start_from=Path(spec.start_from) if spec.start_from else None,
        checkpoint_every_s=spec.checkpoint_every_s,
    )
    try:
        train(job, on_event=send_event, stop=stop)  # in this process, or its ranks through accelerate launch
    except TrainingInterrupted:
        return "stopped", {}
    except (ToleranceExceededError, DataFileError) as err:  # the snapshot parsed at upload; rows fail tokenization
        return "error", {"status": "MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED", "message": err.message}
    except SettingsError as err:
        return "error", {"status": "MODEL_TRAINING_INVALID_PARAMS", "message": err.message}
    except DiskFullError as err:  # its code leads, so a job's message says DISK_FULL as the CLI does
        return "error", {"status": "MODEL_TRAINING_FAILED", "message": f"{err.code}: {err.message}"}
    except TuneloomError as err:
        return "error", {"status": "MODEL_TRAINING_FAILED", "message": err.message}
    except Exception as err:  # anything else is a bug or the machine: say what, keep the trace for the logs
        message = f"training failed: {type(err).__name__}: {err}"
        return "error", {"status": "MODEL_TRAINING_FAILED", "message": message, "trace": traceback.format_exc()}
    return "done", {}


def _listen_for_stop(conn: Connection, stop: threading.Event) -> None:
    """Honour "stop"; when the supervisor's end closes (the worker died), die at once.

    The child's parent is the forkserver, which can outlive a SIGKILLed worker by many seconds, so
    the parent-death signal alone would let an orphan train on while another worker takes the job over.
    """
    try:
        while True:
            if conn.recv() == "stop":
                stop.set()
    except (EOFError, OSError):
        os.kill(os.getpid(), signal.SIGKILL)  # its ranks (a multi-process run) follow by parent-death signal
