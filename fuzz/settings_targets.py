"""Fuzz targets for the five training settings, settings JSON text, and inference parameters."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from functools import cache
from typing import Any

import atheris

from fuzz.values import mapping, pick, value
from tuneloom.errors import TuneloomError
from tuneloom.generate.params import MAX_STOP_STRINGS, MAX_TOKENS_LIMIT, InferenceParams
from tuneloom.templates import (
    SETTING_NAMES,
    TEMPLATES,
    TrainingSettings,
    parse_settings_json,
    require_supported_hardware,
    resolve_settings,
)
from tuneloom.templates.prompting import PromptFormat
from tuneloom.templates.settings import TOP_LEVEL_KEYS
from tuneloom.templates.settings_classes import FIELD_SOURCES
from tuneloom.templates.settings_fields import refusal, refused_anywhere
from tuneloom.templates.settings_rules import ALIASES, RANGES, REFUSED_IN, REFUSED_KEYS, RETIRED

TOLERANCE = "invalid_data_tolerance_percent"


@cache
def keys_of(setting: str) -> tuple[str, ...]:
    """Every field the real classes take, plus refused, aliased and retired names."""
    names = {k for scope, source in FIELD_SOURCES.items() if scope.split(":")[0] == setting for k in source()}
    names |= set(REFUSED_KEYS) | set(REFUSED_IN.get(setting, {})) | set(ALIASES.get(setting, {}))
    names |= {path.split(".", 1)[1] for path in RETIRED if path.startswith(setting + ".")}
    names |= {"hub_model_id", "ddp_backend", "trackio_space_id", "bits", "load_in_4bit", "load_in_8bit"}
    return tuple(sorted(names))


def _overrides(fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name in SETTING_NAMES:
        choice = fdp.ConsumeIntInRange(0, 5)
        if choice == 0:
            overrides[name] = value(fdp, keys_of(name))
        elif choice <= 2:
            overrides[name] = mapping(fdp, keys_of(name), size=3)
    if fdp.ConsumeBool():
        overrides[TOLERANCE] = value(fdp)
    for name in TOP_LEVEL_KEYS:  # settings beside the five (e.g. `distributed`), as they are added
        if name not in overrides and name not in SETTING_NAMES and fdp.ConsumeIntInRange(0, 3) == 0:
            overrides[name] = mapping(fdp, (), size=3)
    return overrides


def _check(resolved: TrainingSettings, remote: bool) -> None:
    """What a valid result promises: plain JSON, no refused key at any depth, numbers inside their ranges."""
    data = resolved.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    for name in SETTING_NAMES:
        for key, item in data[name].items():
            assert refusal(name, key, remote) is None, f"{name}.{key} was accepted"
            bounds = RANGES.get(f"{name}.{key}")
            if bounds and isinstance(item, int | float) and not isinstance(item, bool):
                assert bounds.contains(item), f"{name}.{key}={item} is outside {bounds.describe()}"
            _check_nested(f"{name}.{key}", item)
    assert 0 <= data[TOLERANCE] <= 100


def _check_nested(path: str, item: Any) -> None:
    if isinstance(item, list):
        for inner in item:
            _check_nested(path, inner)
    elif isinstance(item, dict):
        for key, inner in item.items():
            assert refused_anywhere(key) is None, f"{path}.{key} was accepted"
            _check_nested(f"{path}.{key}", inner)


def settings(data: bytes) -> None:
    """Any overrides on any template: a TrainingSettings that keeps the promises, or SettingsError."""
    fdp = atheris.FuzzedDataProvider(data)
    template = pick(fdp, TEMPLATES)
    remote = fdp.ConsumeBool()
    overrides = _overrides(fdp)
    try:
        resolved = resolve_settings(template, overrides, allow_remote_loggers=remote)
    except TuneloomError:
        return
    _check(resolved, remote)
    with contextlib.suppress(TuneloomError):
        require_supported_hardware(resolved, cuda_available=fdp.ConsumeBool())
    if not any(v is None or (isinstance(v, dict) and None in v.values()) for v in overrides.values()):
        again = resolve_settings(template, resolved.to_dict(), allow_remote_loggers=remote)
        assert again == resolved, "resolved settings are not a fixed point"


def settings_json(data: bytes) -> None:
    """Settings typed as JSON text (CLI flag, form field): parsed and validated, or SettingsError."""
    fdp = atheris.FuzzedDataProvider(data)
    name = pick(fdp, SETTING_NAMES)
    text = fdp.ConsumeUnicode(fdp.remaining_bytes())
    try:
        parsed = parse_settings_json(text, name)
    except TuneloomError:
        return
    for overrides in ({name: parsed}, parsed):
        with contextlib.suppress(TuneloomError):
            _check(resolve_settings(TEMPLATES[0], overrides), remote=False)
    with contextlib.suppress(TuneloomError):
        TrainingSettings.from_dict(parsed)


PARAM_KEYS = (*(f.name for f in dataclasses.fields(InferenceParams)), "max_new_tokens")


def params(data: bytes) -> None:
    """Inference parameters: in range and round-tripping, or SettingsError; rendering never crashes."""
    fdp = atheris.FuzzedDataProvider(data)
    raw = mapping(fdp, PARAM_KEYS, size=5) if fdp.ConsumeIntInRange(0, 7) else value(fdp, PARAM_KEYS)
    try:
        parsed = InferenceParams.from_dict(raw)
    except TuneloomError:
        return
    assert 1 <= parsed.max_tokens <= MAX_TOKENS_LIMIT and len(parsed.stop) <= MAX_STOP_STRINGS, parsed
    assert math.isfinite(parsed.temperature) and parsed.temperature >= 0, parsed
    assert 0 < parsed.top_p <= 1 and parsed.top_k >= 0 and parsed.num_beams >= 1, parsed
    assert InferenceParams.from_dict(json.loads(json.dumps(parsed.to_dict()))) == parsed
    prompt_format = PromptFormat(template=fdp.ConsumeUnicode(40) + "{prompt}", response_header=pick(fdp, ("Bot", None)))
    text = fdp.ConsumeUnicode(fdp.remaining_bytes())
    with contextlib.suppress(TuneloomError):
        prompt_format.render(text, system_prompt=parsed.system_prompt, prompt_template=parsed.prompt_template)


def warm_up() -> None:
    """Do the lazy imports (transformers, peft, both quantization configs) before the clock starts."""
    for template in TEMPLATES:
        resolve_settings(template)
    resolve_settings(TEMPLATES[0], {"quantization_config": {"load_in_4bit": True}})


TARGETS = {"settings": settings, "settings_json": settings_json, "params": params}
