"""Training-settings validation: merge semantics, refusals, casts, ranges, hardware, and fuzzing."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneloom.errors import SettingsError
from tuneloom.templates import (
    DEFAULT_TEMPLATE,
    SETTING_NAMES,
    TEMPLATES,
    TOKENIZER_EXTENSIONS,
    TRAINER_EXTENSIONS,
    TrainingSettings,
    get_template,
    parse_settings_json,
    require_supported_hardware,
    resolve_settings,
)
from tuneloom.templates.settings_rules import MODEL_FIELDS, REFUSED_KEYS, TOKENIZER_FIELDS

ESCAPE = "would let a settings dict escape the platform"
GPTQ_TEMPLATE = "llama-2-7b-chat-gptq-lora"


def resolve(overrides: dict[str, Any] | None = None, template: str = DEFAULT_TEMPLATE, **kw: Any) -> TrainingSettings:
    return resolve_settings(get_template(template), overrides, **kw)


def refused(overrides: dict[str, Any], template: str = DEFAULT_TEMPLATE, **kw: Any) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        resolve(overrides, template, **kw)
    return info.value


# ---- templates -------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_every_template_resolves_with_its_defaults(template: Any) -> None:
    resolved = resolve_settings(template)
    data = resolved.to_dict()
    assert set(data) == {*SETTING_NAMES, "invalid_data_tolerance_percent"}
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["model_config"]["pretrained_model_name_or_path"] == template.base_model
    for key, default in TRAINER_EXTENSIONS.items():
        assert data["trainer_config"][key] == default
    assert data["tokenizer_config"]["response_headers"] == TOKENIZER_EXTENSIONS["response_headers"]
    assert data["invalid_data_tolerance_percent"] == 5.0


def test_template_by_id_or_alias_string() -> None:
    assert resolve_settings("HF_GPTNeo_125m_lora") == resolve_settings(get_template("gpt-neo-125m-lora"))


# ---- refusals by name ------------------------------------------------------------------------------

REFUSALS = [
    ("model_config", "trust_remote_code", True),
    ("tokenizer_config", "trust_remote_code", True),
    ("trainer_config", "trust_remote_code", True),
    ("peft_config", "trust_remote_code", True),
    ("trainer_config", "push_to_hub", True),
    ("trainer_config", "hub_model_id", "me/model"),
    ("trainer_config", "hub_token", "hf_x"),
    ("trainer_config", "hub_strategy", "end"),
    ("trainer_config", "hub_private_repo", True),
    ("trainer_config", "output_dir", "/etc"),
    ("trainer_config", "logging_dir", "/tmp/logs"),
    ("trainer_config", "resume_from_checkpoint", "/root/ckpt"),
    ("trainer_config", "deepspeed", "/etc/ds.json"),
    ("trainer_config", "deepspeed", {"zero_optimization": {"stage": 2}}),
    ("trainer_config", "fsdp_config", "/etc/fsdp.json"),
    ("trainer_config", "fsdp", "full_shard"),
    ("trainer_config", "parallelism_config", {}),
    ("trainer_config", "local_rank", 0),
    ("trainer_config", "ddp_backend", "nccl"),
    ("trainer_config", "ddp_timeout", 60),
    ("trainer_config", "callbacks", ["x.Y"]),
    ("trainer_config", "env", {"LD_PRELOAD": "x"}),
    ("trainer_config", "environment", {"A": "b"}),
    ("trainer_config", "hf_token", "hf_x"),
    ("trainer_config", "trackio_space_id", "me/space"),
    ("model_config", "cache_dir", "/tmp/x"),
    ("model_config", "token", "hf_x"),
    ("model_config", "use_auth_token", True),
    ("model_config", "offload_folder", "/tmp/x"),
    ("model_config", "proxies", {"https": "http://evil"}),
    ("model_config", "gguf_file", "../x.gguf"),
    ("model_config", "subfolder", "../../"),
    ("tokenizer_config", "cache_dir", "/tmp/x"),
    ("tokenizer_config", "vocab_file", "/etc/passwd"),
    ("tokenizer_config", "token", "hf_x"),
    ("peft_config", "megatron_core", "os"),
    ("peft_config", "auto_mapping", {"base_model_class": "x"}),
]


@pytest.mark.parametrize(("setting", "key", "value"), REFUSALS)
def test_refused_by_name(setting: str, key: str, value: Any) -> None:
    error = refused({setting: {key: value}})
    assert error.key == f"{setting}.{key}"
    assert error.details["key"] == f"{setting}.{key}"
    assert f"{setting}.{key} is refused" in error.message
    assert ESCAPE in error.message


def test_every_globally_refused_key_is_refused_in_trainer_config() -> None:
    for key in REFUSED_KEYS:
        assert refused({"trainer_config": {key: "x"}}).key == f"trainer_config.{key}"


@pytest.mark.parametrize(
    ("setting", "key", "value", "why"),
    [
        ("model_config", "quantization_config", {"bits": 4}, "quantization_config setting"),
        ("peft_config", "base_model_name_or_path", "/etc", "fills it in"),
        ("quantization_config", "tokenizer", "/some/dir", ESCAPE),
    ],
)
def test_refused_with_their_own_reason(setting: str, key: str, value: Any, why: str) -> None:
    error = refused({setting: {key: value}}, template=GPTQ_TEMPLATE)
    assert error.key == f"{setting}.{key}" and why in error.message


@pytest.mark.parametrize("logger", ["wandb", "mlflow", "comet_ml", "neptune", "clearml", "dagshub", "all"])
def test_remote_loggers_refused_unless_the_server_allows_them(logger: str) -> None:
    error = refused({"trainer_config": {"report_to": logger}})
    assert error.key == "trainer_config.report_to" and ESCAPE in error.message
    error = refused({"trainer_config": {"report_to": ["tensorboard", logger]}})
    assert logger in error.message
    allowed = resolve({"trainer_config": {"report_to": logger}}, allow_remote_loggers=True)
    assert allowed.trainer_config["report_to"] == [logger]


@pytest.mark.parametrize(("given", "stored"), [("none", "none"), (["none"], "none"), ("tensorboard", ["tensorboard"])])
def test_local_loggers_allowed(given: Any, stored: Any) -> None:
    assert resolve({"trainer_config": {"report_to": given}}).trainer_config["report_to"] == stored


def test_unknown_logger_named_when_remote_allowed() -> None:
    error = refused({"trainer_config": {"report_to": "wandbb"}}, allow_remote_loggers=True)
    assert "Did you mean 'wandb'?" in error.message


@pytest.mark.parametrize("device_map", ["cuda:1", "balanced", {"": 0}, 0])
def test_device_map_only_auto_or_cpu(device_map: Any) -> None:
    assert refused({"model_config": {"device_map": device_map}}).key == "model_config.device_map"


@pytest.mark.parametrize("device_map", ["auto", "cpu"])
def test_device_map_auto_or_cpu_allowed(device_map: str) -> None:
    assert resolve({"model_config": {"device_map": device_map}}).model_config["device_map"] == device_map


@pytest.mark.parametrize("key", ["lr_scheduler_kwargs", "accelerator_config", "gradient_checkpointing_kwargs"])
def test_dict_fields_given_as_path_strings_are_refused(key: str) -> None:
    error = refused({"trainer_config": {key: "/etc/passwd"}})
    assert error.key == f"trainer_config.{key}" and ESCAPE in error.message


def test_dict_fields_given_as_objects_are_accepted() -> None:
    resolved = resolve({"trainer_config": {"lr_scheduler_kwargs": {"power": 2.0}, "accelerator_config": {}}})
    assert resolved.trainer_config["lr_scheduler_kwargs"] == {"power": 2.0}


def test_torch_compile_backend_must_be_a_known_one() -> None:
    assert (
        refused({"trainer_config": {"torch_compile_backend": "my.module"}}).key
        == "trainer_config.torch_compile_backend"
    )
    resolved = resolve({"trainer_config": {"torch_compile_backend": "inductor", "torch_compile": True}})
    assert resolved.trainer_config["torch_compile_backend"] == "inductor"


# ---- unknown keys ----------------------------------------------------------------------------------


def test_unknown_trainer_key_suggests_the_nearest() -> None:
    error = refused({"trainer_config": {"learning_rat": 0.1}})
    assert error.message == (
        "trainer_config.learning_rat is not a TrainingArguments setting. Did you mean 'learning_rate'?"
    )
    assert error.key == "trainer_config.learning_rat"


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        ({"peft_config": {"lora_alpah": 8}}, "Did you mean 'lora_alpha'?"),
        ({"tokenizer_config": {"model_max_lenght": 8}}, "Did you mean 'model_max_length'?"),
        ({"quantization_config": {"bits": 4, "use_exlama": False}}, "Did you mean 'use_exllama'?"),
        ({"trainer_cfg": {}}, "Did you mean 'trainer_config'?"),
        ({"model_config": {"frobnicate": 1}}, "Allowed: "),
    ],
)
def test_unknown_keys_anywhere(overrides: dict[str, Any], hint: str) -> None:
    assert hint in refused(overrides).message


def test_save_safetensors_true_is_accepted_and_dropped() -> None:
    """transformers 5 removed the field (it always saves safetensors); copied configs still carry it."""
    assert "save_safetensors" not in resolve({"trainer_config": {"save_safetensors": True}}).trainer_config
    error = refused({"trainer_config": {"save_safetensors": False}})
    assert error.key == "trainer_config.save_safetensors" and "always saves safetensors" in error.message


@pytest.mark.parametrize(("key", "hint"), [("warmup_ratio", "warmup_steps"), ("no_cuda", "use_cpu")])
def test_keys_removed_in_transformers_5_say_what_replaced_them(key: str, hint: str) -> None:
    error = refused({"trainer_config": {key: 0.1 if key == "warmup_ratio" else True}})
    assert error.key == f"trainer_config.{key}" and hint in error.message


def test_trust_remote_code_and_friends_are_not_in_the_allow_lists() -> None:
    for table in (MODEL_FIELDS, TOKENIZER_FIELDS):
        assert not set(table) & set(REFUSED_KEYS)


# ---- types and casts -------------------------------------------------------------------------------


def test_float_from_json_cast_to_int_where_an_int_is_meant() -> None:
    resolved = resolve(
        {
            "trainer_config": {"per_device_train_batch_size": 512.0, "seed": 7.0, "logging_steps": 10.0},
            "tokenizer_config": {"model_max_length": 512.0},
            "peft_config": {"r": 16.0, "lora_alpha": 32.0},
        }
    )
    for value in (
        resolved.trainer_config["per_device_train_batch_size"],
        resolved.trainer_config["seed"],
        resolved.trainer_config["logging_steps"],
        resolved.tokenizer_config["model_max_length"],
        resolved.peft_config["r"],
        resolved.peft_config["lora_alpha"],
    ):
        assert type(value) is int
    assert resolved.trainer_config["per_device_train_batch_size"] == 512


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (
            {"trainer_config": {"per_device_train_batch_size": 512.5}},
            "trainer_config.per_device_train_batch_size",
        ),
        ({"tokenizer_config": {"model_max_length": 100.5}}, "tokenizer_config.model_max_length"),
        ({"trainer_config": {"logging_steps": 2.5}}, "trainer_config.logging_steps"),
        ({"peft_config": {"r": 8.5}}, "peft_config.r"),
    ],
)
def test_non_whole_float_for_an_int_is_refused(overrides: dict[str, Any], key: str) -> None:
    assert refused(overrides).key == key


@pytest.mark.parametrize("value", ["true", "yes", 1, 0, None])
def test_bool_fields_accept_true_false_only(value: Any) -> None:
    if value is None:  # None removes the key: not an error
        assert "fp16" not in resolve({"trainer_config": {"fp16": value}}).trainer_config
        return
    error = refused({"trainer_config": {"fp16": value}})
    assert error.key == "trainer_config.fp16" and "true or false" in error.message


def test_bool_is_not_a_number() -> None:
    assert refused({"trainer_config": {"per_device_train_batch_size": True}}).key == (
        "trainer_config.per_device_train_batch_size"
    )
    assert refused({"invalid_data_tolerance_percent": True}).key == "invalid_data_tolerance_percent"


def test_string_for_a_number_is_refused() -> None:
    error = refused({"trainer_config": {"learning_rate": "1e-4"}})
    assert error.key == "trainer_config.learning_rate" and "a number" in error.message


# One mistake in each of four settings, by the key each error names.
FAILING = {
    "peft_config.r": {"r": "eight"},
    "trainer_config.learning_rte": {"learning_rte": 0.1},
    "invalid_data_tolerance_percent": 140,
    "distributed.num_processes": {"num_processes": 0},
}


def test_every_setting_that_fails_is_named_in_one_error() -> None:
    """A mistake in one setting never hides another's: one round of fixes, not one per try."""
    error = refused({key.split(".")[0]: value for key, value in FAILING.items()})
    assert [each["key"] for each in error.details["errors"]] == list(FAILING)
    assert error.key == "peft_config.r"  # clients that mark one field mark the first
    assert error.message.startswith("4 settings are invalid: ")
    for each in error.details["errors"]:
        alone = refused({each["key"].split(".")[0]: FAILING[each["key"]]})
        assert each["message"] == alone.message and alone.message in error.message


