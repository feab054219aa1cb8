"""What a training run tells its caller while it runs, as plain data (the CLI draws bars, the server stores rows)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tuneloom.errors import SettingsError


@dataclass(frozen=True)
class TrainEvent:
    kind: str  # "stage" | "step" | "log" | "eval"
    message: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None


EventSink = Callable[[TrainEvent], None]


def ignore_events(_: TrainEvent) -> None:
    """The default sink: a library call prints nothing."""


class ProgressReporter(TrainerCallback):
    """Forward the Trainer's steps and logs as TrainEvents, with an ETA from this run's own pace."""

    def __init__(self, sink: EventSink):
        self.sink = sink
        self.started = time.monotonic()
        self.first_step: int | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.started = time.monotonic()
        self.first_step = state.global_step

    def _timing(self, state: TrainerState) -> tuple[float, float | None]:
        elapsed = time.monotonic() - self.started
        done = state.global_step - (self.first_step or 0)
        if done <= 0:
            return elapsed, None
        return elapsed, elapsed / done * max(state.max_steps - state.global_step, 0)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        elapsed, eta = self._timing(state)
        self.sink(
            TrainEvent(
                "step",
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=state.epoch,
                elapsed_s=elapsed,
                eta_s=eta,
            )
        )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        logs = logs or {}
        elapsed, eta = self._timing(state)
        kind = "eval" if "eval_loss" in logs else "log"
        if "loss" not in logs and kind == "log":
            return
        self.sink(
            TrainEvent(
                kind,
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=state.epoch,
                loss=logs.get("loss"),
                eval_loss=logs.get("eval_loss"),
                learning_rate=logs.get("learning_rate"),
                elapsed_s=elapsed,
                eta_s=eta,
            )
        )


class StopOnRequest(TrainerCallback):
    """Ctrl-C in the CLI or cancel in the server sets the event; the run checkpoints and stops cleanly."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if any_rank(self.stop.is_set()):
            control.should_save = True
            control.should_training_stop = True


class CheckpointEvery(TrainerCallback):
    """Save a checkpoint at least every `seconds`, whatever `save_steps` says.

    A worker can die at any moment; with this, a resumed run repeats minutes of work, not hours.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if any_rank(time.monotonic() - self.last >= self.seconds):
            control.should_save = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.last = time.monotonic()


class ResumePoint(TrainerCallback):
    """Where this call of `train()` started: step 0, or the step and epoch of the checkpoint it resumed.

    A checkpoint past the end the settings now give (fewer epochs than the interrupted run had) is
    refused: the Trainer would train no step and report a loss of 0 and millions of tokens/s.
    """

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0.0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.step, self.epoch = state.global_step, float(state.epoch or 0.0)
        if state.global_step > state.max_steps:
            raise SettingsError(
                f"--resume: the checkpoint is at step {state.global_step}, past the {state.max_steps} steps these "
                "settings train; raise trainer_config.num_train_epochs (or max_steps) to continue that run, "
                "or train without --resume",
                key="trainer_config.num_train_epochs",
            )


def any_rank(flag: bool) -> bool:
    """True when any process of a distributed run says True; in a one-process run, `flag` itself.

    Saving and stopping are collective: if one rank decided alone, the others would wait forever in
    the next gradient all-reduce. One tiny all-reduce per step keeps every rank on the same branch.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    on_cpu = "gloo" in str(dist.get_backend())
    device = torch.device("cpu") if on_cpu else torch.device("cuda", torch.cuda.current_device())
    votes = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())
