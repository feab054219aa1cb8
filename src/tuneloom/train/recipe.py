"""The fine-tuning run, top to bottom: settings → data → model → Trainer → model-version directory.

Read it like a recipe: every step is one call, and every call is a small function below or in a
sibling module. Hugging Face `Trainer` does the optimisation (so every `TrainingArguments` setting
works as documented); tuneloom supplies the data, the packed batches, the loss and the bookkeeping.
"""

from __future__ import annotations

import math
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback

from tuneloom.data.types import DataReport, Example
from tuneloom.errors import ModelVersionError, TuneloomError
from tuneloom.model_version import (
    ModelVersion,
    finalize,
    make_folder,
    open_version,
    partial_dir,
    write_json,
)
from tuneloom.templates import (
    TOKENIZER_EXTENSIONS,
    TRAINER_EXTENSIONS,
    TrainingSettings,
    get_template,
    require_supported_hardware,
    resolve_settings,
)
from tuneloom.templates.loading import apply_peft, cpu_precision_hint, load_model, load_tokenizer, pick_device
from tuneloom.templates.prompting import derive_prompt_format
from tuneloom.train.attention import FLASH_VARLEN, restore_attention, use_packed_attention
from tuneloom.train.checkpoints import latest_checkpoint
from tuneloom.train.compiling import COMPILE_KEYS, compile_blocks, wants_compile
from tuneloom.train.dataset import ExampleDataset, read_and_tokenize, split_held_out
from tuneloom.train.disk_full import disk_full_errors
from tuneloom.train.events import (
    CheckpointEvery,
    EventSink,
    ProgressReporter,
    ResumePoint,
    StopOnRequest,
    TrainEvent,
    ignore_events,
)
from tuneloom.train.lora import fuse_lora_layers
from tuneloom.train.packing import PackedCollator, packed_causal_lm_loss
from tuneloom.train.run_record import check_run_record
from tuneloom.train.trainer import RunTrainer

ROW_TOKENS = 4096  # packed row length; bounds the (block-diagonal) attention cost per row


class TrainingInterrupted(TuneloomError):
    code = "TRAINING_INTERRUPTED"


@dataclass
class TrainJob:
    data: Path
    output: Path
    template: str = "smollm2-135m-instruct-lora"
    settings: Mapping[str, Any] = field(default_factory=dict)  # overrides of the five + tolerance
    validation: Path | None = None
    data_format: str = "auto"
    resume: bool = False
    overwrite: bool = False
    workdir: Path | None = None  # checkpoints and staging; default: <output>.partial beside the output
    start_from: Path | None = None  # an earlier model-version directory whose weights this run continues
    checkpoint_every_s: float | None = None  # also checkpoint on a timer (the server's workers can be killed)


@dataclass
class TrainOutcome:
    version: ModelVersion
    metrics: dict[str, Any]
    report: DataReport


def run_training(
    job: TrainJob, *, on_event: EventSink = ignore_events, stop: threading.Event | None = None
) -> TrainOutcome:
    """Train in this process (for several processes, `tuneloom.train.launch.train` starts the ranks)."""
    with disk_full_errors(workdir_for(job)):
        outcome = train_rank(job, on_event=on_event, stop=stop)
    assert outcome is not None, "a one-process run is its own rank 0"
    return outcome