def test_every_key_that_fails_in_one_setting_is_named() -> None:
    """Within one dict too: three wrong keys are one round of fixes, each message as it is alone."""
    wrong = {"learning_rate": "abc", "num_train_epochs": -1, "push_to_hub": True}
    error = refused({"trainer_config": wrong, "peft_config": {"r": 0}})
    keys = {each["key"]: each["message"] for each in error.details["errors"]}
    assert sorted(keys) == ["peft_config.r", *sorted(f"trainer_config.{key}" for key in wrong)]
    assert error.message.startswith("4 settings are invalid: ")
    for key, value in wrong.items():
        assert keys[f"trainer_config.{key}"] == refused({"trainer_config": {key: value}}).message


def test_a_missing_required_key_is_named_beside_a_wrong_one() -> None:
    error = refused({"model_config": {"pretrained_model_name_or_path": None, "bogus_key": 1}}, "advanced")
    assert [each["key"] for each in error.details["errors"]] == [
        "model_config.bogus_key",
        "model_config.pretrained_model_name_or_path",
    ]
    assert error.details["errors"][1]["message"] == "model_config.pretrained_model_name_or_path is required"


def test_one_failing_setting_is_its_own_error() -> None:
    error = refused({"trainer_config": {"learning_rte": 0.1}})
    assert error.key == "trainer_config.learning_rte" and "errors" not in error.details


