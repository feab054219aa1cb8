"""Check one settings dictionary against the class it feeds, using the tables in `settings_rules`.

Field names and types come from the real classes (`TrainingArguments`, `LoraConfig`, `GPTQConfig`,
`BitsAndBytesConfig`), introspected once and cached, so an upgrade that adds or renames a field is
picked up without editing tuneloom. After the key-by-key checks the class itself is constructed,
which catches what only it knows (fp16 together with bf16, an unknown scheduler name, …).

transformers and peft are imported on first use, not at import time: listing templates must stay
instant, and the server pays the import once.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import json
import math
import os
import re
import tempfile
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from tuneloom.errors import SettingsError
from tuneloom.templates.settings_rules import (
    ALIASES,
    BNB_FIELDS,
    CHOICE_NOTES,
    CHOICES,
    CLEARED_BY_EMPTY,
    DICT_ONLY,
    ESCAPE,
    EXTENSIONS,
    GPTQ_LEGACY_FIELDS,
    MODEL_FIELDS,
    QUANT_METHOD_KEYS,
    QUANT_METHODS,
    RANGES,
    REFUSED_IN,
    REFUSED_KEYS,
    REFUSED_PREFIXES,
    REMOTE_LOGGER_PREFIXES,
    REMOTE_LOGGING,
    REQUIRED,
    TOKENIZER_FIELDS,
    TRAINER_EXTENSION_FIELDS,
    TRAINER_EXTENSIONS,
    VALUE_RULES,
    Field,
    field,
)

MAX_DEPTH = 32
_KIND = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict", type(None): "null"}
_KIND_WORDS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "list": "a list",
    "dict": "an object",
    "null": "null",
}
FILLED_DEFAULTS: dict[str, dict[str, Any]] = {
    **EXTENSIONS,
    "peft_config": {"peft_type": "LORA", "task_type": "CAUSAL_LM"},
}


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def plain(path: str, value: Any, depth: int = 0) -> Any:
    """A JSON-safe deep copy: what a manifest stores and what every later check may assume."""
    if depth > MAX_DEPTH:
        raise SettingsError(f"{path or 'settings'} is nested too deeply", key=path or None)
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{path} must be a finite number (got {value})", key=path or None)
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SettingsError(
                    f"{path or 'settings'} has a key that is not text: {key!r}", key=path or None
                )
            out[key] = plain(join(path, key), item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [plain(f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value)]
    raise SettingsError(f"{path} must be JSON data, not {type(value).__name__}", key=path or None)


def kind_of(value: Any) -> str:
    return _KIND.get(type(value), "other")


def suggest(word: str, candidates: typing.Iterable[str]) -> str:
    near = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{near[0]}'?" if near else ""


# ---- types of the real classes -> Field ------------------------------------------------------------


def field_from_type(tp: Any) -> Field:
    """The JSON a Python annotation accepts. Enums and Literals also give the accepted strings."""
    kinds: set[str] = set()
    choices: list[str] = []
    items: set[str] = set()
    flags = {"free_str": False, "enum": False}

    def walk(t: Any) -> None:
        origin = typing.get_origin(t)
        if t is None or t is type(None):
            kinds.add("null")
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(t):
                walk(arg)
        elif origin is typing.Literal:
            for value in typing.get_args(t):
                kinds.add(kind_of(value))
                choices.extend([value] if isinstance(value, str) else [])
        elif t in _KIND:
            kinds.add(_KIND[t])
            flags["free_str"] |= t is str
        elif isinstance(t, type) and issubclass(t, enum.Enum):
            kinds.add("str")
            flags["enum"] = True
            choices.extend(str(member.value) for member in t)
        elif origin in (list, tuple, set, frozenset) or t in (tuple, set, frozenset):
            kinds.add("list")
            args = [a for a in typing.get_args(t) if a is not Ellipsis]
            items.update(field_from_type(args[0]).kinds if len(args) == 1 else {"any"})
        elif origin is dict or origin is Mapping:
            kinds.add("dict")
        elif isinstance(t, type):
            kinds.add("dict")  # a config class (EvaConfig, LoftQConfig, …) is given as a JSON object
        else:
            kinds.add("any")  # Any, TypeVars, unresolved forward references

    walk(tp)
    keep = choices if flags["enum"] or not flags["free_str"] else []
    return Field(frozenset(kinds), tuple(dict.fromkeys(keep)), frozenset(items))


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # a forward reference this Python cannot resolve: fall back to "any"
        return {}


def _dataclass_fields(cls: type) -> dict[str, Field]:
    hints = _hints(cls)
    return {f.name: field_from_type(hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init}


def _init_fields(cls: type, overrides: Mapping[str, Field]) -> dict[str, Field]:
    """Fields of a class whose __init__ lists them; unannotated ones are typed by their default."""
    hints = _hints(cls.__init__)  # type: ignore[misc]
    out: dict[str, Field] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default_kind = kind_of(param.default)
        guess = field(default_kind) if default_kind in ("bool", "float", "str") else field("any")
        out[name] = field_from_type(hints[name]) if name in hints else guess
    return {**out, **overrides, "quant_method": field("str")}


@cache
def trainer_fields() -> dict[str, Field]:
    from transformers import TrainingArguments

    return {**_dataclass_fields(TrainingArguments), **TRAINER_EXTENSION_FIELDS}


@cache
def lora_fields() -> dict[str, Field]:
    from peft import LoraConfig

    return _dataclass_fields(LoraConfig)


@cache
def gptq_fields() -> dict[str, Field]:
    from transformers import GPTQConfig

    return _init_fields(GPTQConfig, GPTQ_LEGACY_FIELDS)


@cache
def bnb_fields() -> dict[str, Field]:
    from transformers import BitsAndBytesConfig

    return _init_fields(BitsAndBytesConfig, BNB_FIELDS)


FIELD_SOURCES: dict[str, Callable[[], Mapping[str, Field]]] = {
    "model_config": lambda: MODEL_FIELDS,
    "tokenizer_config": lambda: TOKENIZER_FIELDS,
    "trainer_config": trainer_fields,
    "peft_config": lora_fields,
    "quantization_config:gptq": gptq_fields,
    "quantization_config:bitsandbytes": bnb_fields,
}
CLASS_NAMES = {
    "trainer_config": "TrainingArguments",
    "peft_config": "LoraConfig",
    "quantization_config:gptq": "GPTQConfig",
    "quantization_config:bitsandbytes": "BitsAndBytesConfig",
}


# ---- one key -----------------------------------------------------------------------------------------


def coerce(path: str, value: Any, spec: Field) -> Any:
    """JSON carries 512 as 512.0: cast back where the field is an int; refuse anything else off-type."""
    kind = kind_of(value)
    if "any" in spec.kinds:
        return value
    if kind in spec.kinds:
        if kind == "list" and spec.items and "any" not in spec.items:
            return [coerce(f"{path}[{i}]", item, Field(spec.items)) for i, item in enumerate(value)]
        return value
    if kind == "int" and "float" in spec.kinds:
        return float(value)
    if kind == "float" and "int" in spec.kinds:
        if value.is_integer():
            return int(value)
        raise SettingsError(f"{path} must be a whole number (got {value})", key=path)
    wanted = " or ".join(_KIND_WORDS[k] for k in sorted(spec.kinds - {"null"}))
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise SettingsError(f"{path} must be {wanted} (got {shown})", key=path)


def pick_choice(path: str, value: str, choices: tuple[str, ...]) -> str:
    """Match case-insensitively and store the canonical spelling (so manifests compare equal)."""
    by_fold = {c.casefold(): c for c in choices}
    if value.strip().casefold() in by_fold:
        return by_fold[value.strip().casefold()]
    note = f" ({CHOICE_NOTES[path]})" if path in CHOICE_NOTES else ""
    listed = ", ".join(f"'{c}'" for c in choices[:12]) + (", …" if len(choices) > 12 else "")
    raise SettingsError(
        f"{path} must be one of {listed}{note} (got {value!r}).{suggest(value, choices)}",
        key=path,
    )


def refusal(setting: str, key: str, allow_remote_loggers: bool) -> str | None:
    """Why a key may not be set at all, or None."""
    reason = REFUSED_IN.get(setting, {}).get(key) or REFUSED_KEYS.get(key)
    for prefix, why in REFUSED_PREFIXES.items():
        reason = reason or (why if key.startswith(prefix) else None)
    if not reason and not allow_remote_loggers and key.startswith(REMOTE_LOGGER_PREFIXES):
        reason = REMOTE_LOGGING
    return reason


def check_value(setting: str, key: str, value: Any, spec: Field, allow_remote_loggers: bool) -> Any:
    path = f"{setting}.{key}"
    if setting == "trainer_config" and key in DICT_ONLY and isinstance(value, str):
        raise SettingsError(
            f"{path} must be an object: a string is read as a file path, which {ESCAPE}", key=path
        )
    value = coerce(path, value, spec)
    rule = VALUE_RULES.get(path)
    choices = CHOICES.get(path, spec.choices)
    if isinstance(value, str) and choices and rule is None:
        value = pick_choice(path, value, choices)
    bounds = RANGES.get(path)
    if bounds and kind_of(value) in ("int", "float") and not bounds.contains(value):
        raise SettingsError(f"{path} must be {bounds.describe()} (got {value})", key=path)
    return rule(path, value, allow_remote_loggers) if rule else value


# ---- one setting -------------------------------------------------------------------------------------


def quant_methods(cfg: Mapping[str, Any]) -> set[str]:
    """Which quantization method(s) a dict's keys point at: `bits` → GPTQ, `load_in_*bit` → bitsandbytes."""
    found = {QUANT_METHOD_KEYS[k] for k in cfg if k in QUANT_METHOD_KEYS}
    named = cfg.get("quant_method")
    if isinstance(named, str) and named.strip().lower() in QUANT_METHODS:
        found.add(named.strip().lower())
    return found


