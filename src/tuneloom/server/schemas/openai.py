"""The OpenAI-compatible routes' bodies, in OpenAI's own shapes, so the `openai` package works unchanged.

Every field of OpenAI's API that a client may send is declared here, and vLLM's `top_k` and
`repetition_penalty`, which its users send (`extra_body`); `server.openai_params` decides which are
honoured, which change nothing here (user, metadata, …) and which are refused by name because ignoring
them would change what the answer holds (tools, logit_bias, …). Any other field is refused, as OpenAI itself refuses it
("Unrecognized request argument").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from tuneloom.server.validation import json_kind

if TYPE_CHECKING:
    from tuneloom.generate.results import Prompt

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
    """What completions and chat completions share; fields OpenAI's API lacks are kept apart, to be refused."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="'<app_id>/<model_id>' (latest trained) or '<app_id>/<model_id>/<version_id>'")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # vLLM's extension (OpenAI has none): the k most likely tokens; 0 or -1: all
    n: int | None = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = None  # reproducible sampling; validated by InferenceParams (0 to 2^63 - 1)
    presence_penalty: float | None = None  # -2 to 2, validated by InferenceParams
    frequency_penalty: float | None = None  # -2 to 2
    repetition_penalty: float | None = None  # vLLM's extension (Hugging Face's penalty); None: the model's
    logit_bias: dict[str, float] | None = None  # not supported: refused unless empty
    user: str | None = None  # changes nothing here


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]  # a text, texts, one prompt's token ids, or several's
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5)  # each token's, and this many alternatives' (OpenAI's limit)
    echo: bool | None = None
    best_of: int | None = None  # refused unless equal to n: samples are not ranked here
    suffix: str | None = None  # not supported: refused unless empty

    @field_validator("prompt", mode="before")
    @classmethod
    def texts_or_token_ids(cls, prompt: Any) -> Any:
        """One error that says what a prompt may be, where pydantic would list each member of the union's failure;
        a boolean or a float is not a token id (pydantic's lax mode would read `true` as 1)."""
        if not isinstance(prompt, list) or all(isinstance(item, str) for item in prompt):
            return prompt
        if all(_is_token_id(item) for item in prompt) or all(
            isinstance(item, list) and all(_is_token_id(i) for i in item) for item in prompt
        ):
            return prompt
        raise PydanticCustomError(
            "prompt_kind",
            "a prompt is a text, a list of texts, a list of token ids (integers), or a list of such lists; "
            "not a mix of them",
        )

    def prompts(self) -> list[Prompt]:
        """The request's prompts, each a text or a tuple of token ids (`results.Prompt`)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [tuple(cast(list[int], self.prompt))]
        return [p if isinstance(p, str) else tuple(p) for p in cast(list[str | list[int]], self.prompt)]

    @property
    def single_prompt(self) -> bool:
        """Whether `prompt` is one prompt (a text, or one list of token ids): errors name `prompt`, not `prompt.i`."""
        return isinstance(self.prompt, str) or bool(self.prompt and isinstance(self.prompt[0], int))


def _is_token_id(item: Any) -> bool:
    return type(item) is int


CHAT_CONTENT = 'a string, or a list of {"type": "text", "text": "…"} parts (images and other parts are not supported)'


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]  # tool, function: refused
    content: str | list[dict[str, Any]] | None = Field(default=None, validate_default=True)
    name: str | None = None  # the participant's name: refused unless empty (the sections have no place for it)

    @field_validator("content", mode="before")
    @classmethod
    def text_content_only(cls, content: Any, info: ValidationInfo) -> Any:
        """One error that says what content may be, where pydantic would report its union's first member only
        ("Input should be a valid string"); an image part dropped silently would change the question."""
        problem = content_problem(content, info.data.get("role"))
        if problem is not None:
            raise PydanticCustomError("chat_content", f"{problem}; content must be {CHAT_CONTENT}")
        return content

    def text(self) -> str:
        """The message's text; a list of (text) content parts is joined."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(str(part["text"]) for part in self.content)


def content_problem(content: Any, role: str | None) -> str | None:
    """What is wrong with a chat message's `content` (None: nothing); only a user message needs content."""
    if content is None:
        return "a user message needs content" if role == "user" else None
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"got {json_kind(content)}"
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            return f"part {index} is {json_kind(part)}, not an object"
        if part.get("type") != "text":
            return f"part {index} is of type {part.get('type')!r}"
        if not isinstance(part.get("text"), str):
            return f'part {index} has no "text" string'
    return None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None  # each token's log-probability, in choices[i].logprobs.content
    top_logprobs: int | None = Field(None, ge=0, le=20)  # with logprobs: this many alternatives (OpenAI's limit)
    response_format: dict[str, Any] | None = None  # only {"type": "text"}
    tools: list[Any] | None = None  # not supported: refused unless empty
    tool_choice: str | dict[str, Any] | None = None  # "none" or "auto" (no tools, so no call)
    functions: list[Any] | None = None  # tools' older name
    function_call: str | dict[str, Any] | None = None  # tool_choice's older name
    audio: Any = None  # not supported: refused unless null
    modalities: list[str] | None = None  # only ["text"]
    web_search_options: Any = None  # not supported: refused unless null
    moderation: Any = None  # not supported: refused unless null
    # These change nothing in what a tuneloom model answers: accepted and ignored.
    parallel_tool_calls: bool | None = None
    prediction: Any = None
    metadata: Any = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prompt_cache_key: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None
    safety_identifier: Any = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """/v1/completions' shape: per token its text, log-probability, the alternatives (with the token itself:
    up to `logprobs` + 1 of them, as OpenAI sends) and where it starts in the choice's text. With echo the
    prompt's tokens come first; its first token has null for both (nothing precedes it)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
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


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None  # the token's own bytes (a part of a character has some); null where they are unknown


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]  # `top_logprobs` of them, most likely first (fewer where top-k/top-p keep fewer)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None  # tuneloom's models never refuse in a separate channel


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
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
    logprobs: ChatLogprobs | None = None
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