def test_list_items_are_typed() -> None:
    assert refused({"peft_config": {"target_modules": ["q_proj", 3]}}).key == "peft_config.target_modules[1]"


def test_non_finite_numbers_are_refused() -> None:
    for bad in (float("nan"), float("inf")):
        assert refused({"trainer_config": {"num_train_epochs": bad}}).key == "trainer_config.num_train_epochs"


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("torch.float32", "float32"),
        ("float32", "float32"),
        ("fp32", "float32"),
        ("bfloat16", "bfloat16"),
        ("torch.bfloat16", "bfloat16"),
        ("bf16", "bfloat16"),
        ("float16", "float16"),
        ("torch.float16", "float16"),
        ("fp16", "float16"),
        ("auto", "auto"),
        ("AUTO", "auto"),
    ],
)
def test_torch_dtype_spellings(spelling: str, canonical: str) -> None:
    assert resolve({"model_config": {"torch_dtype": spelling}}).model_config["torch_dtype"] == canonical
    assert resolve({"model_config": {"dtype": spelling}}).model_config == {
        "pretrained_model_name_or_path": get_template(DEFAULT_TEMPLATE).base_model,
        "torch_dtype": canonical,
    }


@pytest.mark.parametrize("spelling", ["int8", "torch.int4", "float", "double"])
def test_unknown_dtype_refused(spelling: str) -> None:
    if spelling == "float":  # torch.float is float32
        assert resolve({"model_config": {"torch_dtype": spelling}}).model_config["torch_dtype"] == "float32"
        return
    assert refused({"model_config": {"torch_dtype": spelling}}).key == "model_config.torch_dtype"


