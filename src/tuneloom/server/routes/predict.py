"""Predictions with a trained model version: a batch of outputs (/predict) or one streamed (/generate).

The version is the one named, or the model's latest MODEL_TRAINED one; a version that is not
trained is a 409 that says what it is instead. Generation itself goes through `Inference` (model
cache, one engine thread per model running a continuous batch); nothing blocking runs on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tuneloom.errors import ConflictError, NotFoundError, SettingsError, TuneloomError
from tuneloom.generate.params import MAX_INPUTS, InferenceParams, sent_names
from tuneloom.server.auth import api_key, context, require_app
from tuneloom.server.backends import GenerationService, PieceStream, make_service
from tuneloom.server.context import ServerContext
from tuneloom.server.event_stream import event_stream
from tuneloom.server.limits import GenerationSlots, cap_max_tokens, generation_slots
from tuneloom.server.node_wire import tokens_json
from tuneloom.server.schemas import GenerateRequest, PredictionOut, PredictRequest, PredictResponse
from tuneloom.server.schemas.inference import MAX_INPUT_CHARS
from tuneloom.server.schemas.openai import finish_reason
from tuneloom.store import registry
from tuneloom.store.models import ApiKey, ModelVersion, TrainingStatus

if TYPE_CHECKING:
    from tuneloom.generate.results import Prompt

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/apps/{app_id}/models/{model_id}", tags=["predictions"])
Context = Annotated[ServerContext, Depends(context)]
AppId = Annotated[str, Depends(require_app)]
Key = Annotated[ApiKey, Depends(api_key)]  # the same record require_app checked (FastAPI caches it)
Slots = Annotated[GenerationSlots, Depends(generation_slots)]
MICRO_BATCH_ENV = "TUNELOOM_MICRO_BATCH"  # "0" turns request merging off (the benchmark's baseline)
DISCONNECT_POLL_S = 0.25  # how often a running /predict looks whether its client is still there
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the log shows why the request ended
T = TypeVar("T")


async def inference(request: Request) -> GenerationService:
    """The app's one generation service (transformers, vLLM or remote, as `serve --backend` chose),
    made on first use (an async dependency: no two requests race to make it)."""
    state = request.app.state
    if getattr(state, "inference", None) is None:
        ctx: ServerContext = state.context
        micro_batch = os.environ.get(MICRO_BATCH_ENV, "1") != "0"
        backend, limit = ctx.inference_backend, ctx.max_batch_tokens
        state.inference = make_service(
            backend, ctx.model_cache_bytes, micro_batch=micro_batch, db=ctx.db, max_batch_tokens=limit
        )
    service: GenerationService = state.inference
    return service


Service = Annotated[GenerationService, Depends(inference)]


def trained_version(ctx: ServerContext, app_id: str, model_id: str, version_id: str | None) -> ModelVersion:
    """The version asked for, or the latest trained; it must be MODEL_TRAINED."""
    if version_id is None:
        latest = registry.latest_trained(ctx.db, app_id, model_id)
        if latest is None:
            raise NotFoundError(
                f"model '{model_id}' has no trained version yet; train one or wait for it to finish",
                details={"key": "model_id"},
            )
        return latest
    version = registry.get_model_version(ctx.db, app_id, model_id, version_id)
    return check_trained(version)


def check_trained(version: ModelVersion, can: str = "predict") -> ModelVersion:
    if version.status != TrainingStatus.MODEL_TRAINED.name or not version.artifact_path:
        why = f": {version.message}" if version.message else ""
        raise ConflictError(
            f"model version '{version.id}' is {version.status}{why}; only a MODEL_TRAINED version can {can}"
        )
    return version


def trained_files(version: ModelVersion, can: str) -> str:
    """The artifact path of a MODEL_TRAINED version (`check_trained`'s 409 otherwise, saying what it `can` not)."""
    path = check_trained(version, can).artifact_path
    assert path is not None  # check_trained refuses a version without one
    return path


def version_dir(ctx: ServerContext, version: ModelVersion) -> Path:
    assert version.artifact_path is not None  # trained_version only returns trained versions
    return ctx.artifacts.resolve(version.artifact_path)


def request_params(ctx: ServerContext, given: dict[str, Any], *, prompt_only: bool = False) -> InferenceParams:
    """A request's `inference_params`, validated and within the server's max_tokens cap (`prompt_only`: max_tokens
    may be 0, as `InferenceParams.from_dict` says).

    A refusal names the token count as the request sent it (`max_tokens`, or `max_new_tokens`).
    """
    params = InferenceParams.from_dict(given, prompt_only=prompt_only)
    sent = sent_names(given).get("max_tokens", "max_tokens")
    asked = given.get(sent) is not None
    return cap_max_tokens(params, ctx.max_tokens_limit, asked=asked, key=f"inference_params.{sent}")


def check_inputs(inputs: Sequence[Prompt], key: str = "inputs", *, listed: bool = True) -> None:
    """1 to MAX_INPUTS texts (or token-id prompts), none too long and none blank; `listed`: name a text by its index
    (`inputs.2`).

    An empty or whitespace-only text would generate from the bare prompt template: an answer to
    nothing, returned as if to the question.
    """
    if not 1 <= len(inputs) <= MAX_INPUTS:
        raise SettingsError(f"'{key}' must hold 1 to {MAX_INPUTS} texts, got {len(inputs)}", key=key)
    longest = max(len(text) for text in inputs)
    if longest > MAX_INPUT_CHARS:
        raise SettingsError(f"'{key}': a text may be at most {MAX_INPUT_CHARS:,} characters (or token ids)", key=key)
    blank = next(
        (index for index, text in enumerate(inputs) if not (text.strip() if isinstance(text, str) else text)), None
    )
    if blank is not None:
        where = f"{key}.{blank}" if listed else key
        raise SettingsError(f"'{where}' is empty or only whitespace: give a text to generate from", key=where)


async def admit(ctx: ServerContext, service: GenerationService, version: ModelVersion) -> None:
    """Where this server generates, the version on its disk (fetched from the shared store if need be).

    The service itself refuses a request above `--max-batch-tokens` (422) when it counts the
    prompts; a remote backend leaves both to the node that generates.
    """
    if service.generates_here:
        await run_in_threadpool(local_copy, ctx, version)


def local_copy(ctx: ServerContext, version: ModelVersion) -> Path:
    """The version's folder on this machine, fetched from the shared store first if it is not here (blocking)."""
    assert version.artifact_path is not None
    ctx.artifacts.fetch(version.artifact_path)
    return version_dir(ctx, version)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; or, once the client has gone, `work` cancelled and a 499 that nobody reads.

    Starlette cancels nothing when the client of a plain (not streaming) response leaves, so a
    /predict of 128 inputs × 4,096 tokens would otherwise run to its end for nobody, holding one of
    the key's generation slots all along. A cancelled prediction's rows leave the batch at its next step.
    """
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                raise HTTPException(CLIENT_GONE, "the client closed the request before its answer was ready")
        return task.result()
    finally:
        task.cancel()  # a no-op once it is done


@router.post("/predict")
async def predict(
    app_id: AppId,
    model_id: str,
    body: PredictRequest,
    ctx: Context,
    service: Service,
    key: Key,
    slots: Slots,
    request: Request,
) -> PredictResponse:
    params = request_params(ctx, body.inference_params)
    check_inputs(body.inputs)
    version = await run_in_threadpool(trained_version, ctx, app_id, model_id, body.version)
    await admit(ctx, service, version)
    async with slots.hold(key.id):
        work = service.predict(version.id, version_dir(ctx, version), body.inputs, params)
        predictions = await unless_disconnected(request, work)
    outputs = [
        PredictionOut(text=g.text, finish_reason=finish_reason(g.finish_reason), tokens=g.tokens)
        for g in (p.generation for p in predictions)
    ]
    return PredictResponse(model_version_id=version.id, outputs=outputs)


@router.post("/generate", response_class=StreamingResponse)
async def generate(
    app_id: AppId, model_id: str, body: GenerateRequest, ctx: Context, service: Service, key: Key, slots: Slots
) -> StreamingResponse:
    """Server-sent events: `data: {"text"}` per piece, then `event: done` (or `event: error`)."""
    params = request_params(ctx, body.inference_params)
    check_inputs([body.input], key="input", listed=False)
    version = await run_in_threadpool(trained_version, ctx, app_id, model_id, body.version)
    await admit(ctx, service, version)
    (pieces,), slot = await stream_in_slot(service, slots, key, version, version_dir(ctx, version), body.input, params)
    return event_stream(events(pieces, version.id), slot)


async def stream_in_slot(
    service: GenerationService,
    slots: GenerationSlots,
    key: ApiKey,
    version: ModelVersion,
    path: Path,
    text: Prompt,
    params: Any,
    *,
    n: int = 1,
    logprobs: int | None = None,
) -> tuple[Sequence[PieceStream], BackgroundTask]:
    """Start `n` streams of `text` (OpenAI's `n` choices; one otherwise) in one of the key's generation slots,
    as a /predict of `n` inputs takes one; the task ends them all and frees the slot when the response ends.

    Starlette runs a response's background task after the last chunk and after a disconnect too,
    so every generation stops and the slot is freed however the client leaves.
    """
    slot = await slots.take(key.id)
    try:
        choices = await service.streams(version.id, path, text, params, n, logprobs=logprobs)
    except BaseException:
        await slot.release()
        raise

    async def finish() -> None:  # async: runs on the event loop, like every other use of the slots
        for pieces in choices:
            pieces.cancel()
        await slot.release()

    return choices, BackgroundTask(finish)


async def events(pieces: PieceStream, version_id: str, *, logprobs: bool = False) -> AsyncIterator[str]:
    """Server-sent events: `data: {"text"}` per piece, then `event: done` with counts (or `event: error`).
    `logprobs` (a node's stream for another server): each piece with its tokens' (`node_wire`)."""
    try:
        async for piece, tokens in pieces.chunks():
            yield sse({"text": piece, "logprobs": tokens_json(tokens)} if logprobs else {"text": piece})
    except Exception as err:
        yield sse(error_body(err), event="error")
        return
    done = {"finish_reason": pieces.finish_reason, "model_version_id": version_id, "tokens": pieces.tokens}
    yield sse({**done, "prompt_tokens": pieces.prompt_tokens}, "done")


def sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def error_body(err: Exception) -> dict[str, str]:
    """What a client learns about a failure mid-stream: tuneloom's own message, or a generic one (logged)."""
    if isinstance(err, TuneloomError):
        return {"code": err.code, "message": err.message}
    log.exception("generation failed", exc_info=err)
    return {"code": "GENERATION_FAILED", "message": f"generation failed ({type(err).__name__})"}
