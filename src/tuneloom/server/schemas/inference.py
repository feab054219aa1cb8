"""Predictions: request and response bodies of …/predict and …/generate.

`inference_params` stays a plain dict here: `InferenceParams.from_dict` validates it with the same
rules (and the same error naming the bad key) as the CLI, so the two can never drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneloom.server.schemas.openai import FinishReason

MAX_INPUT_CHARS = 65_536  # one input; a prompt beyond any model's context would only waste CPU


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(description="1 to 128 texts; outputs come back in the same order")
    version: str | None = Field(default=None, description="a model version id; null: the latest trained one")
    inference_params: dict[str, Any] = Field(default_factory=dict, description="max_tokens, temperature, stop, …")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str
    version: str | None = None
    inference_params: dict[str, Any] = Field(default_factory=dict)


class PredictionOut(BaseModel):
    text: str
    finish_reason: FinishReason
    tokens: int = Field(description="new tokens generated")


class PredictResponse(BaseModel):
    model_version_id: str
    outputs: list[PredictionOut]