def test_choices_are_matched_case_insensitively_and_stored_canonically() -> None:
    resolved = resolve(
        {
            "trainer_config": {"optim": "ADAMW_TORCH", "lr_scheduler_type": "Cosine"},
            "model_config": {"attn_implementation": "SDPA"},
            "peft_config": {"task_type": "causal_lm", "peft_type": "lora"},
        }
    )
    assert resolved.trainer_config["optim"] == "adamw_torch"
    assert resolved.trainer_config["lr_scheduler_type"] == "cosine"
    assert resolved.model_config["attn_implementation"] == "sdpa"
    assert (resolved.peft_config["task_type"], resolved.peft_config["peft_type"]) == ("CAUSAL_LM", "LORA")


def test_enum_typo_suggests() -> None:
    error = refused({"trainer_config": {"lr_scheduler_type": "cosin"}})
    assert error.key == "trainer_config.lr_scheduler_type" and "Did you mean 'cosine'?" in error.message


# ---- aliases ---------------------------------------------------------------------------------------


def test_pretrained_model_name_alias_replaces_the_default() -> None:
    resolved = resolve({"model_config": {"pretrained_model_name": "facebook/opt-125m"}})
    assert resolved.model_config["pretrained_model_name_or_path"] == "facebook/opt-125m"
    assert "pretrained_model_name" not in resolved.model_config


def test_alias_and_canonical_together_refused() -> None:
    error = refused({"model_config": {"pretrained_model_name": "a/b", "pretrained_model_name_or_path": "c/d"}})
    assert error.key == "model_config.pretrained_model_name_or_path" and "twice" in error.message


def test_evaluation_strategy_alias() -> None:
    resolved = resolve({"trainer_config": {"evaluation_strategy": "steps", "eval_steps": 10.0}})
    assert resolved.trainer_config["eval_strategy"] == "steps"
    assert resolved.trainer_config["eval_steps"] == 10 and type(resolved.trainer_config["eval_steps"]) is int


def test_model_name_required() -> None:
    error = refused({"model_config": {"pretrained_model_name_or_path": None}})
    assert error.key == "model_config.pretrained_model_name_or_path" and "required" in error.message


# ---- ranges ----------------------------------------------------------------------------------------

