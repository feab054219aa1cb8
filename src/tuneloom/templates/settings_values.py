"""Rules for single values that need more than a type, a range or a list of choices.

Each rule takes (dotted path, value already type-checked, allow_remote_loggers) and returns the
normalised value or raises `SettingsError`. `VALUE_RULES` says which path uses which rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from tuneloom.data.sections import check_response_headers
from tuneloom.errors import SettingsError
from tuneloom.templates.settings_rules import (
    DTYPES,
    LOCAL_LOGGERS,
    MAX_LAYER_REPLICATION,
    MAX_PISSA_NITER,
    MAX_SPECIAL_TOKENS,
    REMOTE_LOGGING,
    STEP_FIELDS,
    kind_of,
)


def _dtype(path: str, value: Any, remote: bool) -> str:
    """Accept the spellings people copy from docs; store the one `getattr(torch, name)` understands."""
    canonical = DTYPES.get(value.strip().lower())
    if canonical is None or (canonical == "auto" and not path.startswith("model_config")):
        known = "float32, bfloat16, float16" + (", auto" if path.startswith("model_config") else "")
        raise SettingsError(f"{path} must be one of {known} (got {value!r})", key=path)
    return canonical


def _model_name(path: str, value: Any, remote: bool) -> str:
    name = value.strip()
    if not name or len(name) > 500 or any(ord(c) < 32 for c in name):
        raise SettingsError(f"{path} must name a model: a Hub id like 'org/name' or a directory", key=path)
    return name


def _device_map(path: str, value: Any, remote: bool) -> str:
    """Where weights go is the worker's decision; "auto"/"cpu" only state a preference it can honour."""
    if value in ("auto", "cpu"):
        return str(value)
    raise SettingsError(
        f"{path} must be 'auto' or 'cpu' (got {value!r}): tuneloom places the model on its devices itself",
        key=path,
    )


def _report_to(path: str, value: Any, remote: bool) -> str | list[str]:
    names = list(dict.fromkeys([value] if isinstance(value, str) else value))
    if not names or ("none" in names and len(names) > 1):
        raise SettingsError(f"{path} must be 'none' or a list of loggers without 'none'", key=path)
    outside = [n for n in names if n not in LOCAL_LOGGERS]
    if outside and not remote:
        raise SettingsError(
            f"{path} is refused for {', '.join(outside)}: {REMOTE_LOGGING}. Use 'none' or 'tensorboard'.",
            key=path,
        )
    known = _known_loggers()
    for name in outside:
        if name not in known:
            hint = f" Did you mean '{near[0]}'?" if (near := difflib.get_close_matches(name, known, n=1)) else ""
            raise SettingsError(f"{path}: '{name}' is not a logger transformers knows.{hint}", key=path)
    return "none" if names == ["none"] else names


def _known_loggers() -> list[str]:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return [*INTEGRATION_TO_CALLBACK, "all", "none"]


def _steps(path: str, value: Any, remote: bool) -> float | int:
    """Whole numbers of steps stay ints (so manifests read 10, not 10.0); fractions stay floats."""
    if value >= 1 and not float(value).is_integer():
        raise SettingsError(f"{path} must be a whole number of steps when ≥ 1, or a share < 1 (got {value})", key=path)
    return int(value) if float(value).is_integer() else float(value)


def _response_headers(path: str, value: Any, remote: bool) -> list[str]:
    try:
        return list(check_response_headers(value))
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc.message}", key=path) from None


_PISSA_NITER = re.compile(r"pissa_niter_(\d{1,9})")
_INIT_LORA = ("gaussian", "eva", "olora", "pissa", "corda", "loftq", "orthogonal", "mica")


def _init_lora_weights(path: str, value: Any, remote: bool) -> bool | str:
    niter = _PISSA_NITER.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, bool) or value in _INIT_LORA or (niter and 1 <= int(niter[1]) <= MAX_PISSA_NITER):
        return value
    raise SettingsError(
        f"{path} must be true, false, one of {', '.join(_INIT_LORA)} or pissa_niter_N with N from 1 to "
        f"{MAX_PISSA_NITER} (got {value!r})",
        key=path,
    )


def _layer_replication(path: str, value: Any, remote: bool) -> list[list[int]]:
    """[[start, end), …] layer ranges stacked into a deeper model: bounded, or one setting builds 10⁶ layers."""
    ranges = [_layer_range(f"{path}[{i}]", item) for i, item in enumerate(value)]
    total = sum(end - start for start, end in ranges)
    if total > MAX_LAYER_REPLICATION:
        raise SettingsError(f"{path} must build at most {MAX_LAYER_REPLICATION} layers in all (got {total})", key=path)
    return ranges


def _layer_range(path: str, item: Any) -> list[int]:
    if not (isinstance(item, list) and len(item) == 2 and all(kind_of(v) == "int" for v in item)):
        raise SettingsError(f"{path} must be a [start, end] pair of whole numbers (got {item!r})", key=path)
    start, end = item
    if not 0 <= start < end <= MAX_LAYER_REPLICATION:
        raise SettingsError(f"{path} must have 0 ≤ start < end ≤ {MAX_LAYER_REPLICATION} (got {item})", key=path)
    return [start, end]


_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def _variant(path: str, value: Any, remote: bool) -> str:
    """The variant becomes part of a weights file name (model.<variant>.safetensors): a word, never a path."""
    if not _VARIANT.fullmatch(value):
        raise SettingsError(
            f"{path} must be a plain word like 'fp16' (letters, digits, _ or -; got {value!r})", key=path
        )
    return str(value)


def _special_tokens(path: str, value: Any, remote: bool) -> list[str]:
    if len(value) > MAX_SPECIAL_TOKENS:
        raise SettingsError(f"{path} must list at most {MAX_SPECIAL_TOKENS} tokens (got {len(value)})", key=path)
    return list(value)


def _inference_mode(path: str, value: Any, remote: bool) -> bool:
    if value:
        raise SettingsError(f"{path} must be false for training (true freezes the adapter)", key=path)
    return False


ValueRule = Callable[[str, Any, bool], Any]
VALUE_RULES: dict[str, ValueRule] = {
    "model_config.pretrained_model_name_or_path": _model_name,
    "model_config.torch_dtype": _dtype,
    "model_config.device_map": _device_map,
    "quantization_config.bnb_4bit_compute_dtype": _dtype,
    "trainer_config.report_to": _report_to,
    "tokenizer_config.response_headers": _response_headers,
    "peft_config.init_lora_weights": _init_lora_weights,
    "peft_config.inference_mode": _inference_mode,
    "peft_config.layer_replication": _layer_replication,
    "model_config.variant": _variant,
    "tokenizer_config.additional_special_tokens": _special_tokens,
    **{f"trainer_config.{name}": _steps for name in STEP_FIELDS},
}
