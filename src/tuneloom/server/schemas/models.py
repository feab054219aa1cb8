"""Models, training requests and model versions (training runs): request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core.core_schema import ValidationInfo

from tuneloom.export_gguf import DEFAULT_GGUF_TYPE, GGUF_TYPES
from tuneloom.store.models import Model, ModelVersion

EXPORT_FORMATS = ("adapter", "merged", "gguf")  # `tuneloom export`, `--merged`, `--gguf`


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="a slug: lowercase letters, digits, '_' or '-'")
    model_type_id: str = "text-to-text"


class ModelOut(BaseModel):
    id: str
    app_id: str
    model_type_id: str
    created_at: datetime

    @classmethod
    def of(cls, model: Model) -> ModelOut:
        return cls(id=model.id, app_id=model.app_id, model_type_id=model.model_type_id, created_at=model.created_at)


class SettingsOut(BaseModel):
    """A template's defaults for the five settings and the tolerance, like the hosted SDK's `get_params`."""

    model_config = ConfigDict(populate_by_name=True)

    template: str
    model_config_: dict[str, Any] = Field(alias="model_config")
    quantization_config: dict[str, Any]
    peft_config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    trainer_config: dict[str, Any]
    invalid_data_tolerance_percent: float


SETTING_NAMES = (
    "model_config",
    "quantization_config",
    "peft_config",
    "tokenizer_config",
    "trainer_config",
    "invalid_data_tolerance_percent",
    "distributed",
)


class SettingsRequest(BaseModel):
    """A template and the settings a user gives; omitted ones keep the template's defaults."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    template: str
    model_config_: dict[str, Any] | None = Field(default=None, alias="model_config")
    quantization_config: dict[str, Any] | None = None
    peft_config: dict[str, Any] | None = None
    tokenizer_config: dict[str, Any] | None = None
    trainer_config: dict[str, Any] | None = None
    invalid_data_tolerance_percent: float | None = None
    distributed: dict[str, Any] | None = Field(
        default=None, description="several processes on the worker's machine: strategy, num_processes (README)"
    )

    def overrides(self) -> dict[str, Any]:
        """The settings the user gave, under the names `resolve_settings` takes."""
        given = self.model_dump(by_alias=True, exclude_none=True)
        return {k: v for k, v in given.items() if k in SETTING_NAMES}


class TrainRequest(SettingsRequest):
    """One training run. Given setting keys override the template's defaults one by one."""

    dataset_version_id: str
    resume_from_model: str | None = Field(default=None, description="an earlier MODEL_TRAINED version to start from")


class StatusOut(BaseModel):
    name: str
    code: int
    message: str | None = None


class ProgressOut(BaseModel):
    step: int | None = None
    total_steps: int | None = None
    percent: float | None = None
    eta_s: float | None = None


class ModelVersionOut(BaseModel):
    id: str
    model_id: str
    template: str
    dataset_version_id: str | None
    resume_from_model: str | None
    settings: dict[str, Any]
    status: StatusOut
    progress: ProgressOut
    queue_position: int | None = None
    attempts: int
    metrics: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(
        cls,
        version: ModelVersion,
        model_id: str,
        *,
        queue_position: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ModelVersionOut:
        step, total = version.step, version.total_steps
        percent = round(100.0 * step / total, 1) if step is not None and total else None
        return cls(
            id=version.id,
            model_id=model_id,
            template=version.template,
            dataset_version_id=version.dataset_version_id,
            resume_from_model=version.resume_from,
            settings=version.settings,
            status=StatusOut(name=version.status, code=version.status_code, message=version.message),
            progress=ProgressOut(step=step, total_steps=total, percent=percent, eta_s=version.eta_s),
            queue_position=queue_position,
            attempts=version.attempts,
            metrics=metrics,
            created_at=version.created_at,
            started_at=version.started_at,
            finished_at=version.finished_at,
        )


class MetricPointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    point: int = Field(
        validation_alias=AliasChoices("point", "pk"),
        description="numbers the points in the order recorded (with gaps); events?after_point= goes on after it",
    )
    step: int
    loss: float | None
    eval_loss: float | None
    learning_rate: float | None
    at: datetime


class LogLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    level: str
    message: str


class ExportRequest(BaseModel):
    """How to pack a trained version for download: as `tuneloom export` writes it, zipped."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(
        default="adapter",
        description="adapter: the LoRA adapter (peft); merged: LoRA folded into the base weights (plain "
        "transformers); gguf: one file for llama.cpp / Ollama, LoRA merged",
    )
    gguf_type: str | None = Field(default=None, description="the GGUF weights' type (format gguf only; default f16)")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        return _one_of(value, EXPORT_FORMATS)

    @field_validator("gguf_type")
    @classmethod
    def _known_type(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("format", "gguf") != "gguf":
            raise ValueError(f"gguf_type applies to format 'gguf' only, not '{info.data['format']}'")
        return None if value is None else _one_of(value, GGUF_TYPES)

    @model_validator(mode="after")
    def _default_type(self) -> ExportRequest:
        if self.format == "gguf" and self.gguf_type is None:
            self.gguf_type = DEFAULT_GGUF_TYPE
        return self


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"'{value}' is not one of {', '.join(allowed)}")
    return value


class ExportOut(BaseModel):
    """A built export and a link to it that needs no API key (a browser saves it; `curl -C -` resumes it)."""

    format: str
    gguf_type: str | None
    file_name: str
    size_bytes: int
    sha256: str
    download_url: str = Field(description="relative to the server; works without a key until expires_at")
    expires_at: datetime
