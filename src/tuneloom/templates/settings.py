"""Training settings: a template's defaults merged with a user's overrides, then validated.

Users send five dictionaries (`model_config`, `quantization_config`, `peft_config`,
`tokenizer_config`, `trainer_config`) and `invalid_data_tolerance_percent`, usually as JSON from the
CLI or the REST API. `resolve_settings` turns them into a `TrainingSettings` whose dictionaries are
normalised and JSON-safe (a model version's manifest stores them, and versions are compared by
them), or raises `SettingsError` naming the offending key as a dotted path.

Merge semantics, per setting:
- a user key replaces the template's value for that key (nested objects are replaced, not merged);
- a user value of `null` removes the key (the library default applies);
- a setting given as `null` starts from nothing instead of the template's defaults;
- `{}` for `peft_config` means full fine-tuning and for `quantization_config` no quantization
  (there "empty" is a choice; for the other three `{}` simply overrides nothing);
- switching quantization method (`bits` → `load_in_4bit`) drops the template's keys of the other one.

Validation is fast after the first call (which imports transformers/peft and introspects their
classes once), so the server can run it at request time. Rules live in `settings_rules` (tables,
including tuneloom's own extension keys) and `settings_fields` (the engine).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneloom.errors import SettingsError
from tuneloom.templates.catalogue import DEFAULT_TEMPLATE, SETTING_NAMES, TEMPLATES, Template, get_template
from tuneloom.templates.settings_distributed import DISTRIBUTED, SHARDED_STRATEGIES, check_distributed
from tuneloom.templates.settings_fields import (
    apply_aliases,
    check_setting,
    coerce,
    plain,
    quant_methods,
    suggest,
)
from tuneloom.templates.settings_rules import CLEARED_BY_EMPTY, FLOAT, GPU_ONLY_ATTENTION, RANGES, kind_of

TOLERANCE = "invalid_data_tolerance_percent"
DEFAULT_TOLERANCE = 5.0
TOP_LEVEL_KEYS = (*SETTING_NAMES, TOLERANCE, DISTRIBUTED)
_NOT_GIVEN: Any = object()


@dataclass(frozen=True)
class TrainingSettings:
    """Validated, normalised settings of one training run (JSON-safe; see `to_dict`)."""

    model_config: dict[str, Any]
    quantization_config: dict[str, Any]
    peft_config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    trainer_config: dict[str, Any]
    invalid_data_tolerance_percent: float = DEFAULT_TOLERANCE
    distributed: dict[str, Any] = field(default_factory=dict)  # {} = one process (settings_distributed)

    def to_dict(self) -> dict[str, Any]:
        """All six keys (seven for a multi-process run), deep-copied, ready for `json.dumps`."""
        out: dict[str, Any] = {name: copy.deepcopy(getattr(self, name)) for name in SETTING_NAMES}
        out[TOLERANCE] = self.invalid_data_tolerance_percent
        if self.distributed:
            out[DISTRIBUTED] = copy.deepcopy(self.distributed)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingSettings:
        """Rebuild stored settings as they were, without re-validating them.

        A manifest written by an older tuneloom must still load even if today's rules are stricter;
        only the shape (six keys, five objects, a number) is checked.
        """
        data = _top_level(d, what="stored settings")
        missing = [name for name in SETTING_NAMES if name not in data]
        if missing:
            raise SettingsError(f"stored settings lack {', '.join(missing)}", key=missing[0])
        for name in SETTING_NAMES:
            if not isinstance(data[name], dict):
                raise SettingsError(f"{name} must be an object, not {kind_of(data[name])}", key=name)
        dicts = {name: data[name] for name in SETTING_NAMES}
        distributed = data.get(DISTRIBUTED) or {}
        if not isinstance(distributed, dict):
            raise SettingsError(f"{DISTRIBUTED} must be an object, not {kind_of(distributed)}", key=DISTRIBUTED)
        tolerance = tolerance_setting(data.get(TOLERANCE))
        return cls(**dicts, invalid_data_tolerance_percent=tolerance, distributed=distributed)


def resolve_settings(
    template: Template | str,
    overrides: Mapping[str, Any] | None = None,
    *,
    allow_remote_loggers: bool = False,
) -> TrainingSettings:
    """Merge `overrides` over the template's defaults and validate the result.

    `allow_remote_loggers` is the server operator's switch for `report_to` values that send logs to
    outside services (wandb, mlflow, …); users cannot turn it on from a settings dict.
    """
    user = _top_level({} if overrides is None else overrides, what="settings")
    problems: list[SettingsError] = []
    resolved = _resolved(template, user, SETTING_NAMES, allow_remote_loggers=allow_remote_loggers, problems=problems)
    tolerance = SettingsError.collect(problems, tolerance_setting, user.get(TOLERANCE))
    distributed = SettingsError.collect(problems, check_distributed, user.get(DISTRIBUTED))
    SettingsError.raise_all(problems)  # each setting checked on its own: one's mistake never hides another's
    return TrainingSettings(**resolved, invalid_data_tolerance_percent=tolerance, distributed=distributed)


def tokenizer_settings(template: Template | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template's `model_config` and `tokenizer_config`, as `resolve_settings` makes them.

    Counting tokens needs no other setting, and checking the other three imports the Trainer's
    arguments and peft: most of `tuneloom validate`'s start-up, for nothing it uses.
    """
    problems: list[SettingsError] = []
    names = ("model_config", "tokenizer_config")
    resolved = _resolved(template, {}, names, allow_remote_loggers=False, problems=problems)
    SettingsError.raise_all(problems)  # each setting checked on its own: one's mistake never hides another's
    return resolved["model_config"], resolved["tokenizer_config"]