def scope_of(setting: str, cfg: Mapping[str, Any]) -> str:
    if setting != "quantization_config":
        return setting
    named = cfg.get("quant_method")
    if named is not None and not (isinstance(named, str) and named.strip().lower() in QUANT_METHODS):
        raise SettingsError(
            f"quantization_config.quant_method must be 'gptq' or 'bitsandbytes' (got {json.dumps(named)})",
            key="quantization_config.quant_method",
        )
    methods = quant_methods(cfg)
    if len(methods) != 1:
        problem = "mixes GPTQ and bitsandbytes keys" if methods else "does not say which method to use"
        raise SettingsError(
            f"quantization_config {problem}: give `bits` for GPTQ or `load_in_4bit`/`load_in_8bit` for "
            "bitsandbytes, or set it to {} for no quantization",
            key="quantization_config",
        )
    return f"quantization_config:{methods.pop()}"


def apply_aliases(setting: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Rename documented alternative spellings to the canonical key before merging with defaults."""
    aliases = ALIASES.get(setting, {})
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in cfg.items():
        canonical = aliases.get(key, key)
        if canonical in out:
            raise SettingsError(
                f"{setting}.{canonical} is given twice (as {spelled[canonical]} and {key}); keep one",
                key=f"{setting}.{canonical}",
            )
        out[canonical], spelled[canonical] = value, key
    return out


def unknown_key(setting: str, scope: str, key: str, known: Mapping[str, Field]) -> SettingsError:
    path = f"{setting}.{key}"
    hint = suggest(key, known)
    if scope in CLASS_NAMES:
        return SettingsError(f"{path} is not a {CLASS_NAMES[scope]} setting.{hint}", key=path)
    listed = "" if hint else f" Allowed: {', '.join(sorted(known))}."
    return SettingsError(f"{path} is not an allowed {setting} setting.{hint}{listed}", key=path)


def check_setting(setting: str, cfg: Mapping[str, Any], *, allow_remote_loggers: bool) -> dict[str, Any]:
    """Validate and normalise one merged settings dict; the result is JSON-safe."""
    if not cfg and setting in CLEARED_BY_EMPTY:
        return {}
    scope = scope_of(setting, cfg)
    known = FIELD_SOURCES[scope]()
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        reason = refusal(setting, key, allow_remote_loggers)
        if reason:
            raise SettingsError(f"{setting}.{key} is refused: {reason}.", key=f"{setting}.{key}")
        if key not in known:
            raise unknown_key(setting, scope, key, known)
        out[key] = check_value(setting, key, value, known[key], allow_remote_loggers)
    for key in REQUIRED.get(scope, ()):
        if key not in out:
            raise SettingsError(f"{setting}.{key} is required", key=f"{setting}.{key}")
    for key, default in FILLED_DEFAULTS.get(setting, {}).items():
        out.setdefault(key, json.loads(json.dumps(default)))
    CHECKS.get(scope, _no_check)(out)
    return out


# ---- whole-dict checks: construct the real class -----------------------------------------------------


def _no_check(cfg: dict[str, Any]) -> None:
    return None


def construct(setting: str, class_name: str, build: Callable[[], object], cfg: Mapping[str, Any]) -> None:
    """Let the real class judge the combination; blame the key its message names, if any."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build()
    except ImportError:
        return  # an optional backend (optimum, gptqmodel, scipy, …) is missing here: keys/types were checked
    except Exception as exc:
        hits = [(m.start(), k) for k in cfg if (m := re.search(rf"\b{re.escape(k)}\b", str(exc)))]
        path = f"{setting}.{min(hits)[1]}" if hits else setting
        raise SettingsError(f"{path} is not accepted by {class_name}: {exc}", key=path) from None


@cache
def _dry_run_training_arguments() -> type:
    import torch
    from transformers import TrainingArguments

    class DryRunTrainingArguments(TrainingArguments):
        """Skips device setup: validating must not initialise CUDA nor reset accelerate's global state."""

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

    return DryRunTrainingArguments


# Left out of the dry run: they flip global torch flags (TF32) or import logging integrations, and
# their own rules in settings_rules already checked them. use_cpu=True skips the bf16-needs-GPU check,
# which is `require_supported_hardware`'s job on the machine that trains.
_NOT_IN_DRY_RUN = frozenset({"tf32", "torch_compile", "torch_compile_backend", "torch_compile_mode"})
_NOT_IN_DRY_RUN |= {"report_to", "use_cpu", *TRAINER_EXTENSIONS}


def _check_trainer(cfg: dict[str, Any]) -> None:
    kwargs = {k: v for k, v in cfg.items() if k not in _NOT_IN_DRY_RUN}
    out = os.path.join(tempfile.gettempdir(), "tuneloom-settings-check")  # never created
    cls = _dry_run_training_arguments()
    construct(
        "trainer_config",
        "TrainingArguments",
        lambda: cls(output_dir=out, report_to="none", use_cpu=True, **kwargs),
        cfg,
    )


def _check_lora(cfg: dict[str, Any]) -> None:
    from peft import LoraConfig

    construct("peft_config", "LoraConfig", lambda: LoraConfig(**cfg), cfg)


def _check_gptq(cfg: dict[str, Any]) -> None:
    from transformers import GPTQConfig

    construct("quantization_config", "GPTQConfig", lambda: GPTQConfig(**cfg), cfg)


def _check_bnb(cfg: dict[str, Any]) -> None:
    if not (cfg.get("load_in_4bit") or cfg.get("load_in_8bit")):
        raise SettingsError(
            "quantization_config.load_in_4bit: set load_in_4bit or load_in_8bit to true, "
            "or set quantization_config to {} for no quantization",
            key="quantization_config.load_in_4bit",
        )
    from transformers import BitsAndBytesConfig

    construct("quantization_config", "BitsAndBytesConfig", lambda: BitsAndBytesConfig(**cfg), cfg)


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "trainer_config": _check_trainer,
    "peft_config": _check_lora,
    "quantization_config:gptq": _check_gptq,
    "quantization_config:bitsandbytes": _check_bnb,
}
