"""Beyond one worker: several `tuneloom worker` processes on one PostgreSQL queue, and multi-process runs.

Minutes of real training, so behind the `soak` marker (`make soak`):
- two workers drain six jobs; one is SIGKILLed mid-job, its job goes to the other once the lease
  runs out; no job runs twice, none is lost;
- a worker trains a two-process DDP run (progress, metrics, a normal model version) and cancels
  another one, leaving no rank behind;
- Ctrl-C on `tuneloom train --num-processes 2` checkpoints every rank; `--resume` continues (with the
  settings it started with: a changed schedule is refused).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.process_helpers import (
    Processes,
    alive,
    descendants,
    interrupt_training,
    log_messages,
    prepare_model,
    running_processes,
    state,
    wait_for,
)
from tests.test_store_support import POSTGRES_URL

from tuneloom.model_version import open_version

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not POSTGRES_URL, reason="TUNELOOM_TEST_POSTGRES_URL unset"),
]
ATTEMPT = re.compile(r"^attempt (\d+) of \d+ on worker [^:]+:(\d+):\d+")
DDP = {"strategy": "ddp", "num_processes": 2}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    with running_processes(tmp_path, "postgresql") as procs:
        yield procs


def submit(model: str, headers: dict[str, str], dataset_version: str, steps: int, **extra: object) -> str:
    trainer_config = {"max_steps": steps, "per_device_train_batch_size": 2}
    body = {"dataset_version_id": dataset_version, "template": "tiny-random", "trainer_config": trainer_config}
    answer = httpx.post(f"{model}/versions", json={**body, **extra}, headers=headers, timeout=60)
    assert answer.status_code == 201, answer.text
    return f"{model}/versions/{answer.json()['id']}"


def attempts_by_worker(run: str, headers: dict[str, str]) -> list[int]:
    """The pid of the worker behind each attempt the run's log records, in order."""
    return [int(m.group(2)) for line in log_messages(run, headers) if (m := ATTEMPT.match(line))]


def test_two_workers_drain_a_queue_with_one_killed_mid_job(processes: Processes) -> None:
    _, url = processes.serve("--workers", "0")
    model, headers, dataset_version = prepare_model(url, processes.data_dir)
    runs = [submit(model, headers, dataset_version, steps=100) for _ in range(6)]
    worker_args = ("--lease-seconds", "4", "--checkpoint-every", "1")
    doomed, survivor = processes.start("worker", *worker_args), processes.start("worker", *worker_args)

    def doomed_job_in_progress() -> str | None:
        """A run the first worker is mid-way through, once it has finished another one."""
        states = {run: state(run, headers) for run in runs}
        trained = [run for run, s in states.items() if s["status"]["name"] == "MODEL_TRAINED"]
        if not any(attempts_by_worker(run, headers)[-1:] == [doomed.pid] for run in trained):
            return None
        for run, s in states.items():
            busy = s["status"]["name"] == "MODEL_TRAINING" and (s["progress"]["step"] or 0) >= 5
            if busy and attempts_by_worker(run, headers)[-1:] == [doomed.pid]:
                return run
        return None

    victim = wait_for(doomed_job_in_progress, "the first worker to be mid-job", timeout=240)
    trainers = descendants(doomed.pid)  # its forkserver and the training process forked from it
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    training = {p for p in trainers if b"forkserver" not in Path(f"/proc/{p}/cmdline").read_bytes()}
    assert training  # the run the worker was supervising
    wait_for(lambda: not any(alive(p) for p in training), "the killed worker's training process to die", timeout=15)

    finals = {run: wait_for(lambda run=run: _final(run, headers), f"{run} to finish", timeout=420) for run in runs}
    by_worker = {run: attempts_by_worker(run, headers) for run in runs}
    assert all(s["status"]["name"] == "MODEL_TRAINED" for s in finals.values()), finals  # none lost
    assert by_worker[victim] == [doomed.pid, survivor.pid]  # picked up by the other after the lease ran out
    assert finals[victim]["attempts"] == 2
    others = [run for run in runs if run != victim]
    assert all(len(by_worker[run]) == 1 and finals[run]["attempts"] == 1 for run in others)  # none ran twice
    assert [s["progress"]["total_steps"] for s in finals.values()] == [100] * 6, finals
    counts = Counter(pids[-1] for pids in by_worker.values())
    print(f"\nqueue drain: 6 jobs, {counts[doomed.pid]} finished by the killed worker, "
          f"{counts[survivor.pid]} by the survivor, 1 taken over, 0 run twice, 0 lost")  # fmt: skip


