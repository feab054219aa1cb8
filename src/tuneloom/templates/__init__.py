"""Templates (base model + default settings) and the validation of user training settings."""

from tuneloom.templates.catalogue import DEFAULT_TEMPLATE, SETTING_NAMES, TEMPLATES, Template, get_template
from tuneloom.templates.settings import (
    TrainingSettings,
    parse_settings_json,
    require_supported_hardware,
    resolve_settings,
    tokenizer_settings,
    tolerance_setting,
)
from tuneloom.templates.settings_rules import TOKENIZER_EXTENSIONS, TRAINER_EXTENSIONS

__all__ = [
    "DEFAULT_TEMPLATE",
    "SETTING_NAMES",
    "TEMPLATES",
    "TOKENIZER_EXTENSIONS",
    "TRAINER_EXTENSIONS",
    "Template",
    "TrainingSettings",
    "get_template",
    "parse_settings_json",
    "require_supported_hardware",
    "resolve_settings",
    "tokenizer_settings",
    "tolerance_setting",
]