def train_rank(
    job: TrainJob, *, on_event: EventSink = ignore_events, stop: threading.Event | None = None
) -> TrainOutcome | None:
    """One process's share of a run; only the main process (rank 0) writes the model version and returns it.

    Every rank reads the data and builds the model the same way (same seed, same split); the
    Trainer, started by `accelerate launch`, shards the batches and averages the gradients.
    """
    check_output(job)
    template = get_template(job.template)
    settings = resolve_settings(template, job.settings)
    cuda = torch.cuda.is_available()
    require_supported_hardware(settings, cuda_available=cuda)
    if hint := cpu_precision_hint(settings.trainer_config, cuda_available=cuda):
        on_event(TrainEvent("stage", hint))
    options = _extensions(settings)
    seed = int(settings.trainer_config.get("seed", 42))
    set_seed(seed)

    on_event(TrainEvent("stage", "Loading tokenizer"))
    tokenizer = load_tokenizer(settings.model_config, settings.tokenizer_config)
    on_event(TrainEvent("stage", f"Reading {job.data}"))
    read = _reader(tokenizer, settings, options, job.data_format)
    examples, tokenized, report = read(job.data)
    if job.validation is not None:
        held_examples, held_out, _ = read(job.validation)
        train_rows = tokenized
    else:
        train_rows, held_out, held_examples = split_held_out(examples, tokenized, float(options["eval_fraction"]), seed)
    prompt_format = derive_prompt_format(examples)
    on_event(
        TrainEvent(
            "stage",
            f"{len(train_rows)} training / {len(held_out)} held-out examples; {report.dropped}",
        )
    )

    workdir = workdir_for(job)
    latest = latest_checkpoint(workdir)
    checkpoint = latest if job.resume else None
    recorder = check_run_record(job, settings, workdir, latest)  # before the model loads

    on_event(TrainEvent("stage", f"Loading {settings.model_config['pretrained_model_name_or_path']}"))
    model = _build_model(settings, job.start_from)
    fuse_lora_layers(model)
    attention = use_packed_attention(model) if options["packing"] else None
    if wants_compile(settings.trainer_config):
        compiled = compile_blocks(model, settings.trainer_config)
        on_event(TrainEvent("stage", f"Compiling {compiled} (the first steps take longer)"))

    start = ResumePoint()
    callbacks = [ProgressReporter(on_event), StopOnRequest(stop or threading.Event()), start, recorder]
    if job.checkpoint_every_s:
        callbacks.append(CheckpointEvery(job.checkpoint_every_s))
    train_set, eval_set = ExampleDataset(train_rows), ExampleDataset(held_out)
    trainer = RunTrainer(
        model=model,
        args=_training_arguments(settings, options, workdir, len(train_set), has_eval=len(eval_set) > 0),
        train_dataset=train_set,
        eval_dataset=eval_set if len(eval_set) else None,
        data_collator=PackedCollator(
            tokenizer.pad_token_id, ROW_TOKENS, packing=bool(options["packing"]), flat=attention == FLASH_VARLEN
        ),
        compute_loss_func=packed_causal_lm_loss,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to on_event, not to stdout
    on_event(TrainEvent("stage", "Training"))
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop is not None and stop.is_set():
        raise TrainingInterrupted(
            f"Training stopped at step {trainer.state.global_step}; checkpoint kept in {workdir}. "
            "Run the same command with --resume to continue.",
            details={"checkpoint_dir": str(workdir)},
        )

    eval_loss = _final_eval_loss(trainer) if len(eval_set) else None
    metrics = _metrics(trainer, result.metrics, eval_loss, train_set.token_count, start)
    on_event(TrainEvent("stage", "Saving model version"))
    restore_attention(model)
    weights_state = _gathered_weights(trainer)
    if not trainer.is_world_process_zero():
        trainer.accelerator.wait_for_everyone()
        return None
    staging = workdir / "version"
    weights = "adapter" if settings.peft_config else "model"
    manifest = {
        "template": template.id,
        "base_model": settings.model_config["pretrained_model_name_or_path"],
        "started_from": str(job.start_from) if job.start_from else None,
        "weights": weights,
        "settings": settings.to_dict(),
        "prompt_format": prompt_format.to_dict(),
        "data": {
            "file": str(job.data),
            "sha256": recorder.record["data"]["sha256"],  # hashed as the run began: the name may hold other data later
            "format": report.format,
            "train_examples": len(train_set),
            "held_out_examples": len(eval_set),
            **({"validation_sha256": recorder.record["validation"]["sha256"]} if job.validation else {}),
        },
        "summary": {k: metrics[k] for k in ("train_loss", "eval_loss", "perplexity") if k in metrics},
    }
    if settings.distributed:
        manifest["distributed"] = {
            "strategy": settings.distributed["strategy"],
            "processes": trainer.args.world_size,
            "sharded": weights_state is not None,  # what the Trainer really ran: its weights were gathered
        }
    try:
        _stage_artifacts(staging / weights, model, tokenizer, metrics, report, held_examples, weights_state)
        version = finalize(staging, job.output, manifest, overwrite=job.overwrite)
    except BaseException:
        # Half a version is of no use (a rerun stages it again) and, after a full disk, holds the space needed.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return TrainOutcome(version, metrics, report)


def _gathered_weights(trainer: Trainer) -> dict[str, Any] | None:
    """The full weights on rank 0 when they are sharded over the processes; None when `model` holds them.

    FSDP and DeepSpeed hold a slice of every tensor per rank; gathering is collective (every rank
    must call it), and the model-version directory gets one ordinary, consolidated copy. DDP keeps a
    full replica per rank, so rank 0 saves its own.
    """
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        return None
    return dict(trainer.accelerator.get_state_dict(trainer.model_wrapped))


def _build_model(settings: TrainingSettings, start_from: Path | None) -> Any:
    """The base model with fresh adapters, or — training again — with an earlier version's weights.

    An earlier LoRA version keeps its own adapter configuration (its rank and targets), so the
    trained matrices load as they were and keep learning.
    """
    if start_from is None:
        return apply_peft(load_model(settings.model_config, settings.quantization_config), settings.peft_config)
    earlier = open_version(start_from)
    if earlier.is_adapter:
        from peft import PeftModel

        base = load_model(settings.model_config, settings.quantization_config)
        return PeftModel.from_pretrained(base, earlier.weights_dir, is_trainable=True)
    model = load_model(settings.model_config, settings.quantization_config, source=str(earlier.weights_dir))
    return apply_peft(model, settings.peft_config)


def workdir_for(job: TrainJob) -> Path:
    """Checkpoints and staging: `job.workdir`, or `<output>.partial` beside the output."""
    return job.workdir or partial_dir(job.output)


def check_output(job: TrainJob) -> None:
    """Refuse an existing output, or one that cannot be created, before hours of training, not after."""
    if job.output.exists() and not job.overwrite:
        if job.resume:  # a finished run has no checkpoint left: say so rather than "training from the start"
            raise ModelVersionError(
                f"{job.output} is already a finished model version: nothing to resume; "
                "choose another --output or pass --overwrite to train it again."
            )
        raise ModelVersionError(f"{job.output} already exists; choose another --output or pass --overwrite.")
    make_folder(job.output.parent, f"cannot write --output {job.output}")  # checkpoints go beside it from step 1


def _stage_artifacts(
    weights_dir: Path,
    model: Any,
    tokenizer: Any,
    metrics: dict[str, Any],
    report: DataReport,
    held: list[Example],
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Everything but the manifest, into the staging folder that holds `weights_dir`."""
    staging = weights_dir.parent
    shutil.rmtree(staging, ignore_errors=True)
    if state_dict is None:
        model.save_pretrained(weights_dir)
    else:
        model.save_pretrained(weights_dir, state_dict=state_dict)
    tokenizer.save_pretrained(staging / "tokenizer")
    write_json(staging / "metrics.json", metrics)
    write_json(staging / "data_report.json", report.to_dict())
    write_json(
        staging / "held_out.json", [{"prompt": e.prompt, "completion": e.completion, "line": e.line} for e in held]
    )


def _extensions(settings: TrainingSettings) -> dict[str, Any]:
    """tuneloom's own training options, which ride inside trainer_config / tokenizer_config."""
    merged = {**TRAINER_EXTENSIONS, **TOKENIZER_EXTENSIONS}
    for source in (settings.trainer_config, settings.tokenizer_config):
        merged.update({k: v for k, v in source.items() if k in merged})
    return merged


def _reader(tokenizer: Any, settings: TrainingSettings, options: dict[str, Any], data_format: str) -> Any:
    def read(path: Path) -> Any:
        return read_and_tokenize(
            path,
            tokenizer,
            data_format=data_format,
            response_headers=options["response_headers"],
            max_length=int(settings.tokenizer_config.get("model_max_length", 512)),
            train_on_prompt=bool(options["train_on_prompt"]),
            tolerance_percent=settings.invalid_data_tolerance_percent,
        )

    return read


def _training_arguments(
    settings: TrainingSettings, options: dict[str, Any], workdir: Path, n_train: int, *, has_eval: bool
) -> TrainingArguments:
    """The user's trainer_config, plus what the platform owns: where files go, logging, evaluation cadence."""
    user = {k: v for k, v in settings.trainer_config.items() if k not in options and k not in COMPILE_KEYS}
    steps = _estimated_steps(user, n_train, int(settings.distributed.get("num_processes", 1)))
    cadence = max(1, steps // 10)
    defaults: dict[str, Any] = {
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": max(1, steps // 4),
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": cadence,
        "report_to": "none",
    }
    if settings.distributed:
        defaults["ddp_find_unused_parameters"] = False  # every parameter trains each step; skip the extra graph walk
    on_gpu = pick_device().type == "cuda"
    # A batch copied to the card without `non_blocking` waits until every kernel queued before it has run
    # (PyTorch's memcpy_and_sync), so the host could not prepare step k+1 while the card runs step k.
    # From pinned memory the copy is queued like a kernel instead.
    user["accelerator_config"] = {"non_blocking": on_gpu, **(user.get("accelerator_config") or {})}
    forced = {
        "output_dir": str(workdir / "checkpoints"),
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "prediction_loss_only": True,
        "dataloader_pin_memory": on_gpu,
    }
    return TrainingArguments(**{**defaults, **user, **forced})


def _estimated_steps(trainer_config: dict[str, Any], n_train: int, processes: int = 1) -> int:
    if int(trainer_config.get("max_steps", -1)) > 0:
        return int(trainer_config["max_steps"])
    per_step = (
        int(trainer_config.get("per_device_train_batch_size", 8))
        * int(trainer_config.get("gradient_accumulation_steps", 1))
        * processes
    )
    return max(1, math.ceil(n_train / per_step) * math.ceil(float(trainer_config.get("num_train_epochs", 1))))


def _final_eval_loss(trainer: Trainer) -> float:
    """The held-out loss of the trained weights, reusing the Trainer's own evaluation when its last
    one ran at the final step (the usual case), so the held-out set is not run through twice."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations and evaluations[-1].get("step") == trainer.state.global_step:
        return float(evaluations[-1]["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _metrics(
    trainer: Trainer, train_metrics: dict[str, Any], eval_loss: float | None, tokens: int, start: ResumePoint
) -> dict[str, Any]:
    """The version's metrics. The Trainer's loss and runtime cover this call of `train()` only: after a
    resume, the loss is the whole run's (the mean of every logged loss, the checkpoint's included) and
    tokens/s counts the epochs trained in this call."""
    history = trainer.state.log_history
    runtime = float(train_metrics.get("train_runtime", 0.0)) or float("nan")
    epochs = float(trainer.state.epoch or 0.0)
    losses = [float(h["loss"]) for h in history if "loss" in h]
    train_loss = train_metrics.get("train_loss")
    if start.step and losses:
        train_loss = sum(losses) / len(losses)
    epochs_now = epochs - start.epoch
    per_second = round(tokens * epochs_now / runtime, 1) if runtime == runtime and epochs_now else None
    metrics: dict[str, Any] = {
        "train_loss": train_loss,
        "train_runtime_s": round(runtime, 2),
        "train_tokens_per_second": per_second,
        "steps": trainer.state.global_step,
        "epochs": epochs,
        "loss_curve": [
            {"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
            for h in history
            if "loss" in h
        ],
        "eval_curve": [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h],
    }
    if eval_loss is not None:
        metrics["eval_loss"] = eval_loss
        metrics["perplexity"] = math.exp(min(eval_loss, 50.0))
    return metrics