def _is_rank(pid: int) -> bool:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return b"tuneloom.train.rank" in args and b"accelerate.commands.launch" not in args


def _final(run: str, headers: dict[str, str]) -> dict[str, object] | None:
    s = state(run, headers)
    return s if s["status"]["name"] not in ("MODEL_TRAINING", "MODEL_QUEUED_FOR_TRAINING") else None


def test_a_worker_trains_and_cancels_two_process_runs(processes: Processes) -> None:
    _, url = processes.serve("--workers", "0")
    model, headers, dataset_version = prepare_model(url, processes.data_dir)
    worker = processes.start("worker", "--lease-seconds", "30")
    run = submit(model, headers, dataset_version, steps=20, distributed=DDP)
    done = wait_for(lambda: _final(run, headers), "the two-process run to finish", timeout=300)
    assert done["status"]["name"] == "MODEL_TRAINED", done  # type: ignore[index]
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 20  # type: ignore[index]
    points = httpx.get(f"{run}/metrics", headers=headers).json()
    assert [p["step"] for p in points if p["loss"] is not None] == list(range(1, 21))  # rank 0's, once each
    version = open_version(processes.data_dir / "model-versions" / run.rsplit("/", 1)[-1])
    assert version.manifest["distributed"] == {"strategy": "ddp", "processes": 2, "sharded": False}

    long_run = submit(model, headers, dataset_version, steps=100000, distributed=DDP)
    wait_for(lambda: (state(long_run, headers)["progress"]["step"] or 0) >= 3, "the long run to make progress")
    ranks = descendants(worker.pid)
    assert len([p for p in ranks if _is_rank(p)]) == 2
    assert httpx.post(f"{long_run}/cancel", headers=headers).status_code == 200
    cancelled = wait_for(lambda: _final(long_run, headers), "the cancel to land", timeout=60)
    assert cancelled["status"]["name"] == "MODEL_TRAINING_CANCELLED"  # type: ignore[index]
    wait_for(lambda: not any(alive(p) for p in ranks - descendants(worker.pid)), "every rank to die", timeout=20)
    assert worker.poll() is None  # the worker itself carries on


def test_ctrl_c_stops_every_rank_at_a_checkpoint_and_resume_continues(sentiment_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "version"
    base = ["train", str(sentiment_file), "--template", "tiny-random", "--output", str(out), "--num-processes", "2"]
    returncode, err = interrupt_training(base, run_for_s=5, timeout=180)
    assert returncode == 1, err[-3000:]
    assert "TRAINING_INTERRUPTED" in err and "--resume" in err
    (checkpoint,) = (tmp_path / "version.partial" / "checkpoints").glob("checkpoint-*")
    assert len(list(checkpoint.glob("rng_state_*.pth"))) == 2  # both ranks saved their state
    stopped_at = int(checkpoint.name.split("-")[1])

    cut_short = run_cli(*base, "--resume", "--trainer-config", json.dumps({"max_steps": stopped_at + 2}))
    assert cut_short.returncode == 1 and "trainer_config.max_steps" in cut_short.stderr, cut_short.stderr[-3000:]
    returncode, err = interrupt_training([*base, "--resume"], run_for_s=5, timeout=180)
    assert returncode == 1 and "TRAINING_INTERRUPTED" in err, err[-3000:]
    assert max(int(c.name.split("-")[1]) for c in checkpoint.parent.glob("checkpoint-*")) > stopped_at
