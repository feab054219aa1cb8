"""Apps, datasets, uploads and dataset versions: request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tuneloom.store.db import MAX_INTEGER, MIN_INTEGER

# An input number as the database can compare it: a bigger one is a 422 naming it, not a database error.
InputNumber = Annotated[int, Field(ge=MIN_INTEGER, le=MAX_INTEGER)]


class AppCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="a slug: lowercase letters, digits, '_' or '-'")
    name: str = Field(default="", max_length=200)


class AppOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime
    primary_input_type: str = "text"


class ErrorOut(BaseModel):
    code: str
    message: str


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str | None = Field(default=None, max_length=200)


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    app_id: str
    name: str
    created_at: datetime


class InvalidRowOut(BaseModel):
    line: int
    reason: str
    excerpt: str = ""


class UploadReport(BaseModel):
    """The validation report of one upload: what was stored and what was refused, line by line."""

    upload_id: str
    source_file: str
    format: str
    total_rows: int
    valid_rows: int
    invalid_rows: int
    invalid_percent: float
    invalid: list[InvalidRowOut]


class InputOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    line: int
    prompt: str
    completion: str
    source_file: str


class InputPageOut(BaseModel):
    items: list[InputOut]
    next_after: int | None
    total: int


class InputsDelete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seqs: list[InputNumber] | None = Field(default=None, description="input numbers; omit to delete every input")


class DatasetVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    state: str
    message: str | None
    content_hash: str | None
    example_count: int | None
    stats: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None
