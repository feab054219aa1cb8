"""The Trainer a run uses: transformers' own, less the host work and the waits it repeats every step for nothing.

- **FLOPs.** Its estimate (`state.total_flos`) counts the model's parameters again at every step: a walk
  over every module and every parameter, 2.9 ms a step for a Llama-1.1B-shaped LoRA model on this
  project's CPU, where a compiled step on an H200 takes about 100 ms and the host is what bounds it.
  The count cannot change during a run, so it is taken once.
- **Logging.** With `logging_steps: 1` (the templates' setting, for a loss point a step) the Trainer
  reads the loss and the gradient norm back from the device after every step (`.item()`), and its
  `logging_nan_inf_filter` asks the device whether the loss is finite before adding it up: four times
  a step the host stops until the card has caught up, and cannot queue the next step while the card
  runs this one. Here each logging window's loss stays on the device and the windows are read back
  together, one wait, at most once a second (`LOG_READ_EVERY_S`) and always before an evaluation, a
  checkpoint, the end of an epoch or of the run; the filter runs on the device. What is logged — each
  window's loss, gradient norm, learning rate, epoch and step, through every callback's `on_log`, in
  order — is what the Trainer logs, up to a second later.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import nested_gather

LOG_READ_EVERY_S = 1.0


@dataclasses.dataclass(frozen=True)
class LogWindow:
    """One logging window's figures as the Trainer has them when it would log: the loss still on the device."""

    step: int
    epoch: float
    input_tokens_seen: int
    steps: int
    loss_sum: torch.Tensor
    grad_norm: torch.Tensor | float | None
    learning_rate: float


class RunTrainer(Trainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._nan_inf_filter = self.args.logging_nan_inf_filter
        if self._nan_inf_filter:  # the Trainer's own filter asks the device every step; training_step applies it
            self.args = copy.copy(self.args)  # the caller's arguments stay as given
            self.args.logging_nan_inf_filter = False
        self._windows: list[LogWindow] = []
        self._read_at = float("-inf")  # the first window is read at once: a loss on screen after one step
        self._last_call_step = -1

    @functools.cached_property
    def _parameters_without_embeddings(self) -> int:
        model: Any = self.model  # a PreTrainedModel (or a peft model around one): floating_point_ops checked
        return int(model.num_parameters(exclude_embeddings=True))

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """`Trainer.floating_point_ops` (6 × tokens × parameters), with the parameters counted once."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        return 6 * inputs[main_input].numel() * self._parameters_without_embeddings

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """The batch's loss, and with `logging_nan_inf_filter` a non-finite one replaced as the Trainer does
        (by the window's mean so far), without asking the host to look."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not self._nan_inf_filter:
            return loss
        mean_so_far = self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
        return torch.where(torch.isfinite(loss), loss, mean_so_far)

    def _maybe_log_save_evaluate(
        self,
        tr_loss: torch.Tensor,
        grad_norm: Any,
        model: Any,
        trial: Any,
        epoch: float,
        ignore_keys_for_eval: list[str] | None,
        start_time: float,
        learning_rate: float | None = None,
    ) -> None:
        """Called after every optimizer step, and once more at the end of each epoch (same step)."""
        epoch_end = self.state.global_step == self._last_call_step
        self._last_call_step = self.state.global_step
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            self._windows.append(self._close_window(tr_loss, grad_norm, learning_rate))
            self.control.should_log = False  # logged here, not by the Trainer
        if self._windows and (epoch_end or self._read_due()):
            self._log_windows(start_time)
        super()._maybe_log_save_evaluate(
            tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time, learning_rate=learning_rate
        )

    def _close_window(self, tr_loss: torch.Tensor, grad_norm: Any, learning_rate: float | None) -> LogWindow:
        window = LogWindow(
            step=self.state.global_step,
            epoch=self.state.epoch,
            input_tokens_seen=self.state.num_input_tokens_seen,
            steps=self.state.global_step - self._globalstep_last_logged,
            loss_sum=tr_loss.detach().clone(),
            grad_norm=grad_norm.detach() if isinstance(grad_norm, torch.Tensor) else grad_norm,
            learning_rate=learning_rate if learning_rate is not None else self._get_learning_rate(),
        )
        tr_loss -= tr_loss  # on the device, as the Trainer resets it
        self._globalstep_last_logged = self.state.global_step
        return window

    def _read_due(self) -> bool:
        """Every rank must read at the same steps (the read gathers the loss across ranks), so several
        ranks read at every window, as the Trainer does; one reads when the figures are needed or a second
        has passed."""
        control = self.control
        return (
            self.args.world_size > 1
            or control.should_evaluate
            or control.should_save
            or control.should_training_stop
            or time.monotonic() - self._read_at >= LOG_READ_EVERY_S
        )

    def _log_windows(self, start_time: float | None) -> None:
        windows, self._windows = self._windows, []
        gathered = nested_gather(torch.stack([w.loss_sum for w in windows]), self.args.parallel_mode)
        figures = [gathered.reshape(-1, len(windows)).mean(0)]
        norms = [w.grad_norm for w in windows if isinstance(w.grad_norm, torch.Tensor)]
        if norms:
            figures.append(torch.stack(norms).to(figures[0]))
        read = torch.cat(figures).tolist()  # the one wait for the device
        loss_sums, read_norms = read[: len(windows)], iter(read[len(windows) :])
        self.store_flos()
        for window, loss_sum in zip(windows, loss_sums, strict=True):
            self._total_loss_scalar += loss_sum
            logs: dict[str, float] = {"loss": loss_sum / window.steps}
            if window.grad_norm is not None:
                logs["grad_norm"] = next(read_norms) if isinstance(window.grad_norm, torch.Tensor) else window.grad_norm
            logs["learning_rate"] = window.learning_rate
            with self._state_at(window):
                self.log(logs, start_time)
        self._read_at = time.monotonic()

    @contextlib.contextmanager
    def _state_at(self, window: LogWindow) -> Iterator[None]:
        """The state as it was when the window closed, for `log` and the callbacks it calls."""
        state = self.state
        now = (state.global_step, state.epoch, state.num_input_tokens_seen)
        state.global_step, state.epoch, state.num_input_tokens_seen = (
            window.step,
            window.epoch,
            window.input_tokens_seen,
        )
        try:
            yield
        finally:
            state.global_step, state.epoch, state.num_input_tokens_seen = now
