"""Request and response bodies (pydantic), kept apart from routes and storage."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


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