BAD_VALUES = [
    ("trainer_config", "num_train_epochs", 0),
    ("trainer_config", "num_train_epochs", 101),
    ("trainer_config", "max_steps", 0),
    ("trainer_config", "max_steps", -2),
    ("trainer_config", "max_steps", 1_000_001),
    ("trainer_config", "per_device_train_batch_size", 0),
    ("trainer_config", "per_device_train_batch_size", 1025),
    ("trainer_config", "per_device_eval_batch_size", 4096),
    ("trainer_config", "gradient_accumulation_steps", 0),
    ("trainer_config", "gradient_accumulation_steps", 2048),
    ("trainer_config", "learning_rate", 0),
    ("trainer_config", "learning_rate", 1),
    ("trainer_config", "learning_rate", -1e-4),
    ("trainer_config", "save_total_limit", 0),
    ("trainer_config", "logging_steps", 0),
    ("trainer_config", "dataloader_num_workers", 9),
    ("trainer_config", "dataloader_num_workers", -1),
    ("trainer_config", "warmup_steps", -1),
    ("trainer_config", "seed", -1),
    ("trainer_config", "eval_fraction", 0.5),
    ("trainer_config", "eval_fraction", -0.1),
    ("tokenizer_config", "model_max_length", 7),
    ("tokenizer_config", "model_max_length", 32769),
    ("peft_config", "r", 0),
    ("peft_config", "r", 1025),
    ("peft_config", "lora_alpha", 0),
    ("peft_config", "lora_dropout", 1),
    ("peft_config", "lora_dropout", -0.1),
]


@pytest.mark.parametrize(("setting", "key", "value"), BAD_VALUES)
def test_out_of_range(setting: str, key: str, value: Any) -> None:
    error = refused({setting: {key: value}})
    assert error.key == f"{setting}.{key}"
    assert f"{setting}.{key} must be" in error.message and "got" in error.message


GOOD_EDGES = [
    ("trainer_config", "num_train_epochs", 100),
    ("trainer_config", "num_train_epochs", 0.5),
    ("trainer_config", "max_steps", -1),
    ("trainer_config", "max_steps", 1_000_000),
    ("trainer_config", "per_device_train_batch_size", 1024),
    ("trainer_config", "gradient_accumulation_steps", 1),
    ("trainer_config", "learning_rate", 0.5),
    ("trainer_config", "dataloader_num_workers", 8),
    ("trainer_config", "logging_steps", 0.1),
    ("trainer_config", "warmup_steps", 0.05),
    ("trainer_config", "eval_fraction", 0.0),
    ("tokenizer_config", "model_max_length", 8),
    ("tokenizer_config", "model_max_length", 32768),
    ("peft_config", "r", 1024),
    ("peft_config", "lora_dropout", 0.0),
]


@pytest.mark.parametrize(("setting", "key", "value"), GOOD_EDGES)
def test_in_range_edges(setting: str, key: str, value: Any) -> None:
    assert getattr(resolve({setting: {key: value}}), setting)[key] == value


@pytest.mark.parametrize("value", [-1, 100.5, 150, "5", True])
def test_tolerance_range(value: Any) -> None:
    assert refused({"invalid_data_tolerance_percent": value}).key == "invalid_data_tolerance_percent"


def test_tolerance_default_and_cast() -> None:
    assert resolve().invalid_data_tolerance_percent == 5.0
    assert resolve({"invalid_data_tolerance_percent": None}).invalid_data_tolerance_percent == 5.0
    seven = resolve({"invalid_data_tolerance_percent": 7}).invalid_data_tolerance_percent
    assert seven == 7.0 and type(seven) is float
    assert resolve({"invalid_data_tolerance_percent": 0}).invalid_data_tolerance_percent == 0.0
    assert resolve({"invalid_data_tolerance_percent": 100}).invalid_data_tolerance_percent == 100.0


# ---- whole-class checks ----------------------------------------------------------------------------


def test_training_arguments_combination_errors_blame_a_key() -> None:
    error = refused({"trainer_config": {"fp16": True, "bf16": True}})
    assert error.key == "trainer_config.fp16" and "TrainingArguments" in error.message


def test_load_best_model_needs_matching_strategies() -> None:
    error = refused(
        {
            "trainer_config": {
                "load_best_model_at_end": True,
                "eval_strategy": "steps",
                "save_strategy": "epoch",
            }
        }
    )
    assert error.key.startswith("trainer_config")


def test_bf16_on_a_cpu_only_machine_still_validates() -> None:
    """Validation is hardware-independent (the server may be CPU-only, the worker not)."""
    assert resolve({"trainer_config": {"bf16": True}}).trainer_config["bf16"] is True


@pytest.mark.parametrize(
    ("peft", "key"),
    [
        ({"peft_type": "PREFIX_TUNING"}, "peft_config.peft_type"),
        ({"task_type": "SEQ_CLS"}, "peft_config.task_type"),
        ({"inference_mode": True}, "peft_config.inference_mode"),
        ({"bias": "some"}, "peft_config.bias"),
        ({"init_lora_weights": "random"}, "peft_config.init_lora_weights"),
    ],
)
def test_lora_refusals(peft: dict[str, Any], key: str) -> None:
    assert refused({"peft_config": peft}).key == key


def test_lora_only_message_mentions_full_fine_tuning() -> None:
    assert "full fine-tuning" in refused({"peft_config": {"peft_type": "IA3"}}).message


def test_lora_accepts_its_own_options() -> None:
    resolved = resolve(
        {"peft_config": {"use_rslora": True, "init_lora_weights": "pissa_niter_4", "inference_mode": False}}
    )
    assert resolved.peft_config["init_lora_weights"] == "pissa_niter_4"


