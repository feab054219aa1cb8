"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions.

Existing tools speak this API, so a trained version is usable from the official `openai` package
(`base_url=<server>/v1`, the same API key) without any tuneloom code. A model is named
`<app_id>/<model_id>` (its latest trained version) or `<app_id>/<model_id>/<version_id>`. An
app-scoped key sees only its app's models; any other name is "model not found", never a hint.
Sampling defaults are OpenAI's (temperature 1; completions stop after 16 tokens), and every error
on these routes comes in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tuneloom.errors import (
    ConflictError,
    InvalidIdError,
    ModelVersionError,
    NotFoundError,
    SettingsError,
    TuneloomError,
)
from tuneloom.server.auth import api_key, context
from tuneloom.server.context import ServerContext
from tuneloom.server.engine import Prediction
from tuneloom.server.openai_chat import chat_input, conversation, said_of_the_conversation
from tuneloom.server.openai_logprobs import chat_logprobs, completion_logprobs, echoed_tokens
from tuneloom.server.openai_params import check_supported, choices_per_prompt, inference_params, requested_logprobs
from tuneloom.server.openai_stream import chat_chunks, completion_chunks, streaming, usage
from tuneloom.server.routes.predict import (
    Service,
    Slots,
    admit,
    check_inputs,
    stream_in_slot,
    trained_version,
    unless_disconnected,
    version_dir,
)
from tuneloom.server.schemas.openai import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelList,
    ModelObject,
    OpenAIError,
    ResponseHead,
    Usage,
    finish_reason,
)
from tuneloom.server.validation import as_sent, field_of, message_of
from tuneloom.store.db import Database
from tuneloom.store.models import ApiKey, Model, ModelVersion, TrainingStatus

if TYPE_CHECKING:
    from tuneloom.generate.results import Generation, Prompt

log = logging.getLogger(__name__)
T = TypeVar("T")
ERROR_CODES = {
    401: "invalid_api_key",
    404: "model_not_found",
    409: "model_not_ready",
    413: "request_too_large",
    429: "rate_limit_exceeded",
}


def openai_error(
    status: int, message: str, *, param: str | None = None, headers: Any = None, coded: bool = True
) -> JSONResponse:
    """OpenAI's error body; `coded=False` leaves `code` null, as OpenAI does for an unknown URL."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"message": message, "type": kind, "param": param, "code": ERROR_CODES.get(status) if coded else None}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class OpenAIRoute(APIRoute):
    """Every failure of a /v1 route (validation, auth, tuneloom errors) answered in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as err:
                first = (as_sent(list(err.errors()), request) or [{}])[0]
                message = message_of(first, request.headers.get("content-type"))
                return openai_error(400, message, param=field_of(first))
            except HTTPException as err:
                return openai_error(err.status_code, str(err.detail), headers=err.headers)
            except TuneloomError as err:
                # a damaged model version on disk is a conflict with the stored state, as on /predict
                conflict = isinstance(err, ConflictError | ModelVersionError)
                status = 404 if isinstance(err, NotFoundError) else 409 if conflict else 400
                return openai_error(status, err.message, param=getattr(err, "key", None))
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return openai_error(500, "the server failed to answer this request")

        return handle


router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    route_class=OpenAIRoute,
    responses={400: {"model": OpenAIError}, 404: {"model": OpenAIError}},
)
Context = Annotated[ServerContext, Depends(context)]
Key = Annotated[ApiKey, Depends(api_key)]


@router.get("/models")
async def list_models(key: Key, ctx: Context) -> ModelList:
    rows = await run_in_threadpool(trained_versions, ctx.db, key.app_id)
    data: dict[str, ModelObject] = {}
    for app_id, model_id, version_id, finished in rows:  # newest first within a model
        created = int(finished.timestamp()) if finished else 0
        latest = f"{app_id}/{model_id}"
        data.setdefault(latest, ModelObject(id=latest, created=created, owned_by=app_id))
        data[f"{latest}/{version_id}"] = ModelObject(id=f"{latest}/{version_id}", created=created, owned_by=app_id)
    return ModelList(data=list(data.values()))


@router.get("/models/{model:path}")
async def retrieve_model(model: str, key: Key, ctx: Context) -> ModelObject:
    """One model by its name (`client.models.retrieve`), as /v1/models lists it; 404 as for any unknown name."""
    version = await run_in_threadpool(resolve_model, ctx, key, model)
    created = int(version.finished_at.timestamp()) if version.finished_at else 0
    return ModelObject(id=model, created=created, owned_by=model.split("/")[0])


def trained_versions(db: Database, app_id: str | None) -> list[tuple[str, str, str, Any]]:
    """(app, model, version, finished_at) of every MODEL_TRAINED version, in one query."""
    query = (
        select(Model.app_id, Model.id, ModelVersion.id, ModelVersion.finished_at)
        .join(ModelVersion, ModelVersion.model_pk == Model.pk)
        .where(ModelVersion.status == TrainingStatus.MODEL_TRAINED.name)
        .order_by(Model.app_id, Model.id, ModelVersion.finished_at.desc(), ModelVersion.id.desc())
    )
    if app_id is not None:
        query = query.where(Model.app_id == app_id)
    with db.read() as session:
        return [(a, m, v, finished) for a, m, v, finished in session.execute(query)]


