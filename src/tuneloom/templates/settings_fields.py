"""The engine: check one merged settings dictionary key by key, then let its class judge the whole.

Order per key: refused by name? known field? right JSON type (casting 512.0 to 512 where an int is
meant)? one of the accepted strings? inside its range? then any special value rule. The tables
live in `settings_rules`, the special rules in `settings_values`, the real classes' fields and
dry-run constructors in `settings_classes`.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from tuneloom.errors import SettingsError
from tuneloom.templates.settings_classes import CHECKS, CLASS_NAMES, FIELD_SOURCES
from tuneloom.templates.settings_rules import (
    ALIASES,
    CHOICE_NOTES,
    CHOICES,
    CLEARED_BY_EMPTY,
    DICT_ONLY,
    ESCAPE,
    EXTENSIONS,
    NESTED,
    PATH_KEYS_ALLOWED,
    PATH_SUFFIXES,
    QUANT_METHOD_KEYS,
    QUANT_METHODS,
    RANGES,
    REFUSED_IN,
    REFUSED_KEYS,
    REFUSED_PREFIXES,
    REMOTE_LOGGER_PREFIXES,
    REMOTE_LOGGING,
    REQUIRED,
    RETIRED,
    RETIRED_NOOPS,
    Field,
    kind_of,
)
from tuneloom.templates.settings_values import VALUE_RULES

MAX_DEPTH = 32
MAX_INT = 2**63
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
        return sized(path, int(value))
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SettingsError(f"{path or 'settings'} has a key that is not text: {key!r}", key=path or None)
            out[key] = plain(join(path, key), item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [plain(f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value)]
    raise SettingsError(f"{path} must be JSON data, not {type(value).__name__}", key=path or None)


def sized(path: str, value: int) -> int:
    """JSON integers have no limit; no setting means anything past 2^63, and floats stop at ~10^308."""
    if abs(value) >= MAX_INT:
        raise SettingsError(f"{path or 'settings'} is far too large a number (beyond 2^63)", key=path or None)
    return value


def suggest(word: str, candidates: Iterable[str]) -> str:
    near = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{near[0]}'?" if near else ""


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
        return float(sized(path, value))
    if kind == "float" and "int" in spec.kinds:
        if value.is_integer():
            return sized(path, int(value))
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
    reason = REFUSED_IN.get(setting, {}).get(key) or refused_anywhere(key)
    if not reason and not allow_remote_loggers and key.startswith(REMOTE_LOGGER_PREFIXES):
        reason = REMOTE_LOGGING
    return reason


def refused_anywhere(key: str) -> str | None:
    """Names refused at any depth: in a setting, or inside an object one of its keys holds."""
    reason = REFUSED_KEYS.get(key)
    for prefix, why in REFUSED_PREFIXES.items():
        reason = reason or (why if key.startswith(prefix) else None)
    for suffix, why in PATH_SUFFIXES.items():
        reason = reason or (why if key.endswith(suffix) and key not in PATH_KEYS_ALLOWED else None)
    return reason


def check_nested(path: str, value: Any) -> Any:
    """Inside objects (accelerator_config, corda_config, rank_pattern…): the same refusals, and bounds.

    The real classes pass these objects on to code that reads files or allocates per entry, so a path
    or an unbounded number one level down would undo the checks made one level up.
    """
    if isinstance(value, list):
        return [check_nested(path, item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        inner = f"{path}.{key}"
        reason = refused_anywhere(key)
        if reason:
            raise SettingsError(f"{inner} is refused: {reason}.", key=inner)
        bounded = NESTED.get(inner) or NESTED.get(f"{path}.*")
        if bounded is not None:
            item = coerce(inner, item, bounded[0])
            if not bounded[1].contains(item):
                raise SettingsError(f"{inner} must be {bounded[1].describe()} (got {item})", key=inner)
        out[key] = check_nested(inner, item)
    return out


def check_value(setting: str, key: str, value: Any, spec: Field, allow_remote_loggers: bool) -> Any:
    path = f"{setting}.{key}"
    if setting == "trainer_config" and key in DICT_ONLY and isinstance(value, str):
        raise SettingsError(f"{path} must be an object: a string is read as a file path, which {ESCAPE}", key=path)
    value = coerce(path, value, spec)
    rule = VALUE_RULES.get(path)
    choices = CHOICES.get(path, spec.choices)
    if isinstance(value, str) and choices and rule is None:
        value = pick_choice(path, value, choices)
    bounds = RANGES.get(path)
    if bounds and kind_of(value) in ("int", "float") and not bounds.contains(value):
        raise SettingsError(f"{path} must be {bounds.describe()} (got {value})", key=path)
    return check_nested(path, rule(path, value, allow_remote_loggers) if rule else value)


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


def drop_retired(path: str, value: Any) -> None:
    """Accept a removed key only with the value transformers 5 always uses; otherwise say what replaced it."""
    noop = RETIRED_NOOPS.get(path, ...)
    if kind_of(value) == kind_of(noop) and value == noop:
        return
    raise SettingsError(f"{path} no longer exists in transformers 5: {RETIRED[path]}", key=path)


def unknown_key(setting: str, scope: str, key: str, known: Mapping[str, Field]) -> SettingsError:
    path = f"{setting}.{key}"
    hint = suggest(key, known)
    if scope in CLASS_NAMES:
        return SettingsError(f"{path} is not a {CLASS_NAMES[scope]} setting.{hint}", key=path)
    listed = "" if hint else f" Allowed: {', '.join(sorted(known))}."
    return SettingsError(f"{path} is not an allowed {setting} setting.{hint}{listed}", key=path)


def check_setting(setting: str, cfg: Mapping[str, Any], *, allow_remote_loggers: bool) -> dict[str, Any]:
    """Validate and normalise one merged settings dict; the result is JSON-safe.

    Every key is checked, and all the keys that fail are raised together; the class's own judgement of
    the whole dict waits until each key is right (on a partial dict it would only add noise).
    """
    if not cfg and setting in CLEARED_BY_EMPTY:
        return {}
    scope = scope_of(setting, cfg)
    known = FIELD_SOURCES[scope]()
    problems: list[SettingsError] = []
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        checked = SettingsError.collect(problems, check_key, setting, scope, known, key, value, allow_remote_loggers)
        if checked is not None and checked[0]:
            out[key] = checked[1]
    problems += [
        SettingsError(f"{setting}.{key} is required", key=f"{setting}.{key}")
        for key in REQUIRED.get(scope, ())
        if key not in cfg
    ]
    SettingsError.raise_all(problems)
    for key, default in FILLED_DEFAULTS.get(setting, {}).items():
        out.setdefault(key, json.loads(json.dumps(default)))
    check = CHECKS.get(scope)
    if check:
        check(out)
    return out


def check_key(
    setting: str, scope: str, known: Mapping[str, Field], key: str, value: Any, allow_remote_loggers: bool
) -> tuple[bool, Any]:
    """(kept, value): a key's checked value, or (False, None) for a retired key given its no-op value."""
    reason = refusal(setting, key, allow_remote_loggers)
    if reason:
        raise SettingsError(f"{setting}.{key} is refused: {reason}.", key=f"{setting}.{key}")
    if key not in known and f"{setting}.{key}" in RETIRED:
        drop_retired(f"{setting}.{key}", value)
        return False, None
    if key not in known:
        raise unknown_key(setting, scope, key, known)
    return True, check_value(setting, key, value, known[key], allow_remote_loggers)
