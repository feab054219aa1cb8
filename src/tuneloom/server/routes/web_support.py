"""Small routes the web console needs: the CSV template, validate-as-you-type, and an evaluation table.

Each answers exactly as the rest of the API would: the settings check is the same
`resolve_settings` that training runs (so a 422 names the same key with the same message), and the
evaluation generates through the server's own `Inference` service with greedy decoding.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tuneloom.data.csv_template import TEMPLATE_COLUMNS, TEMPLATE_ROWS
from tuneloom.evaluate.metrics import per_example
from tuneloom.generate.params import InferenceParams
from tuneloom.server.auth import api_key, context, require_app
from tuneloom.server.backends import GenerationService
from tuneloom.server.context import ServerContext
from tuneloom.server.routes.predict import Key, Service, Slots, admit, trained_version, version_dir
from tuneloom.server.schemas.models import SettingsRequest
from tuneloom.store.models import ModelVersion
from tuneloom.templates import get_template, resolve_settings

router = APIRouter(prefix="/api", tags=["web"])
Context = Annotated[ServerContext, Depends(context)]
AppId = Annotated[str, Depends(require_app)]
MAX_EVAL_TOKENS = 256
MAX_EVAL_ROWS = 128
HELD_OUT = "held_out.json"  # in a model version's folder (tuneloom.model_version)


@router.get("/csv-template", dependencies=[Depends(api_key)], response_class=Response)
def csv_template() -> Response:
    """tuneloom's CSV template (the two columns the hosted uploader expected), as a download."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(TEMPLATE_COLUMNS)
    writer.writerows((row, "") for row in TEMPLATE_ROWS)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tuneloom-template.csv"'},
    )


@router.get("/template-params", dependencies=[Depends(api_key)])
def template_params(template: str) -> dict[str, Any]:
    """A template's defaults for the five settings and the tolerance (what a new model's form starts from).

    The same answer as `GET /api/apps/{app}/models/{model}/params?template=…`, without needing a model yet.
    """
    tpl = get_template(template)
    return {"template": tpl.id, **resolve_settings(tpl).to_dict()}


@router.post("/apps/{app_id}/settings/validate")
def validate_settings(app_id: AppId, body: SettingsRequest) -> dict[str, bool]:
    """200 `{"ok": true}`, or the very 422 a training request with these settings would get."""
    resolve_settings(get_template(body.template), body.overrides())
    return {"ok": True}


class EvaluationRow(BaseModel):
    line: int | None
    prompt: str
    expected: str
    generated: str
    match: bool


class EvaluationOut(BaseModel):
    model_version_id: str
    total: int = Field(description="held-out examples of the version (the table shows the first `limit`)")
    accuracy: float | None = Field(description="normalised exact matches / rows shown; null without rows")
    rows: list[EvaluationRow]


@router.get("/apps/{app_id}/models/{model_id}/versions/{version_id}/evaluation")
async def evaluation(
    app_id: AppId,
    model_id: str,
    version_id: str,
    ctx: Context,
    service: Service,
    key: Key,
    slots: Slots,
    limit: Annotated[int, Query(ge=1, le=MAX_EVAL_ROWS)] = 20,
) -> EvaluationOut:
    """The version's held-out examples, generated greedily: expected vs generated, and whether they match."""
    version = await run_in_threadpool(trained_version, ctx, app_id, model_id, version_id)
    await admit(ctx, service, version)
    path = version_dir(ctx, version)
    examples = await run_in_threadpool(_held_out, ctx, version)
    shown = examples[:limit]
    if not shown:
        return EvaluationOut(model_version_id=version.id, total=len(examples), accuracy=None, rows=[])
    max_tokens = await run_in_threadpool(_enough_tokens, service, version.id, path, [e["completion"] for e in shown])
    params = InferenceParams(max_tokens=max_tokens, temperature=0.0)
    async with slots.hold(key.id):
        predictions = await service.predict(version.id, path, [e["prompt"] for e in shown], params)
    generated = [p.generation.text for p in predictions]
    expected = [e["completion"] for e in shown]
    matches = per_example(generated, expected)
    rows = [
        EvaluationRow(line=e.get("line"), prompt=e["prompt"], expected=e["completion"], generated=g, match=m)
        for e, g, m in zip(shown, generated, matches, strict=True)
    ]
    return EvaluationOut(
        model_version_id=version.id, total=len(examples), accuracy=sum(matches) / len(matches), rows=rows
    )


def _held_out(ctx: ServerContext, version: ModelVersion) -> list[dict[str, Any]]:
    """The version's held-out examples: that one file (from the shared store where the version is not
    here; a path out of the data dir is refused, as for every artifact)."""
    assert version.artifact_path is not None
    try:
        data = json.loads(ctx.artifacts.read_member(version.artifact_path, HELD_OUT))
    except (OSError, ValueError):
        return []
    return [e for e in data if isinstance(e, dict) and "prompt" in e and "completion" in e]


def _enough_tokens(service: GenerationService, version_id: str, path: Path, completions: list[str]) -> int:
    """Room for the longest expected completion plus slack (as `tuneloom evaluate` does).

    Where another server generates, this one has no tokenizer: a token covers at least one byte
    (byte-level BPE, SentencePiece with byte fallback), so the byte count bounds it.
    """
    if service.generates_here:
        tokenizer = service.cache.get(version_id, path).tokenizer
        longest = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions)
    else:
        longest = max(len(c.encode("utf-8")) for c in completions)
    return min(MAX_EVAL_TOKENS, int(longest * 1.5) + 8)
