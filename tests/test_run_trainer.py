"""The run's Trainer logs what transformers' Trainer logs, without stopping the host for it every step.

Each logging case trains the same tiny model twice from the same weights, seed and batches — once with
`transformers.Trainer`, once with `RunTrainer` — and compares everything logged: each window's loss,
gradient norm, learning rate, epoch and step, the evaluations between them, and the run's mean loss.
The last cases check what else the run gives the Trainer: batches copied to a GPU without a wait, and
on a CPU that computes bfloat16, the line saying how to train faster.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from bench.step_ops import CountOps, count_forwards
from tests.test_packing import _features
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

import tuneloom.train.trainer as run_trainer
from tuneloom.templates.sources import resolve_model_dir
from tuneloom.train.packing import PackedCollator, packed_causal_lm_loss
from tuneloom.train.trainer import RunTrainer

TRAIN = _features([17, 5, 30, 12, 9, 22, 14, 8, 25, 11, 6, 19], seed=1)
HELD_OUT = _features([10, 16, 7], seed=2)


class WhenLogged(TrainerCallback):
    """Each training-loss `on_log` as (the step it reports, how many steps had ended when it came)."""

    def __init__(self) -> None:
        self.ended = 0
        self.calls: list[tuple[int, int]] = []

    def on_step_end(self, *_: Any, **__: Any) -> None:
        self.ended += 1

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        if logs and "loss" in logs:
            self.calls.append((state.global_step, self.ended))


class NanAt:
    """The packed loss, whose value is NaN at the given calls and whose gradient is unchanged (a constant added)."""

    def __init__(self, calls: set[int]):
        self.calls, self.seen = calls, 0

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = packed_causal_lm_loss(outputs, labels, num_items_in_batch)
        self.seen += 1
        return loss + torch.tensor(math.nan) if self.seen in self.calls else loss


def _train(
    kind: type[Trainer], tmp_path: Path, *, nan_at: set[int] = frozenset(), **settings: Any
) -> tuple[Trainer, WhenLogged, CountOps]:
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir("tuneloom/tiny-random"))
    args = TrainingArguments(
        output_dir=str(tmp_path / kind.__name__),
        report_to="none",
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        save_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=7,
        **{"logging_steps": 1, "num_train_epochs": 1, **settings},
    )
    when = WhenLogged()
    trainer = kind(
        model=model,
        args=args,
        train_dataset=TRAIN,
        eval_dataset=HELD_OUT,
        data_collator=PackedCollator(pad_token_id=0),
        compute_loss_func=NanAt(set(nan_at)),
        callbacks=[when],
    )
    ops = CountOps()
    hooks = count_forwards(model, ops)
    with ops:
        trainer.train()
    for hook in hooks:
        hook.remove()
    return trainer, when, ops


def _same_figures(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [sorted(g) for g in got] == [sorted(w) for w in want]
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(g[key]), key
            elif key.endswith("_per_second") or key.endswith("_runtime"):
                continue  # the evaluation's own timing
            else:
                assert g[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, g, w)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"logging_steps": 2, "gradient_accumulation_steps": 2, "eval_strategy": "steps", "eval_steps": 1},
        {"logging_steps": 3, "eval_strategy": "steps", "eval_steps": 2, "num_train_epochs": 2},
    ],
    ids=["every-step", "accumulated-windows-with-evaluations", "windows-across-epochs"],
)
def test_it_logs_what_the_trainer_logs(tmp_path: Path, settings: dict[str, Any]) -> None:
    want, _, _ = _train(Trainer, tmp_path, **settings)
    got, _, _ = _train(RunTrainer, tmp_path, **settings)
    _same_figures(got.state.log_history, want.state.log_history)
    assert any("loss" in entry for entry in got.state.log_history)


@pytest.mark.parametrize("nan_inf_filter", [True, False])
def test_a_non_finite_loss_is_filtered_or_shown_as_the_trainer_does(tmp_path: Path, nan_inf_filter: bool) -> None:
    """With the filter (transformers' default) the window's mean so far stands in for a NaN step; without, NaN shows."""
    settings = {"logging_steps": 2, "logging_nan_inf_filter": nan_inf_filter}
    want, _, _ = _train(Trainer, tmp_path, nan_at={4}, **settings)
    got, _, _ = _train(RunTrainer, tmp_path, nan_at={4}, **settings)
    _same_figures(got.state.log_history, want.state.log_history)
    losses = [entry["loss"] for entry in got.state.log_history if "loss" in entry]
    assert any(math.isnan(loss) for loss in losses) is not nan_inf_filter
    assert got.args.logging_nan_inf_filter is False  # applied on the device, not by the Trainer's per-step check


def test_the_host_waits_once_per_read_not_four_times_a_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Trainer logging every step reads the loss and the gradient norm and checks the loss is finite:
    four waits for the device a step. Read back only when needed, a run waits a fixed few times: each
    read (one `.tolist()`, a copy to the host that the dispatcher does not show as a wait, so counted
    apart) and the two the Trainer keeps (the mean loss at the end, the data loader's end of epoch)."""
    _, _, trainer_ops = _train(Trainer, tmp_path)
    monkeypatch.setattr(run_trainer, "LOG_READ_EVERY_S", math.inf)
    reads = []
    log_windows = RunTrainer._log_windows
    monkeypatch.setattr(RunTrainer, "_log_windows", lambda self, *a: reads.append(1) or log_windows(self, *a))
    run, when, ops = _train(RunTrainer, tmp_path)
    steps = run.state.global_step
    assert steps == 6 and trainer_ops.outside_waits >= 4 * steps
    assert ops.outside_waits <= 2, ops.waits
    # One read after the first step (a loss on screen at once), one at the end.
    assert len(reads) == 2
    assert when.calls[0] == (1, 1) and when.calls[1:] == [(step, steps) for step in range(2, steps + 1)]


def test_windows_are_logged_as_their_steps_end_when_reads_are_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_trainer, "LOG_READ_EVERY_S", 0.0)
    _, when, _ = _train(RunTrainer, tmp_path)
    assert when.calls == [(step, step) for step in range(1, 7)]


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_batches_are_queued_to_the_gpu_not_copied_in_a_wait(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking copy to the card waits for every kernel before it (the previous step); from pinned memory a
    non-blocking one is queued. On the GPU both are on unless the user's `accelerator_config` says otherwise."""
    from tuneloom.templates import get_template, resolve_settings
    from tuneloom.train import recipe

    monkeypatch.setattr(recipe, "pick_device", lambda: torch.device(device))

    def arguments(trainer_config: dict[str, Any]) -> TrainingArguments:
        settings = resolve_settings(get_template("tiny-random"), {"trainer_config": trainer_config})
        return recipe._training_arguments(settings, recipe._extensions(settings), tmp_path, 8, has_eval=False)

    on_gpu = device == "cuda"
    for default in (arguments({}), arguments({"accelerator_config": None})):
        assert default.dataloader_pin_memory is on_gpu and default.accelerator_config.non_blocking is on_gpu
    chosen = arguments({"accelerator_config": {"non_blocking": False, "even_batches": False}})
    assert chosen.accelerator_config.non_blocking is False and chosen.accelerator_config.even_batches is False


@pytest.mark.parametrize(
    ("computes_bf16", "cuda", "trainer_config", "hinted"),
    [
        (True, False, {}, True),
        (False, False, {}, False),  # emulated bfloat16 is slower than float32
        (True, True, {}, False),  # a GPU run picks its precision itself
        (True, False, {"bf16": True, "use_cpu": True}, False),  # already chosen
        (True, False, {"fp16": True}, False),
    ],
)
def test_a_float32_run_on_a_cpu_that_computes_bfloat16_is_told_how_to_go_faster(
    computes_bf16: bool, cuda: bool, trainer_config: dict[str, Any], hinted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneloom.templates import loading

    monkeypatch.setattr(loading, "cpu_computes_bf16", lambda: computes_bf16)
    hint = loading.cpu_precision_hint(trainer_config, cuda_available=cuda)
    assert (hint is not None) is hinted
    if hint:
        assert '{"bf16": true, "use_cpu": true}' in hint


def test_the_run_shows_the_hint_among_its_stages(
    sentiment_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneloom.templates import loading
    from tuneloom.train.recipe import TrainJob, run_training

    monkeypatch.setattr(loading, "cpu_computes_bf16", lambda: True)
    stages: list[str] = []
    settings = {"trainer_config": {"max_steps": 1, "eval_fraction": 0.0}}
    job = TrainJob(data=sentiment_file, output=tmp_path / "v", template="tiny-random", settings=settings)
    run_training(job, on_event=lambda e: stages.append(e.message) if e.kind == "stage" else None)
    assert any(stage.startswith("This CPU computes bfloat16 in hardware") for stage in stages)