def _resolved(
    template: Template | str,
    user: Mapping[str, Any],
    names: tuple[str, ...],
    *,
    allow_remote_loggers: bool,
    problems: list[SettingsError],
) -> dict[str, dict[str, Any]]:
    """Settings `names`: the user's dict over the template's, each validated on its own; a setting
    that fails goes into `problems` (and is None here) while the others are still checked."""
    tpl = get_template(template) if isinstance(template, str) else template
    defaults = tpl.default_settings()

    def one(name: str) -> dict[str, Any]:
        merged = merge_setting(name, defaults.get(name) or {}, user.get(name, _NOT_GIVEN))
        return check_setting(name, merged, allow_remote_loggers=allow_remote_loggers)

    return {name: SettingsError.collect(problems, one, name) for name in names}


def merge_setting(name: str, default: Mapping[str, Any], given: Any) -> dict[str, Any]:
    """One setting's user dict over its default dict, key by key (see the module docstring)."""
    if given is _NOT_GIVEN:
        return apply_aliases(name, default)
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise SettingsError(f"{name} must be an object ({{...}}), not {kind_of(given)}", key=name)
    if not given and name in CLEARED_BY_EMPTY:
        return {}
    user = apply_aliases(name, given)
    merged = apply_aliases(name, default)
    if name == "quantization_config" and quant_methods(user) and quant_methods(user) != quant_methods(merged):
        merged = {}
    for key, value in user.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _top_level(value: Any, *, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SettingsError(f"{what} must be an object with keys {', '.join(TOP_LEVEL_KEYS)}")
    data: dict[str, Any] = plain("", value)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise SettingsError(
                f"Unknown setting '{key}'.{suggest(key, TOP_LEVEL_KEYS)} Settings are: {', '.join(TOP_LEVEL_KEYS)}.",
                key=key,
            )
    return data


def tolerance_setting(value: Any) -> float:
    """`invalid_data_tolerance_percent` as a number in its range; the default for None."""
    if value is None:
        return DEFAULT_TOLERANCE
    number = float(coerce(TOLERANCE, value, FLOAT))
    if not RANGES[TOLERANCE].contains(number):
        raise SettingsError(f"{TOLERANCE} must be {RANGES[TOLERANCE].describe()} (got {value})", key=TOLERANCE)
    return number


def parse_settings_json(text: str, setting: str) -> dict[str, Any]:
    """Parse one setting given as JSON text (a CLI flag, a form field); errors say where."""
    if not isinstance(text, str | bytes):
        raise SettingsError(f"{setting} must be JSON text, not {type(text).__name__}", key=setting)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        hint = (
            " (JSON wants double quotes, no trailing commas, true/false and null)"
            if exc.msg.startswith("Expecting")
            else ""
        )
        raise SettingsError(
            f"{setting} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}",
            key=setting,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise SettingsError(f"{setting} is not valid JSON: {exc}", key=setting) from None
    if not isinstance(value, dict):
        raise SettingsError(f"{setting} must be a JSON object ({{...}}), not {kind_of(value)}", key=setting)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


# ---- hardware ------------------------------------------------------------------------------------------


def require_supported_hardware(settings: TrainingSettings, *, cuda_available: bool) -> None:
    """Refuse, in plain words, settings this machine cannot run (checked where the training runs)."""
    if cuda_available:
        return
    for rule in GPU_ONLY_RULES:
        problem = rule(settings)
        if problem:
            message, key = problem
            raise SettingsError(message, key=key)


def _quantization_on_cpu(settings: TrainingSettings) -> tuple[str, str] | None:
    quant = settings.quantization_config
    if not quant:
        return None
    what = _quantization_name(quant)
    return (
        f"{_subject(settings)} uses {what}, which needs an NVIDIA GPU; this machine has none. Pick a "
        f"non-quantized template (e.g. {DEFAULT_TEMPLATE}) or set quantization_config to {{}}.",
        "quantization_config",
    )


def _quantization_name(quant: Mapping[str, Any]) -> str:
    if "gptq" in quant_methods(quant):
        return f"{quant.get('bits', 4)}-bit GPTQ quantization"
    return f"{8 if quant.get('load_in_8bit') else 4}-bit bitsandbytes quantization"


def _subject(settings: TrainingSettings) -> str:
    """Name the template when the base model is a template's, since that is what the user picked."""
    model = settings.model_config.get("pretrained_model_name_or_path")
    matches = sorted((t for t in TEMPLATES if t.base_model == model), key=lambda t: not t.requires_gpu)
    return f"Template {matches[0].id}" if matches else f"Model {model}"


def _gpu_attention_on_cpu(settings: TrainingSettings) -> tuple[str, str] | None:
    attention = settings.model_config.get("attn_implementation")
    if attention not in GPU_ONLY_ATTENTION:
        return None
    return (
        f"model_config.attn_implementation '{attention}' needs an NVIDIA GPU; this machine has none. "
        "Use 'sdpa' or 'eager'.",
        "model_config.attn_implementation",
    )


def _tf32_on_cpu(settings: TrainingSettings) -> tuple[str, str] | None:
    if not settings.trainer_config.get("tf32"):
        return None
    return (
        "trainer_config.tf32 needs an NVIDIA GPU (Ampere or newer); this machine has none. Remove it.",
        "trainer_config.tf32",
    )


def _bf16_on_cpu(settings: TrainingSettings) -> tuple[str, str] | None:
    """TrainingArguments refuses bf16 without a GPU unless use_cpu is set; say so before loading a model."""
    trainer = settings.trainer_config
    flag = next((k for k in ("bf16", "bf16_full_eval") if trainer.get(k)), None)
    if flag is None or trainer.get("use_cpu"):
        return None
    return (
        f"trainer_config.{flag} needs a GPU with bfloat16 support; this machine has none. "
        "Remove it, or also set use_cpu to true to train in bfloat16 on the CPU.",
        f"trainer_config.{flag}",
    )


def _sharding_on_cpu(settings: TrainingSettings) -> tuple[str, str] | None:
    """accelerate shards only over GPUs: on CPUs it would quietly run FSDP or ZeRO as plain DDP."""
    strategy = settings.distributed.get("strategy")
    if strategy not in SHARDED_STRATEGIES:
        return None
    return (
        f"distributed.strategy '{strategy}' shards the model over GPUs; this machine has none, and on CPUs "
        "accelerate would run it unsharded. Use 'ddp' (every process holds the whole model), or train on a GPU.",
        "distributed.strategy",
    )


GPU_ONLY_RULES: tuple[Callable[[TrainingSettings], tuple[str, str] | None], ...] = (
    _quantization_on_cpu,
    _gpu_attention_on_cpu,
    _tf32_on_cpu,
    _bf16_on_cpu,
    _sharding_on_cpu,
)
