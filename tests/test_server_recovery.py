"""The queue survives what happens to real servers: a worker killed with SIGKILL, a server restarted mid-queue.

Each test runs its own `tuneloom serve` / `tuneloom worker` processes on SQLite and on PostgreSQL
(the SIGKILL case on PostgreSQL under `make soak`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.process_helpers import (
    Processes,
    alive,
    descendants,
    ended,
    log_messages,
    prepare_model,
    queue,
    running_processes,
    state,
    wait_for,
)
from tests.test_store_support import BACKENDS


@pytest.fixture(params=BACKENDS)
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    with running_processes(tmp_path, request.param) as procs:
        yield procs


# PostgreSQL under `make soak` only: a worker SIGKILLed there is the soak queue-drain test's case too
# (tests/test_worker_pool.py), and the default run keeps PostgreSQL's server restart below.
@pytest.mark.parametrize("processes", ["sqlite", pytest.param("postgresql", marks=pytest.mark.soak)], indirect=True)
def test_a_worker_killed_with_sigkill_resumes_from_its_checkpoint_and_finishes(processes: Processes) -> None:
    _, url = processes.serve("--workers", "0")
    model, headers, dataset_version = prepare_model(url, processes.data_dir)
    worker = processes.start("worker", "--lease-seconds", "4", "--checkpoint-every", "1")
    run = f"{model}/versions/{queue(model, headers, dataset_version)}"
    checkpoints = processes.data_dir / "checkpoints" / run.rsplit("/", 1)[-1] / "checkpoints"
    wait_for(lambda: list(checkpoints.glob("checkpoint-*/trainer_state.json")), "a complete checkpoint")
    trainers = descendants(worker.pid)
    assert trainers  # the forkserver and the training process it forked
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: not any(alive(p) for p in trainers), "the orphaned training process to die", timeout=10)
    assert state(run, headers)["status"]["name"] == "MODEL_TRAINING"  # its lease has not run out yet

    processes.start("worker", "--lease-seconds", "4", "--checkpoint-every", "1")
    done = ended(run, headers)  # through MODEL_QUEUED_FOR_TRAINING (the lease ran out) to the end
    assert done["status"]["code"] == 21100, done["status"]
    steps = [p["step"] for p in httpx.get(f"{run}/metrics", headers=headers).json() if p["loss"] is not None]
    assert done["attempts"] == 2 and done["progress"]["step"] == done["progress"]["total_steps"] == 300, steps
    messages = log_messages(run, headers)
    resumed = [m for m in messages if m.startswith("attempt 2 of 3")]
    assert resumed and "resuming from checkpoint-" in resumed[0], messages
    assert int(resumed[0].rsplit("checkpoint-", 1)[1]) > 0  # not from scratch


def test_a_server_restart_mid_queue_loses_no_job(processes: Processes) -> None:
    server, url = processes.serve("--workers", "1")
    model, headers, dataset_version = prepare_model(url, processes.data_dir)
    runs = [queue(model, headers, dataset_version, steps) for steps in (400, 10, 10)]
    first = f"{model}/versions/{runs[0]}"
    wait_for(lambda: (state(first, headers)["progress"]["step"] or 0) >= 5, "the first run to make progress")
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=150) == 0

    _, url = processes.serve("--workers", "1")
    model = model.replace(model.split("/api/")[0], url)
    finals = {
        run: wait_for(
            lambda run=run: (s := state(f"{model}/versions/{run}", headers))["status"]["code"] == 21100 and s,
            f"{run} to be trained",
            timeout=240,
        )
        for run in runs
    }
    assert [finals[run]["progress"]["step"] for run in runs] == [400, 10, 10]
    messages = log_messages(f"{model}/versions/{runs[0]}", headers)
    shut_down = messages.index("worker shut down; the run resumes from its checkpoint")
    assert "resuming from checkpoint-" in messages[shut_down + 1], messages[shut_down:]
