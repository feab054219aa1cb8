"""A generation node's side: the routes that servers started with `--backend remote` send generation to.

Only a server started with `--advertise-url` answers them, and only for the random token it
advertised in the database (`Authorization: Node <token>`); user keys are never accepted here, and
these routes are not in the OpenAPI document. The request was authorised and rate-limited by the
server that relays it; here it is checked again like any other (trained version, inputs,
max_tokens cap, `--max-batch-tokens`), so a node's limits hold whoever sends to it.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tuneloom.generate.params import InferenceParams
from tuneloom.server.auth import context
from tuneloom.server.context import ServerContext
from tuneloom.server.engine import Prediction
from tuneloom.server.event_stream import event_stream
from tuneloom.server.node_wire import tokens_json
from tuneloom.server.routes.predict import (
    Service,
    admit,
    check_inputs,
    check_trained,
    events,
    request_params,
    version_dir,
)
from tuneloom.store import registry
from tuneloom.store.models import ModelVersion

if TYPE_CHECKING:
    from tuneloom.generate.results import Prompt


def node_token(request: Request, ctx: Annotated[ServerContext, Depends(context)]) -> None:
    expected = ctx.node_token
    given = request.headers.get("authorization", "")
    if expected is None:
        raise HTTPException(404, "this server is not a generation node (start it with --advertise-url)")
    if not hmac.compare_digest(given.encode(), f"Node {expected}".encode()):
        raise HTTPException(401, "missing or wrong node token: only servers on this node's database may call it")


router = APIRouter(prefix="/internal/generation", include_in_schema=False, dependencies=[Depends(node_token)])
Context = Annotated[ServerContext, Depends(context)]


class NodeRequest(BaseModel):
    version_id: str = Field(max_length=128)
    inputs: list[str | list[int]]  # texts, or token-id prompts (OpenAI's, relayed as sent)
    inference_params: dict[str, Any] = Field(default_factory=dict)  # max_tokens may be 0: the relaying server decided
    logprobs: int | None = Field(None, ge=0, le=20)  # as the service takes them (`GenerationService.predict`)
    prompt_logprobs: int | None = Field(None, ge=0, le=20)  # predict only

    def prompts(self) -> list[Prompt]:
        return [text if isinstance(text, str) else tuple(text) for text in self.inputs]


@router.post("/predict")
async def predict_for_a_server(body: NodeRequest, ctx: Context, service: Service) -> dict[str, Any]:
    version, params = await _admitted(body, ctx, service)
    predictions = await service.predict(
        version.id,
        version_dir(ctx, version),
        body.prompts(),
        params,
        logprobs=body.logprobs,
        prompt_logprobs=body.prompt_logprobs,
    )
    return {"outputs": [_output(p) for p in predictions]}


@router.post("/stream", response_class=StreamingResponse)
async def stream_for_a_server(body: NodeRequest, ctx: Context, service: Service) -> StreamingResponse:
    """The same server-sent events as /generate (each piece with its tokens' log-probabilities, where asked for);
    closing the connection ends the generation."""
    version, params = await _admitted(body, ctx, service)
    path = version_dir(ctx, version)
    pieces = await service.stream(version.id, path, body.prompts()[0], params, logprobs=body.logprobs)
    return event_stream(events(pieces, version.id, logprobs=body.logprobs is not None), BackgroundTask(pieces.cancel))


async def _admitted(body: NodeRequest, ctx: ServerContext, service: Service) -> tuple[ModelVersion, InferenceParams]:
    """The request checked as this node checks its own: inputs, parameters, a trained version, batch size."""
    check_inputs(body.prompts())
    params = request_params(ctx, body.inference_params, prompt_only=True)
    version = await run_in_threadpool(registry.get_model_version_by_id, ctx.db, body.version_id)
    await admit(ctx, service, check_trained(version))
    return version, params


def _output(prediction: Prediction) -> dict[str, Any]:
    g = prediction.generation
    return {
        "prompt": g.prompt,
        "text": g.text,
        "tokens": g.tokens,
        "finish_reason": g.finish_reason,
        "prompt_tokens": prediction.prompt_tokens,
        "logprobs": tokens_json(g.logprobs),
        "prompt_logprobs": tokens_json(g.prompt_logprobs),
    }
