"""Stopping a run (Ctrl-C in the CLI, cancel in the server) leaves a checkpoint that resumes exactly."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.process_helpers import interrupt_training

from tuneloom.errors import SettingsError
from tuneloom.train.events import TrainEvent
from tuneloom.train.recipe import TrainingInterrupted, TrainJob, run_training

SETTINGS = {"trainer_config": {"num_train_epochs": 2, "per_device_train_batch_size": 4, "save_steps": 1000}}


def test_stop_checkpoints_and_resume_finishes(sentiment_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "version"
    job = TrainJob(data=sentiment_file, output=out, template="tiny-random", settings=SETTINGS)
    stop = threading.Event()

    def stop_at_step_3(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 3:
            stop.set()

    with pytest.raises(TrainingInterrupted, match="--resume"):
        run_training(job, on_event=stop_at_step_3, stop=stop)
    assert not out.exists()  # nothing that looks like a finished version
    checkpoints = list((tmp_path / "version.partial" / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-3"]

    # Settings that end before the checkpoint: refused (it trained no step and wrote a loss of 0), checkpoint kept.
    shorter = {"trainer_config": {**SETTINGS["trainer_config"], "max_steps": 2}}
    with pytest.raises(SettingsError, match=r"checkpoint is at step 3, past the 2 steps") as refused:
        run_training(TrainJob(data=sentiment_file, output=out, template="tiny-random", settings=shorter, resume=True))
    assert refused.value.key == "trainer_config.num_train_epochs"
    assert not out.exists() and (tmp_path / "version.partial" / "checkpoints" / "checkpoint-3").is_dir()

    steps: list[int] = []
    job.resume = True
    outcome = run_training(job, on_event=lambda e: steps.append(e.step) if e.kind == "step" else None)
    assert steps[0] == 4  # continued where it stopped, not from scratch
    total = outcome.metrics["steps"]
    assert steps[-1] == total
    assert json.loads((out / "tuneloom.json").read_text())["template"] == "tiny-random"
    # The version's loss is the whole run's (the Trainer's own covers only the steps after the resume).
    losses = [point["loss"] for point in outcome.metrics["loss_curve"]]
    assert len(losses) == total and outcome.metrics["train_loss"] == pytest.approx(sum(losses) / total)


def test_ctrl_c_in_the_cli_leaves_a_resumable_checkpoint(sentiment_file: Path, tmp_path: Path) -> None:
    """A real SIGINT to a real `tuneloom train`: clean stop, checkpoint, then `--resume` finishes."""
    out = tmp_path / "version"
    base = ["train", str(sentiment_file), "--template", "tiny-random", "--output", str(out)]
    returncode, err = interrupt_training(base, run_for_s=3, timeout=120)
    assert returncode == 1, err
    assert "TRAINING_INTERRUPTED" in err and "--resume" in err and "Traceback" not in err
    (checkpoint,) = (tmp_path / "version.partial" / "checkpoints").glob("checkpoint-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert stopped_at > 0 and not out.exists()

    resumed = run_cli(*base, "--resume", "--trainer-config", json.dumps({"max_steps": stopped_at + 2}), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["metrics"]["steps"] == stopped_at + 2