def resolve_model(ctx: ServerContext, key: ApiKey, name: str) -> ModelVersion:
    """`<app>/<model>[/<version>]` → a trained version this key may use (404 for anything else)."""
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(parts) or (key.app_id is not None and key.app_id != parts[0]):
        raise NotFoundError(f"model '{name}' not found")
    try:
        return trained_version(ctx, parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    except InvalidIdError:
        raise NotFoundError(f"model '{name}' not found") from None


async def named(work: Awaitable[T], param: str) -> T:
    """`work`, with a refusal of the request's inputs (too long for the model) naming OpenAI's field for them."""
    try:
        return await work
    except SettingsError as err:
        if err.key not in ("inputs", "input"):
            raise
        raise SettingsError(err.message, key=param, details={**err.details, "key": param}) from None


@router.post("/completions", response_model=Completion)
async def completions(
    body: CompletionRequest, key: Key, ctx: Context, service: Service, slots: Slots, request: Request
) -> Response | Completion:
    """With `echo` and `logprobs`, each prompt is scored as sent (no template: its tokens are those of the echoed
    text) and its completion continues it; `max_tokens: 0` then returns the prompt's log-probabilities alone."""
    check_supported(body)
    prompts = body.prompts()
    check_inputs(prompts, key="prompt", listed=not body.single_prompt)
    n = choices_per_prompt(body, len(prompts))
    params = inference_params(body, body.max_tokens, ctx.max_tokens_limit)
    logprobs = requested_logprobs(body)
    prompt_logprobs = logprobs if body.echo else None
    version = await run_in_threadpool(resolve_model, ctx, key, body.model)
    await admit(ctx, service, version)
    head = ResponseHead(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model)
    path = version_dir(ctx, version)
    if body.stream:
        if len(prompts) != 1:
            raise SettingsError("streaming takes one prompt", key="prompt")
        started = stream_in_slot(service, slots, key, version, path, prompts[0], params, n=n, logprobs=logprobs)
        streams, done = await named(started, "prompt")
        echoed = prompts[0] if body.echo and isinstance(prompts[0], str) else ""
        return streaming(completion_chunks(streams, head, _with_usage(body), echoed, logprobs is not None), done)
    texts = [prompt for prompt in prompts for _ in range(n)]  # OpenAI's order: each prompt's n choices together
    async with slots.hold(key.id):
        predicted = service.predict(version.id, path, texts, params, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        predictions = await unless_disconnected(request, named(predicted, "prompt"))
    echoes = [_echoed(text, p.generation) if body.echo else "" for text, p in zip(texts, predictions, strict=True)]
    choices = [
        CompletionChoice(
            index=i,
            text=echoes[i] + p.generation.text,
            logprobs=completion_logprobs(echoed_tokens(p.generation, echoes[i])),
            finish_reason=finish_reason(p.generation.finish_reason),
        )
        for i, p in enumerate(predictions)
    ]
    return Completion(**head, choices=choices, usage=_usage_of(predictions, n))


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    body: ChatCompletionRequest, key: Key, ctx: Context, service: Service, slots: Slots, request: Request
) -> Response | ChatCompletion:
    """The whole conversation is the input, in the sections the version was trained with (`openai_chat`)."""
    check_supported(body)
    turns, system = conversation(body.messages)
    max_tokens = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens  # 0 is refused
    max_tokens_key = "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
    n = choices_per_prompt(body, 1)
    params = inference_params(body, max_tokens, ctx.max_tokens_limit, system)
    logprobs = requested_logprobs(body)
    version = await run_in_threadpool(resolve_model, ctx, key, body.model)
    await admit(ctx, service, version)
    text, params = await run_in_threadpool(chat_input, ctx, version, turns, params)
    head = ResponseHead(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model)
    path = version_dir(ctx, version)
    if body.stream:
        started = stream_in_slot(service, slots, key, version, path, text, params, n=n, logprobs=logprobs)
        streams, done = await said_of_the_conversation(started, max_tokens_key)
        return streaming(chat_chunks(streams, head, _with_usage(body), logprobs is not None), done)
    async with slots.hold(key.id):
        predicted = service.predict(version.id, path, [text] * n, params, logprobs=logprobs)
        predictions = await unless_disconnected(request, said_of_the_conversation(predicted, max_tokens_key))
    choices = [
        ChatChoice(
            index=i,
            message=ChatMessageOut(content=g.text),
            logprobs=chat_logprobs(g.logprobs),
            finish_reason=finish_reason(g.finish_reason),
        )
        for i, g in enumerate(p.generation for p in predictions)
    ]
    return ChatCompletion(**head, choices=choices, usage=_usage_of(predictions, n))


def _echoed(prompt: Prompt, generation: Generation) -> str:
    """What `echo` puts before a completion: the prompt as sent; token ids as they decode (`generator.prompt_text`)."""
    return prompt if isinstance(prompt, str) else generation.prompt


def _usage_of(predictions: list[Prediction], n: int) -> Usage:
    """OpenAI's counts: each prompt once (its `n` choices share it), every choice's completion tokens."""
    prompt_tokens = sum(p.prompt_tokens for p in predictions[::n])
    return usage(prompt_tokens, sum(p.generation.tokens for p in predictions))


def _with_usage(body: CompletionRequest | ChatCompletionRequest) -> bool:
    """`stream_options.include_usage`: a last chunk with the usage of every choice."""
    return bool(body.stream_options and body.stream_options.include_usage)
