"""The OpenAI-compatible routes' bodies, in OpenAI's own shapes, so the `openai` package works unchanged.

Only what tuneloom can honour is accepted with meaning; fields the official client may send that
change nothing here (user, seed, penalties, …) are accepted and ignored, as OpenAI-compatible
servers commonly do. `n` must be 1. Fields that would change what the answer holds (logprobs, echo,
best_of, content parts other than text) are declared here so that they are refused by name:
ignored, the client would read an answer that is not the one it asked for.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

FinishReason = Literal["stop", "length"]


def finish_reason(reason: str | None) -> FinishReason:
    """tuneloom's generations end for OpenAI's two reasons: out of tokens, or stopped (EOS, a stop string)."""
    return "length" if reason == "length" else "stop"


class ResponseHead(TypedDict):
    """What every response and chunk of one request shares."""

    id: str
    created: int
    model: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """What completions and chat completions share; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="'<app_id>/<model_id>' (latest trained) or '<app_id>/<model_id>/<version_id>'")
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = 1
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = None  # not supported: refused unless null
    echo: bool | None = None  # not supported: refused when true
    best_of: int | None = None  # not supported: refused above 1


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def text_parts_only(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        """An image or audio part dropped silently would leave the model answering another question."""
        for part in content if isinstance(content, list) else ():
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(
                    f"only text content parts ({{'type': 'text', 'text': …}}) are supported, got {part.get('type')!r}"
                )
        return content

    def text(self) -> str:
        """The message's text; a list of (text) content parts is joined."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(str(part["text"]) for part in self.content)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None  # not supported: refused when true
    top_logprobs: int | None = None  # not supported: refused unless null or 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody
