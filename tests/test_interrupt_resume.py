"""Stopping a run (Ctrl-C in the CLI, cancel in the server) leaves a checkpoint that resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from tests.conftest import sentiment_lines
from tests.process_helpers import interrupt_training

from tuneloom.cli import main
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

    record = tmp_path / "version.partial" / "run.json"
    assert json.loads(record.read_text())["settings"]["trainer_config"]["num_train_epochs"] == 2

    # Settings that change the schedule: refused by name before the model loads, checkpoint kept.
    shorter = {"trainer_config": {**SETTINGS["trainer_config"], "max_steps": 2}}
    with pytest.raises(SettingsError, match=r"trainer_config\.max_steps was \(not set\), now 2") as refused:
        run_training(TrainJob(data=sentiment_file, output=out, template="tiny-random", settings=shorter, resume=True))
    assert (
        refused.value.key == "trainer_config.max_steps" and "--overwrite instead of --resume" in refused.value.message
    )
    assert not out.exists() and (tmp_path / "version.partial" / "checkpoints" / "checkpoint-3").is_dir()

    # A work dir from before run records resumes unchecked, as it did; a checkpoint past the new end is still refused.
    record.rename(record.with_name("kept.json"))
    with pytest.raises(SettingsError, match=r"checkpoint is at step 3, past the 2 steps") as refused:
        run_training(TrainJob(data=sentiment_file, output=out, template="tiny-random", settings=shorter, resume=True))
    assert refused.value.key == "trainer_config.num_train_epochs"
    record.with_name("kept.json").rename(record)

    # Other data (and a validation file the run had not had): refused, naming each file, before the model loads.
    other = tmp_path / "other.txt"
    other.write_text("\n".join(sentiment_lines(2)) + "\n", encoding="utf-8")
    mixed = TrainJob(data=other, output=out, template="tiny-random", settings=SETTINGS, resume=True, validation=other)
    with pytest.raises(SettingsError) as refused:
        run_training(mixed)
    assert f"the training data changed (file {other}; the run started with {sentiment_file})" in refused.value.message
    assert f"the validation data changed (file {other}; the run started with none)" in refused.value.message
    assert refused.value.key == "data"

    # The same data under another name, settings that only change when checkpoints are saved, and a setting now
    # given at the value the run had by leaving it out: it resumes.
    copy = tmp_path / "copy.txt"
    copy.write_bytes(sentiment_file.read_bytes())
    cadence = {**SETTINGS["trainer_config"], "save_steps": 500, "max_grad_norm": 1.0}
    harmless = {"trainer_config": cadence, "invalid_data_tolerance_percent": 9}
    job = TrainJob(data=copy, output=out, template="tiny-random", settings=harmless, resume=True)
    steps: list[int] = []
    outcome = run_training(job, on_event=lambda e: steps.append(e.step) if e.kind == "step" else None)
    assert steps[0] == 4  # continued where it stopped, not from scratch
    total = outcome.metrics["steps"]
    assert steps[-1] == total
    assert json.loads((out / "tuneloom.json").read_text())["template"] == "tiny-random"
    # The version's loss is the whole run's (the Trainer's own covers only the steps after the resume).
    losses = [point["loss"] for point in outcome.metrics["loss_curve"]]
    assert len(losses) == total and outcome.metrics["train_loss"] == pytest.approx(sum(losses) / total)


def test_a_fresh_start_over_a_checkpoint_needs_overwrite_and_then_replaces_it(
    sentiment_file: Path, tmp_path: Path
) -> None:
    """Trained without --resume over an interrupted run, the old checkpoint stayed beside the new run's, and a
    later --resume took the higher-numbered one (the other run's) under the new run's settings. Now a fresh start
    over a checkpoint is refused unless --overwrite says to discard it (nothing trained is dropped unasked)."""
    workdir = tmp_path / "version.partial"
    earlier = workdir / "checkpoints" / "checkpoint-99"
    earlier.mkdir(parents=True)
    (earlier / "trainer_state.json").write_text("{}", encoding="utf-8")
    (workdir / "run.json").write_text(json.dumps({"record_format": 1, "template": "tiny-random"}), encoding="utf-8")
    stop = threading.Event()
    job = TrainJob(data=sentiment_file, output=tmp_path / "version", template="tiny-random", settings=SETTINGS)
    with pytest.raises(SettingsError, match="holds checkpoint-99 of an interrupted run: pass --resume") as refused:
        run_training(job)
    assert refused.value.key == "resume" and earlier.is_dir()
    job = dataclasses.replace(job, overwrite=True)
    with pytest.raises(TrainingInterrupted):
        run_training(job, on_event=lambda e: stop.set() if e.kind == "step" else None, stop=stop)
    assert [c.name for c in (workdir / "checkpoints").iterdir()] == ["checkpoint-1"]
    assert json.loads((workdir / "run.json").read_text())["settings"]["trainer_config"]["num_train_epochs"] == 2


def test_ctrl_c_in_the_cli_leaves_a_resumable_checkpoint(
    sentiment_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real SIGINT to a real `tuneloom train`: clean stop, checkpoint; `--resume` with another schedule is
    refused by name (it trained on, recording settings its first steps never followed), the same one continues."""
    out = tmp_path / "version"
    base = ["train", str(sentiment_file), "--template", "tiny-random", "--output", str(out)]
    returncode, err = interrupt_training(base, run_for_s=3, timeout=120)
    assert returncode == 1, err
    assert "TRAINING_INTERRUPTED" in err and "--resume" in err and "Traceback" not in err
    (checkpoint,) = (tmp_path / "version.partial" / "checkpoints").glob("checkpoint-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert stopped_at > 0 and not out.exists()

    cut_short = main([*base, "--resume", "--trainer-config", json.dumps({"max_steps": stopped_at + 2})])
    message = " ".join(capsys.readouterr().err.split())  # as one line, however the terminal wrapped it
    assert cut_short == 1 and "Traceback" not in message
    assert f"trainer_config.max_steps was 100000, now {stopped_at + 2}" in message, message
    assert "Resume with the settings and data it started with" in message and not out.exists()

    returncode, err = interrupt_training([*base, "--resume"], run_for_s=1, timeout=120)
    assert returncode == 1 and "TRAINING_INTERRUPTED" in err, err
    resumed_to = max(int(c.name.split("-")[1]) for c in checkpoint.parent.glob("checkpoint-*"))
    assert resumed_to > stopped_at
