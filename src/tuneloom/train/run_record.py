"""What defines a training run, kept beside its checkpoints, so that `--resume` continues that run and no other.

A checkpoint holds weights, optimizer and scheduler state and the step reached, not the settings
and data that produced them. Resumed with other settings (30 epochs cut to 1, another learning
rate) or another data file, the Trainer carried on without a word: the model version then recorded
settings its first steps never followed (and metrics computed over the wrong span), or had learned
from two datasets. So a run that starts afresh writes `run.json` into its work dir, and a resume
compares against it before the model loads, refusing any difference by name.

A work dir from before this record (no `run.json`) resumes as it always did, unchecked. The
server's workers resume the same way, with settings and data a job fixes once; they always match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tuneloom.errors import SettingsError
from tuneloom.model_version import MANIFEST, sha256_file, write_json
from tuneloom.templates import TrainingSettings, get_template
from tuneloom.templates.settings_classes import library_defaults
from tuneloom.templates.settings_distributed import DEFAULTS as DISTRIBUTED_DEFAULTS
from tuneloom.templates.settings_rules import EXTENSIONS

if TYPE_CHECKING:
    from tuneloom.train.recipe import TrainJob

RECORD = "run.json"
RECORD_FORMAT = 1

# Keys that may change between an interruption and its resume: they decide what is logged, when
# checkpoints and evaluations happen, how fast batches are fed, or where ranks meet, never which
# examples are learned, in what order, or the optimizer's schedule. Evaluation leaves the weights
# as they are; invalid_data_tolerance_percent only accepts or refuses the data, which is pinned by hash.
HARMLESS = frozenset(
    {
        "invalid_data_tolerance_percent",
        *(
            f"trainer_config.{key}"
            for key in (
                "logging_steps",
                "logging_strategy",
                "logging_first_step",
                "logging_nan_inf_filter",
                "log_level",
                "log_level_replica",
                "log_on_each_node",
                "report_to",
                "run_name",
                "disable_tqdm",
                "include_num_input_tokens_seen",
                "save_steps",
                "save_strategy",
                "save_total_limit",
                "save_safetensors",
                "save_on_each_node",
                "eval_steps",
                "eval_strategy",
                "eval_delay",
                "eval_on_start",
                "per_device_eval_batch_size",
                "eval_accumulation_steps",
                "dataloader_num_workers",
                "dataloader_prefetch_factor",
                "dataloader_persistent_workers",
                "dataloader_pin_memory",
                "torch_empty_cache_steps",
            )
        ),
        "distributed.machine_rank",
        "distributed.main_process_ip",
        "distributed.main_process_port",
    }
)


def check_run_record(job: TrainJob, settings: TrainingSettings, workdir: Path, latest: Path | None) -> RecordFreshStart:
    """Refuse a resume whose settings or data differ from the run's record, and a fresh start that would discard an
    interrupted run's checkpoint (`latest`) unasked; the callback that keeps the record.

    A fresh start records itself when training begins (after the model loads, so a run that fails before leaves
    no work dir behind).
    """
    record = describe_run(job, settings)
    resuming = job.resume and latest is not None
    if latest is not None and not job.resume and not job.overwrite:
        raise SettingsError(
            f"{workdir} holds {latest.name} of an interrupted run: pass --resume to continue it, "
            "or --overwrite to discard it and start over (or train to a new --output to keep it)",
            key="resume",
        )
    if resuming:
        earlier = read_record(workdir)
        changes = [] if earlier is None else differences(earlier, record)
        if changes:
            raise SettingsError(_refusal(workdir, changes), key=changes[0][0], details={"changed": dict(changes)})
    return RecordFreshStart(workdir, record, fresh=not resuming)


def describe_run(job: TrainJob, settings: TrainingSettings) -> dict[str, Any]:
    """The record: template, the settings as resolved, the data's format and content hashes, the start weights.

    Files are identified by content, not path: a worker's retry may find the same snapshot elsewhere.
    """
    return _json_safe(
        {
            "record_format": RECORD_FORMAT,
            "template": get_template(job.template).id,
            "settings": settings.to_dict(),
            "data_format": job.data_format,
            "data": _file_identity(job.data),
            "validation": _file_identity(job.validation) if job.validation else None,
            "start_from": _file_identity(job.start_from / MANIFEST) if job.start_from else None,
        }
    )


def read_record(workdir: Path) -> dict[str, Any] | None:
    """The record in `workdir`, or None for a work dir written before records existed."""
    path = workdir / RECORD
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise SettingsError(
            f"--resume: {path} is damaged ({err}); delete it to resume without comparing settings", key="resume"
        ) from None


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, what changed) for each run-defining difference, settings first by dotted key, then the files."""
    before, after = _comparable(earlier), _comparable(now)
    changed = [
        (key, f"{key} was {_shown(before.get(key, _UNSET))}, now {_shown(after.get(key, _UNSET))}")
        for key in sorted(before.keys() | after.keys())
        if before.get(key, _library_default(earlier, key)) != after.get(key, _library_default(now, key))
    ]
    for key, what in (("data", "training data"), ("validation", "validation data"), ("start_from", "start weights")):
        if _sha(earlier.get(key)) != _sha(now.get(key)):
            changed.append((key, f"the {what} changed ({_files(earlier.get(key), now.get(key))})"))
    return changed


