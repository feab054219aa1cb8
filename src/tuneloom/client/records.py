"""Plain records the server answers with, as typed dataclasses instead of bare dicts.

`build()` keeps only the fields a record declares, so a newer server that adds fields does not
break an older SDK, and turns ISO timestamps (`*_at`) into datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

TRAINED = "MODEL_TRAINED"
# Statuses that change on their own; every other status is final.
IN_PROGRESS = frozenset({"MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING"})


def build(cls: type[T], data: dict[str, Any], **extra: Any) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: _time(v) if k.endswith("_at") else v for k, v in data.items() if k in names}
    return cls(**values, **extra)


def _time(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class DatasetVersion:
    """An immutable snapshot of a dataset's inputs: READY (trainable) or FAILURE with a message."""

    id: str
    state: str
    message: str | None = None
    content_hash: str | None = None
    example_count: int | None = None
    stats: dict[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class InvalidRow:
    line: int
    reason: str
    excerpt: str = ""


@dataclass(frozen=True)
class UploadReport:
    """What an upload stored and, line by line, what it refused."""

    upload_id: str
    source_file: str
    format: str
    total_rows: int
    valid_rows: int
    invalid_rows: int
    invalid_percent: float = 0.0
    invalid: list[InvalidRow] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadReport:
        rows = [build(InvalidRow, row) for row in data.get("invalid", [])]
        return build(cls, {**data, "invalid": rows})


@dataclass(frozen=True)
class Input:
    """One stored example of a dataset; `seq` numbers it within the dataset (used to delete it)."""

    seq: int
    prompt: str
    completion: str
    line: int = 0
    source_file: str = ""


@dataclass(frozen=True)
class Progress:
    step: int | None = None
    total_steps: int | None = None
    percent: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class TrainingStatus:
    """Where a model version's training stands: `name`/`code` as the hosted product spells them."""

    name: str
    code: int
    message: str | None = None
    progress: Progress = field(default_factory=Progress)
    queue_position: int | None = None
    attempts: int = 0
    metrics: dict[str, Any] | None = None
    version_id: str = ""

    @property
    def finished(self) -> bool:
        """True once the status can no longer change by itself (trained, failed or cancelled)."""
        return self.name not in IN_PROGRESS

    @property
    def trained(self) -> bool:
        return self.name == TRAINED


@dataclass(frozen=True)
class ModelVersion:
    """One training run of a model: its settings, data, and `status` (a TrainingStatus)."""

    id: str
    model_id: str
    status: TrainingStatus
    template: str = ""
    dataset_version_id: str | None = None
    resume_from_model: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelVersion:
        raw = data.get("status") or {}
        status = TrainingStatus(
            name=str(raw.get("name", "")),
            code=int(raw.get("code", 0)),
            message=raw.get("message"),
            progress=build(Progress, data.get("progress") or {}),
            queue_position=data.get("queue_position"),
            attempts=int(data.get("attempts") or 0),
            metrics=data.get("metrics"),
            version_id=str(data["id"]),
        )
        return build(cls, {**data, "status": status})


@dataclass(frozen=True)
class MetricPoint:
    step: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricPoint:
        return build(cls, {**data, "at": _time(data.get("at"))})


@dataclass(frozen=True)
class LogLine:
    seq: int
    message: str
    level: str = "INFO"
    at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogLine:
        return build(cls, {**data, "at": _time(data.get("at"))})
