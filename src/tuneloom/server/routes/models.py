"""Models and their versions (training runs): create, train, watch, cancel, delete.

Settings are validated here, at request time, against the same rules the engine applies — a typo
in `trainer_config` is a 422 naming the key, not a job that fails after waiting in the queue.
What only a worker can know (its hardware, the data after tokenization) ends the run with the
hosted product's status codes instead.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from tuneloom.server.auth import api_key, context, require_app
from tuneloom.server.cleanup import remove_artifacts
from tuneloom.server.context import ServerContext
from tuneloom.server.event_stream import event_stream
from tuneloom.server.exports import Exports, Named, form_of
from tuneloom.server.live import training_events
from tuneloom.server.paging import PageCursor, PageLimit, link_next
from tuneloom.server.routes import downloads
from tuneloom.server.routes.predict import trained_files
from tuneloom.server.schemas.models import (
    ExportOut,
    ExportRequest,
    LogLineOut,
    MetricPointOut,
    ModelCreate,
    ModelOut,
    ModelVersionOut,
    SettingsOut,
    TrainRequest,
)
from tuneloom.store import jobs, registry, telemetry, workers
from tuneloom.store.db import MAX_INTEGER, MIN_INTEGER
from tuneloom.store.models import ModelVersion, TrainingStatus
from tuneloom.store.paging import DEFAULT_PAGE
from tuneloom.store.shared import ArtifactIntegrityError, ArtifactStoreError
from tuneloom.templates import DEFAULT_TEMPLATE, TEMPLATES, get_template, resolve_settings
from tuneloom.templates.settings import TrainingSettings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/apps/{app_id}/models", tags=["models"])
templates_router = APIRouter(prefix="/api/templates", tags=["templates"], dependencies=[Depends(api_key)])
Context = Annotated[ServerContext, Depends(context)]
AppId = Annotated[str, Depends(require_app)]
CURVES = ("loss_curve", "eval_curve")
_QUEUED = TrainingStatus.MODEL_QUEUED_FOR_TRAINING


@templates_router.get("")
def list_templates() -> list[dict[str, Any]]:
    return [t.summary() for t in TEMPLATES]


@router.post("", status_code=201)
def create_model(app_id: AppId, body: ModelCreate, ctx: Context) -> ModelOut:
    return ModelOut.of(registry.create_model(ctx.db, app_id, body.id, body.model_type_id))


@router.get("")
def list_models(app_id: AppId, ctx: Context) -> list[ModelOut]:
    return [ModelOut.of(m) for m in registry.list_models(ctx.db, app_id)]


@router.get("/{model_id}")
def get_model(app_id: AppId, model_id: str, ctx: Context) -> ModelOut:
    return ModelOut.of(registry.get_model(ctx.db, app_id, model_id))


@router.delete("/{model_id}", status_code=204)
def delete_model(app_id: AppId, model_id: str, ctx: Context, request: Request) -> Response:
    remove_artifacts(request, registry.delete_model(ctx.db, app_id, model_id))
    return Response(status_code=204)


@router.get("/{model_id}/params", response_model_by_alias=True)
def get_params(app_id: AppId, model_id: str, ctx: Context, template: str = DEFAULT_TEMPLATE) -> SettingsOut:
    """The template's defaults, ready to edit and send back with a training request."""
    registry.get_model(ctx.db, app_id, model_id)
    tpl = get_template(template)
    return SettingsOut.model_validate({"template": tpl.id, **resolve_settings(tpl).to_dict()})


@router.post("/{model_id}/versions", status_code=201)
def train(app_id: AppId, model_id: str, body: TrainRequest, ctx: Context) -> ModelVersionOut:
    """Validate the settings now (422 naming the key), then queue the run."""
    registry.get_model(ctx.db, app_id, model_id)
    template = get_template(body.template)
    settings: TrainingSettings = resolve_settings(template, body.overrides())
    version = jobs.enqueue(
        ctx.db,
        app_id,
        model_id,
        dataset_version_id=body.dataset_version_id,
        template=template.id,
        settings=settings.to_dict(),
        resume_from=body.resume_from_model,
    )
    return _out(ctx, version, model_id)


@router.get("/{model_id}/versions")
def list_versions(
    app_id: AppId,
    model_id: str,
    ctx: Context,
    request: Request,
    response: Response,
    limit: PageLimit = DEFAULT_PAGE,
    before: PageCursor = None,
) -> list[ModelVersionOut]:
    """Newest first, `limit` at a time; the next page's URL is in the `Link` header (`server.paging`)."""
    page = registry.list_model_versions(ctx.db, app_id, model_id, limit=limit, before=before)
    link_next(request, response, page.next_cursor)
    return [_out(ctx, v, model_id) for v in page.items]


@router.get("/{model_id}/versions/{version_id}")
def get_version(app_id: AppId, model_id: str, version_id: str, ctx: Context) -> ModelVersionOut:
    return _out(ctx, registry.get_model_version(ctx.db, app_id, model_id, version_id), model_id)


@router.post("/{model_id}/versions/{version_id}/cancel")
def cancel(app_id: AppId, model_id: str, version_id: str, ctx: Context) -> ModelVersionOut:
    """A queued run ends at once; a training one is stopped by its worker within a heartbeat."""
    registry.get_model_version(ctx.db, app_id, model_id, version_id)
    jobs.request_cancel(ctx.db, version_id)
    return get_version(app_id, model_id, version_id, ctx)