def test_gptq_template_keeps_legacy_use_exllama_and_checks_bits() -> None:
    assert resolve(template=GPTQ_TEMPLATE).quantization_config == {"bits": 4, "use_exllama": False}
    error = refused({"quantization_config": {"bits": 5}}, template=GPTQ_TEMPLATE)
    assert error.key == "quantization_config.bits" and "GPTQConfig" in error.message


def test_bitsandbytes_config() -> None:
    resolved = resolve({"quantization_config": {"load_in_4bit": True, "bnb_4bit_compute_dtype": "torch.bfloat16"}})
    assert resolved.quantization_config == {"load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16"}
    assert refused({"quantization_config": {"load_in_4bit": True, "load_in_8bit": True}}).key.startswith(
        "quantization_config"
    )
    assert refused({"quantization_config": {"load_in_8bit": False}}).key.startswith("quantization_config")
    assert refused({"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf5"}}).key == (
        "quantization_config.bnb_4bit_quant_type"
    )


@pytest.mark.parametrize(
    "quant",
    [{"bits": 4, "load_in_4bit": True}, {"group_size": 64}, {"quant_method": "awq"}],
)
def test_quantization_method_must_be_clear(quant: dict[str, Any]) -> None:
    assert refused({"quantization_config": quant}).key.startswith("quantization_config")


def test_response_headers_validated() -> None:
    resolved = resolve({"tokenizer_config": {"response_headers": ["Reply", "answer"]}})
    assert resolved.tokenizer_config["response_headers"] == ["Reply", "answer"]
    assert resolve({"tokenizer_config": {"response_headers": "Reply"}}).tokenizer_config["response_headers"] == [
        "Reply"
    ]
    for bad in ([], ["ok", ""], ["### x:"]):
        assert refused({"tokenizer_config": {"response_headers": bad}}).key == "tokenizer_config.response_headers"


# ---- merge semantics -------------------------------------------------------------------------------


def test_merge_user_key_replaces_none_removes_defaults_kept() -> None:
    defaults = get_template(DEFAULT_TEMPLATE).default_settings()["trainer_config"]
    resolved = resolve({"trainer_config": {"learning_rate": 5e-4, "weight_decay": None, "max_steps": 10}})
    trainer = resolved.trainer_config
    assert trainer["learning_rate"] == 5e-4
    assert "weight_decay" not in trainer
    assert trainer["max_steps"] == 10
    for key in ("num_train_epochs", "per_device_train_batch_size", "seed", "lr_scheduler_type"):
        assert trainer[key] == defaults[key]


def test_nested_objects_are_replaced_not_merged() -> None:
    first = {"rope_scaling": {"type": "linear", "factor": 2.0}}
    resolved = resolve({"model_config": first})
    assert resolved.model_config["rope_scaling"] == {"type": "linear", "factor": 2.0}


def test_a_setting_given_as_null_starts_from_nothing() -> None:
    resolved = resolve({"trainer_config": None})
    assert resolved.trainer_config == TRAINER_EXTENSIONS
    assert resolve({"peft_config": None}).peft_config == {}


def test_empty_peft_config_means_full_fine_tuning() -> None:
    assert resolve({"peft_config": {}}).peft_config == {}


def test_empty_quantization_config_means_none_and_passes_on_cpu() -> None:
    resolved = resolve({"quantization_config": {}}, template=GPTQ_TEMPLATE)
    assert resolved.quantization_config == {}
    require_supported_hardware(resolved, cuda_available=False)


def test_empty_dict_elsewhere_overrides_nothing() -> None:
    assert resolve({"tokenizer_config": {}, "trainer_config": {}}) == resolve()


def test_switching_quantization_method_drops_the_other_methods_keys() -> None:
    resolved = resolve({"quantization_config": {"load_in_4bit": True}}, template=GPTQ_TEMPLATE)
    assert resolved.quantization_config == {"load_in_4bit": True}


def test_partial_peft_override_merges_into_template_lora() -> None:
    resolved = resolve({"peft_config": {"r": 4}})
    assert resolved.peft_config["r"] == 4 and resolved.peft_config["lora_alpha"] == 32


def test_overrides_must_be_an_object_of_known_settings() -> None:
    for bad in ([], "x", 3):
        with pytest.raises(SettingsError):
            resolve_settings(get_template(DEFAULT_TEMPLATE), bad)  # type: ignore[arg-type]
    with pytest.raises(SettingsError):
        resolve({"trainer_config": [1, 2]})
    with pytest.raises(SettingsError):
        resolve({"trainer_config": {1: 2}})  # type: ignore[dict-item]


# ---- JSON ------------------------------------------------------------------------------------------


