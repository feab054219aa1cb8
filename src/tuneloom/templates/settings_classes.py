"""What the real Hugging Face classes accept: their fields (introspected) and a dry-run construction.

Field names and types come from `TrainingArguments`, `LoraConfig`, `GPTQConfig` and
`BitsAndBytesConfig` themselves, introspected once and cached, so an upgrade that adds or renames a
field is picked up without editing tuneloom. After the key-by-key checks each class is constructed
once, which catches what only it knows (fp16 together with bf16, bits=5, …).

transformers and peft are imported on first use, not at import time: listing templates stays
instant, and the server pays the import once.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
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
    BNB_FIELDS,
    GPTQ_LEGACY_FIELDS,
    JSON_KINDS,
    MODEL_FIELDS,
    TOKENIZER_FIELDS,
    TRAINER_EXTENSION_FIELDS,
    TRAINER_EXTENSIONS,
    Field,
    field,
    kind_of,
)

# ---- fields ------------------------------------------------------------


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
        elif t in JSON_KINDS:
            kinds.add(JSON_KINDS[t])
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


@cache
def library_defaults(setting: str) -> dict[str, Any]:
    """The value each key of `setting` takes when left out, as the library's class defines it (as JSON reads back:
    enums as their strings); {} for settings without such a class. A key given explicitly at this value and a
    key left out configure the same thing."""
    if setting == "trainer_config":
        from transformers import TrainingArguments as cls
    elif setting == "peft_config":
        from peft import LoraConfig as cls  # type: ignore[assignment]
    else:
        return {}
    defaults = {f.name: _as_json(f.default) for f in dataclasses.fields(cls) if f.init}
    return {name: value for name, value in defaults.items() if value is not _NOT_JSON}


_NOT_JSON = object()


def _as_json(value: Any) -> Any:
    """`value` as a JSON file holds it (an enum as its value); `_NOT_JSON` for what JSON cannot hold (a list built
    by a default factory, a config object)."""
    if isinstance(value, enum.Enum):
        value = value.value
    return value if value is None or isinstance(value, (bool, int, float, str)) else _NOT_JSON


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


# ---- whole-dict checks: construct the real class -----------------------------------------------------


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
# their own rules (settings_rules, settings_values) already checked them. use_cpu=True skips the
# bf16-needs-a-GPU check, which is `require_supported_hardware`'s job on the machine that trains.
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
