"""What a resume compares: a setting given at the value the library takes when it is left out changes nothing."""

from __future__ import annotations

from typing import Any

from tuneloom.train.run_record import differences


def record(**settings: Any) -> dict[str, Any]:
    return {"record_format": 1, "template": "tiny-random", "data_format": "text", "settings": settings}


def test_a_setting_given_at_its_library_default_resumes_as_if_left_out() -> None:
    started = record(trainer_config={"num_train_epochs": 2}, peft_config={"r": 4})
    explicit = record(
        trainer_config={
            "num_train_epochs": 2,
            "weight_decay": 0.0,
            "lr_scheduler_type": "linear",
            "max_steps": -1,
            "optim_args": None,
        },
        peft_config={"r": 4, "lora_dropout": 0.0, "bias": "none"},
    )
    assert differences(started, explicit) == []
    assert differences(explicit, started) == []


def test_a_setting_off_its_default_is_still_refused_and_shown_as_given() -> None:
    started = record(trainer_config={"num_train_epochs": 2})
    changed = record(trainer_config={"num_train_epochs": 2, "weight_decay": 0.1, "max_steps": 2})
    assert differences(started, changed) == [
        ("trainer_config.max_steps", "trainer_config.max_steps was (not set), now 2"),
        ("trainer_config.weight_decay", "trainer_config.weight_decay was (not set), now 0.1"),
    ]


def test_an_adapter_at_lora_defaults_is_not_the_full_fine_tune_the_run_started_as() -> None:
    full = record(trainer_config={}, peft_config={})
    lora = record(trainer_config={}, peft_config={"r": 8})  # 8 is LoraConfig's default rank
    assert differences(full, lora) == [("peft_config.r", "peft_config.r was (not set), now 8")]