def test_parse_settings_json_ok() -> None:
    assert parse_settings_json('{"learning_rate": 0.0002, "fp16": true}', "trainer_config") == {
        "learning_rate": 0.0002,
        "fp16": True,
    }


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": 1,}', "line 1 column 9"),
        ("{'a': 1}", "line 1 column 2"),
        ('{\n  "a": True\n}', "line 2 column 8"),
        ("", "line 1 column 1"),
    ],
)
def test_parse_settings_json_reports_line_and_column(text: str, where: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings_json(text, "trainer_config")
    assert info.value.message.startswith("trainer_config is not valid JSON: ")
    assert where in info.value.message
    assert info.value.key == "trainer_config"


@pytest.mark.parametrize("text", ["[1]", "3", '"x"', "null", '{"a": NaN}', '{"a": Infinity}'])
def test_parse_settings_json_refuses_non_objects_and_non_json_numbers(text: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings_json(text, "peft_config")
    assert info.value.key == "peft_config"


# ---- hardware --------------------------------------------------------------------------------------


def test_gptq_template_on_cpu_gets_a_plain_message() -> None:
    resolved = resolve(template=GPTQ_TEMPLATE)
    with pytest.raises(SettingsError) as info:
        require_supported_hardware(resolved, cuda_available=False)
    assert info.value.message == (
        f"Template {GPTQ_TEMPLATE} uses 4-bit GPTQ quantization, which needs an NVIDIA GPU; this machine "
        f"has none. Pick a non-quantized template (e.g. {DEFAULT_TEMPLATE}) or set quantization_config "
        "to {}."
    )
    assert info.value.key == "quantization_config"
    require_supported_hardware(resolved, cuda_available=True)


def test_every_gpu_template_is_refused_on_cpu_and_others_pass() -> None:
    for template in TEMPLATES:
        resolved = resolve_settings(template)
        if template.requires_gpu:
            with pytest.raises(SettingsError):
                require_supported_hardware(resolved, cuda_available=False)
        else:
            require_supported_hardware(resolved, cuda_available=False)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"quantization_config": {"load_in_8bit": True}}, "quantization_config"),
        ({"model_config": {"attn_implementation": "flash_attention_2"}}, "model_config.attn_implementation"),
        ({"trainer_config": {"tf32": True}}, "trainer_config.tf32"),
        ({"trainer_config": {"bf16": True}}, "trainer_config.bf16"),
    ],
)
def test_gpu_only_settings_on_cpu(overrides: dict[str, Any], key: str) -> None:
    resolved = resolve(overrides)
    with pytest.raises(SettingsError) as info:
        require_supported_hardware(resolved, cuda_available=False)
    assert info.value.key == key and "GPU" in info.value.message
    require_supported_hardware(resolved, cuda_available=True)


def test_bitsandbytes_message_names_the_model() -> None:
    resolved = resolve({"quantization_config": {"load_in_8bit": True}})
    with pytest.raises(SettingsError) as info:
        require_supported_hardware(resolved, cuda_available=False)
    assert "8-bit bitsandbytes quantization" in info.value.message
    assert f"Template {DEFAULT_TEMPLATE}" in info.value.message


def test_bf16_with_use_cpu_passes_on_cpu() -> None:
    resolved = resolve({"trainer_config": {"bf16": True, "use_cpu": True}})
    require_supported_hardware(resolved, cuda_available=False)


# ---- TrainingSettings ------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip() -> None:
    resolved = resolve({"trainer_config": {"learning_rate": 1e-4}, "invalid_data_tolerance_percent": 2})
    data = json.loads(json.dumps(resolved.to_dict()))
    assert TrainingSettings.from_dict(data) == resolved
    data["trainer_config"]["learning_rate"] = 0.5  # to_dict is a copy
    assert resolved.trainer_config["learning_rate"] == 1e-4


def test_from_dict_checks_the_shape() -> None:
    data = resolve().to_dict()
    del data["peft_config"]
    with pytest.raises(SettingsError):
        TrainingSettings.from_dict(data)
    with pytest.raises(SettingsError):
        TrainingSettings.from_dict({**resolve().to_dict(), "extra": 1})
    with pytest.raises(SettingsError):
        TrainingSettings.from_dict({**resolve().to_dict(), "model_config": "x"})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve().invalid_data_tolerance_percent = 3.0  # type: ignore[misc]


# ---- side effects and speed ------------------------------------------------------------------------


def test_validation_creates_no_files_and_leaves_cuda_and_accelerate_alone() -> None:
    import torch
    from accelerate.state import PartialState

    before = dict(PartialState._shared_state)
    listing = set(os.listdir(tempfile.gettempdir()))
    cwd_listing = set(os.listdir("."))
    resolve({"trainer_config": {"torch_compile": True, "tf32": False, "report_to": "tensorboard"}})
    assert set(os.listdir(tempfile.gettempdir())) - listing == set()
    assert set(os.listdir(".")) == cwd_listing
    assert not torch.cuda.is_initialized()
    assert dict(PartialState._shared_state) == before


