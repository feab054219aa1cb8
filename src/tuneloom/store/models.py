"""The platform's tables, as SQLAlchemy 2 typed declarative models.

Apps own everything below them and deleting one removes it all (`ON DELETE CASCADE` in the schema,
so it holds on PostgreSQL and on SQLite with foreign keys on, whoever deletes the row). Datasets
and models have user-chosen slugs unique within their app, so they get an integer surrogate key
(`pk`) that children point at; versions, uploads and keys have random, globally unique ids.
Statuses are stored as their names (readable in SQL) with the hosted product's numeric code beside.
The initial Alembic revision mirrors this file; `tests/test_store_migrations.py` checks they agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    inspect,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tuneloom.store.ids import ConflictError

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
ID = String(64)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite has no time zones: store naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class DatasetVersionState(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    READY = "READY"
    FAILURE = "FAILURE"


class TrainingStatus(enum.Enum):
    """A model version's status: the hosted product's names and codes, plus a cancelled state.

    MODEL_TRAINING_CANCELLED (21120) is tuneloom's own: the hosted product has no code for a run the
    user stopped, and 21120 is the next free number after the invalid-data code 21119.
    """

    MODEL_TRAINED = 21100
    MODEL_TRAINING = 21101
    MODEL_QUEUED_FOR_TRAINING = 21103
    MODEL_TRAINING_FAILED = 21106
    MODEL_TRAINING_INVALID_PARAMS = 21118
    MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED = 21119
    MODEL_TRAINING_CANCELLED = 21120

    @property
    def code(self) -> int:
        return self.value

    @property
    def is_final(self) -> bool:
        return self not in (TrainingStatus.MODEL_QUEUED_FOR_TRAINING, TrainingStatus.MODEL_TRAINING)


QUEUED = TrainingStatus.MODEL_QUEUED_FOR_TRAINING.name
RUNNING = TrainingStatus.MODEL_TRAINING.name


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Only the key's hash and a display prefix are kept; `app_id` NULL means an admin key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    app_id: Mapped[str | None] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("app_id", "id", name="uq_datasets_app_id_id"),)

    pk: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(String(200))
    next_seq: Mapped[int] = mapped_column(default=1)  # input numbers are handed out from here, never reused
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """One uploaded file: its validation report (the valid rows became `Input`s)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    dataset_pk: Mapped[int] = mapped_column(ForeignKey("datasets.pk", ondelete="CASCADE"), index=True)
    source_file: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    valid_rows: Mapped[int]
    invalid_rows: Mapped[int]
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Input(Base):
    __tablename__ = "inputs"
    __table_args__ = (UniqueConstraint("dataset_pk", "seq", name="uq_inputs_dataset_pk_seq"),)

    pk: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dataset_pk: Mapped[int] = mapped_column(ForeignKey("datasets.pk", ondelete="CASCADE"))
    upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id", ondelete="SET NULL"), index=True)
    seq: Mapped[int]
    line: Mapped[int]
    prompt: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)
    source_file: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    """A content-hashed snapshot; its examples live in a JSONL artifact (`artifact_path`, data-dir relative)."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    dataset_pk: Mapped[int] = mapped_column(ForeignKey("datasets.pk", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=DatasetVersionState.PENDING.value)
    message: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    example_count: Mapped[int | None]
    stats: Mapped[dict[str, Any] | None]
    artifact_path: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # Who builds it and its last sign of life, while unfinished (`tuneloom.store.builders`).
    builder: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("app_id", "id", name="uq_models_app_id_id"),)

    pk: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    model_type_id: Mapped[str] = mapped_column(String(32), default="text-to-text")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """One training run, and the queue's job row: status, progress, lease and cancel flag live here."""

    __tablename__ = "model_versions"
    __table_args__ = (Index("ix_model_versions_queue", "status", "created_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    model_pk: Mapped[int] = mapped_column(ForeignKey("models.pk", ondelete="CASCADE"), index=True)
    dataset_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL"), index=True
    )
    resume_from: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    template: Mapped[str] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(64), default=QUEUED)
    status_code: Mapped[int] = mapped_column(default=TrainingStatus.MODEL_QUEUED_FOR_TRAINING.code)
    message: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int | None]
    total_steps: Mapped[int | None]
    eta_s: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    artifact_path: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # What the run needs from its worker (tuneloom.templates.requirements), matched when claiming.
    needs_cuda: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    needs_memory_mb: Mapped[int | None]
    needs_gpu_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # one per process

    @property
    def status_enum(self) -> TrainingStatus:
        return TrainingStatus[self.status]


class Worker(Base):
    """A worker slot's advertised capacity and its last sign of life (`tuneloom.store.workers`)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:slot, the jobs' worker_id
    host: Mapped[str] = mapped_column(String(255))
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_mb: Mapped[int] = mapped_column(Integer, default=0)  # the smallest GPU's, 0 without one
    cpu_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    lease_s: Mapped[float] = mapped_column(Float)  # silent for longer than this: no longer live
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class GenerationNode(Base):
    """A server that generates for others (`serve --advertise-url`) and its last sign of life (`store.nodes`)."""

    __tablename__ = "generation_nodes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid
    url: Mapped[str] = mapped_column(String(1024))
    backend: Mapped[str] = mapped_column(String(32))
    token: Mapped[str] = mapped_column(String(128))  # what callers present; the database is already trusted
    lease_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class GenerationSlot(Base):
    """One generation a key has running on some server, held while that server lives (`store.generation_slots`)."""

    __tablename__ = "generation_slots"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # below the limit: the cap is the key space
    holder: Mapped[str] = mapped_column(String(128), index=True)  # host:pid of the server running it
    expires_at: Mapped[datetime]


class KeyPepperCheck(Base):
    """One row: a fingerprint of the pepper the database's keys are hashed with (`keys.check_pepper`)."""

    __tablename__ = "key_pepper_check"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one pepper per database
    fingerprint: Mapped[str] = mapped_column(String(64))
    recorded_by: Mapped[str] = mapped_column(String(255))  # host:data dir of the server that recorded it


class MetricPoint(Base):
    __tablename__ = "metric_points"

    pk: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (UniqueConstraint("model_version_id", "seq", name="uq_log_lines_model_version_id_seq"),)

    pk: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    seq: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


@event.listens_for(DatasetVersion, "before_update")
def _refuse_changing_ready(_mapper: Any, _connection: Any, target: DatasetVersion) -> None:
    """A READY version is immutable: any ORM update to its row is refused."""
    history = inspect(target).attrs.state.history
    previous = history.deleted[0] if history.deleted else target.state
    if previous == DatasetVersionState.READY.value:
        raise ConflictError(f"dataset version '{target.id}' is READY and cannot change")