@router.delete("/{model_id}/versions/{version_id}", status_code=204)
def delete_version(app_id: AppId, model_id: str, version_id: str, ctx: Context, request: Request) -> Response:
    remove_artifacts(request, registry.delete_model_version(ctx.db, app_id, model_id, version_id))
    return Response(status_code=204)


@router.post("/{model_id}/versions/{version_id}/exports")
def export(
    app_id: AppId, model_id: str, version_id: str, body: ExportRequest, ctx: Context, request: Request
) -> ExportOut:
    """Pack a trained version as `tuneloom export` writes it, zipped, and link to the file (`server.exports`).

    The first request for a form builds it (loading the model: seconds, minutes for a 7B); later ones,
    and the link, find it built. A GGUF the version cannot be (another architecture, GPTQ) is a 409 saying why.
    """
    files = trained_files(registry.get_model_version(ctx.db, app_id, model_id, version_id), "be exported")
    exports: Exports = request.app.state.exports
    named = Named(app_id, model_id, version_id, form_of(body.format, body.gguf_type))
    packed = exports.packed(named, files)
    token, expires = exports.link(named)
    return ExportOut(
        format=body.format,
        gguf_type=body.gguf_type,
        file_name=packed.file_name,
        size_bytes=packed.size,
        sha256=packed.sha256,
        download_url=f"{downloads.router.prefix}/{token}",
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


@router.get("/{model_id}/versions/{version_id}/metrics")
def metrics(
    app_id: AppId,
    model_id: str,
    version_id: str,
    ctx: Context,
    after_step: Annotated[int | None, Query(ge=MIN_INTEGER, le=MAX_INTEGER)] = None,
    max_points: Annotated[int | None, Query(ge=2, le=MAX_INTEGER)] = None,
) -> list[MetricPointOut]:
    """Every point after `after_step`; with `max_points`, at most that many per series, the curve's
    shape and last point kept (`telemetry.downsampled_metrics`: what a chart needs of a long run)."""
    registry.get_model_version(ctx.db, app_id, model_id, version_id)
    if max_points is not None:
        points = telemetry.downsampled_metrics(ctx.db, version_id, max_points, after_step=after_step)
        return [MetricPointOut.model_validate(p) for p in points]
    return [MetricPointOut.model_validate(p) for p in telemetry.list_metrics(ctx.db, version_id, after_step=after_step)]


@router.get("/{model_id}/versions/{version_id}/logs")
def logs(
    app_id: AppId,
    model_id: str,
    version_id: str,
    ctx: Context,
    after: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    limit: Annotated[int, Query(ge=1, le=telemetry.MAX_PAGE)] = 200,
    tail: bool = False,
) -> list[LogLineOut]:
    """Lines after `after`, oldest first: the first `limit`, or with `tail=true` the last `limit`."""
    registry.get_model_version(ctx.db, app_id, model_id, version_id)
    return [
        LogLineOut.model_validate(line)
        for line in telemetry.list_logs(ctx.db, version_id, after_seq=after, limit=limit, tail=tail)
    ]


@router.get("/{model_id}/versions/{version_id}/events", response_class=StreamingResponse)
def events(
    app_id: AppId,
    model_id: str,
    version_id: str,
    ctx: Context,
    request: Request,
    after_step: Annotated[int | None, Query(ge=MIN_INTEGER + 1, le=MAX_INTEGER)] = None,
    after_seq: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    after_point: Annotated[int | None, Query(ge=0, le=MAX_INTEGER)] = None,
) -> StreamingResponse:
    """Server-sent events: `status` on every change, each new `metric` and `log`, until the run ends.

    A client that already read the curve and the log (`/metrics`, `/logs?tail=true`) starts after
    them: `after_point` (the last `point` it has; or `after_step`, whose points are sent again, as
    an eval point may join them) and `after_seq`. Without them every point and line so far is sent
    first. Points come in the order recorded: a run resumed from a checkpoint goes back in steps
    (`server.live.training_events`).
    """
    registry.get_model_version(ctx.db, app_id, model_id, version_id)
    snapshot = lambda: _out(ctx, registry.get_model_version(ctx.db, app_id, model_id, version_id), model_id)  # noqa: E731
    stream = training_events(
        ctx.db, version_id, snapshot, request, after_step=after_step, after_seq=after_seq, after_point=after_point
    )
    return event_stream(stream)


def _out(ctx: ServerContext, version: ModelVersion, model_id: str) -> ModelVersionOut:
    queued = version.status_enum is _QUEUED
    position = jobs.queue_position(ctx.db, version.id) if queued else None
    out = ModelVersionOut.of(version, model_id, queue_position=position, metrics=_summary(ctx, version))
    waiting = workers.waiting_reason(ctx.db, version) if queued else None
    if waiting:  # no live worker can run it: say what it waits for rather than only where it stands
        out.status.message = f"{waiting}; {version.message}" if version.message else waiting
    return out


def _summary(ctx: ServerContext, version: ModelVersion) -> dict[str, Any] | None:
    """A trained version's final metrics (the curves are served by /metrics)."""
    if version.artifact_path is None:
        return None
    try:
        data = json.loads(ctx.artifacts.read_member(version.artifact_path, "metrics.json"))
    except (OSError, ValueError):
        return None
    except (ArtifactStoreError, ArtifactIntegrityError) as err:  # optional: the version still answers, logged
        log.warning("no metrics summary for model version %s: %s", version.id, err.message)
        return None
    return {k: v for k, v in data.items() if k not in CURVES}