class RecordFreshStart(TrainerCallback):
    """On a fresh start, as training begins: the work dir's older checkpoints go, this run's record is written.

    Checkpoints left by an earlier run (a start over it with --overwrite; without, `check_run_record` refuses)
    would otherwise be resumed later under this run's record: the mix the record exists to prevent. Rank 0
    alone writes.
    """

    def __init__(self, workdir: Path, record: dict[str, Any], *, fresh: bool):
        self.workdir, self.record, self.fresh = workdir, record, fresh

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if not self.fresh or args.process_index != 0:
            return
        shutil.rmtree(self.workdir / "checkpoints", ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_json(self.workdir / RECORD, self.record)


_UNSET = object()


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """Template, data format and every setting by dotted key, defaults filled in, harmless keys left out.

    tuneloom's own keys and the `distributed` defaults are filled in, so `packing: true` given
    explicitly, or a one-process run's `{}`, compares equal to leaving them out.
    """
    settings = dict(record.get("settings") or {})
    settings["distributed"] = {**DISTRIBUTED_DEFAULTS, **(settings.get("distributed") or {})}
    flat = {"template": record.get("template"), "data_format": record.get("data_format")}
    for name, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(name, {**EXTENSIONS.get(name, {}), **value}))
        else:
            flat[name] = value
    return {key: value for key, value in flat.items() if key not in HARMLESS}


def _library_default(record: dict[str, Any], key: str) -> Any:
    """What a setting left out of `record` configured: the library's default (`weight_decay` 0.0 given on a resume
    is what the run had by leaving it out), where the record uses that setting (a LoRA key says nothing of a run
    with no adapter); else unset."""
    setting, _, name = key.partition(".")
    if not (record.get("settings") or {}).get(setting):
        return _UNSET
    return library_defaults(setting).get(name, _UNSET)


def _flatten(prefix: str, value: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        path = f"{prefix}.{key}"
        flat.update(_flatten(path, inner) if isinstance(inner, dict) and inner else {path: inner})
    return flat


def _file_identity(path: Path) -> dict[str, str]:
    return {"file": str(path), "sha256": sha256_file(path)}


def _sha(identity: Any) -> str | None:
    return identity.get("sha256") if isinstance(identity, dict) else None


def _files(earlier: Any, now: Any) -> str:
    """Which file, and which the run started with when that was another path (or none)."""
    name = now["file"] if now else "none now"
    was = earlier["file"] if earlier else "none"
    return f"file {name}" if was == name else f"file {name}; the run started with {was}"


def _shown(value: Any) -> str:
    return "(not set)" if value is _UNSET else json.dumps(value)


def _json_safe(value: Any) -> Any:
    """As it reads back from `run.json` (tuples as lists, paths as text), so a fresh description compares equal."""
    return json.loads(json.dumps(value, default=str))


def _refusal(workdir: Path, changes: list[tuple[str, str]]) -> str:
    listed = "; ".join(what for _, what in changes)
    return (
        f"--resume: the run in {workdir} started with other settings or data, and its checkpoint continues "
        f"only that run: {listed}. Resume with the settings and data it started with, or start over: "
        "the same command with --overwrite instead of --resume trains from step 0 and discards that checkpoint "
        "(or train to a new --output to keep it)."
    )