def test_validation_is_fast_after_first_use() -> None:
    resolve()
    overrides = {"trainer_config": {"learning_rate": 1e-4, "num_train_epochs": 2.0}, "peft_config": {"r": 8}}
    start = time.perf_counter()
    for _ in range(20):
        resolve(overrides)
    assert (time.perf_counter() - start) / 20 < 0.05


def test_importing_templates_does_not_import_transformers() -> None:
    code = "import sys, tuneloom.templates; print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---- property tests --------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_PLAUSIBLE = st.sampled_from(
    [0, 1, 2, 8, 16, 512, 0.0, 0.1, 0.5, 1.0, 3.0, 1e-4, -1, True, False, "auto", "none", "steps", "epoch",
     "linear", "cosine", "LORA", "CAUSAL_LM", "float16", "bf16", "tensorboard", "wandb", ["q_proj"], {}, None]
)  # fmt: skip
_KEYS_BY_SETTING = {
    "trainer_config": [
        "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "fp16", "bf16",
        "eval_strategy", "save_strategy", "eval_steps", "save_steps", "logging_steps", "warmup_steps",
        "load_best_model_at_end", "metric_for_best_model", "report_to", "optim", "lr_scheduler_type",
        "gradient_accumulation_steps", "torch_compile", "dataloader_num_workers",
        "dataloader_prefetch_factor",
        "accelerator_config", "lr_scheduler_kwargs", "debug", "include_num_input_tokens_seen", "packing",
        "train_on_prompt", "eval_fraction", "save_total_limit", "torch_empty_cache_steps", "use_cpu",
        "evaluation_strategy", "seed", "output_dir", "hub_model_id", "trackio_space_id",
    ],
    "model_config": [
        "pretrained_model_name_or_path", "pretrained_model_name", "torch_dtype", "dtype", "device_map",
        "attn_implementation", "rope_scaling", "use_cache", "revision", "trust_remote_code", "cache_dir",
    ],
    "tokenizer_config": [
        "model_max_length", "padding_side", "response_headers", "pad_token", "use_fast", "token",
    ],
    "peft_config": [
        "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "init_lora_weights",
        "bias", "layers_to_transform", "rank_pattern", "inference_mode", "use_dora", "modules_to_save",
    ],
    "quantization_config": [
        "bits", "group_size", "damp_percent", "use_exllama", "desc_act", "load_in_4bit", "load_in_8bit",
        "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "quant_method", "dataset", "tokenizer",
    ],
}  # fmt: skip


def _setting(name: str) -> st.SearchStrategy[Any]:
    known = st.sampled_from(_KEYS_BY_SETTING[name])
    keys = st.one_of(known, known, known, st.text(max_size=8))
    values = st.one_of(_PLAUSIBLE, _PLAUSIBLE, _JSON)
    return st.one_of(st.dictionaries(keys, values, max_size=3), st.dictionaries(keys, values, max_size=3), _JSON)


# One setting with known keys and plausible values: often valid, so the fixed-point test has work.
_ONE_SETTING = st.sampled_from(SETTING_NAMES).flatmap(
    lambda name: st.fixed_dictionaries(
        {name: st.dictionaries(st.sampled_from(_KEYS_BY_SETTING[name]), _PLAUSIBLE, max_size=3)}
    )
)
_OVERRIDES = st.one_of(
    _ONE_SETTING,
    _ONE_SETTING,
    *[
        st.fixed_dictionaries(
            {},
            optional={
                **{name: _setting(name) for name in SETTING_NAMES},
                "invalid_data_tolerance_percent": st.one_of(_PLAUSIBLE, _SCALARS),
            },
        )
    ]
    * 4,
    st.dictionaries(st.text(max_size=6), _JSON, max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(TEMPLATES), overrides=_OVERRIDES, remote=st.booleans())
def test_arbitrary_overrides_give_settings_or_settings_error(template: Any, overrides: Any, remote: bool) -> None:
    try:
        resolved = resolve_settings(template, overrides, allow_remote_loggers=remote)
    except SettingsError as exc:
        assert exc.message
        return
    data = resolved.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def _has_none(overrides: dict[str, Any]) -> bool:
    return any(v is None or (isinstance(v, dict) and None in v.values()) for v in overrides.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(TEMPLATES), overrides=_ONE_SETTING | _OVERRIDES)
def test_resolved_settings_are_a_fixed_point(template: Any, overrides: Any) -> None:
    """Feeding the output back as overrides changes nothing: the normal form is stable."""
    try:
        resolved = resolve_settings(template, overrides, allow_remote_loggers=True)
    except SettingsError:
        return
    if _has_none(overrides):
        return  # removed defaults would come back from the template
    assert resolve_settings(template, resolved.to_dict(), allow_remote_loggers=True) == resolved
