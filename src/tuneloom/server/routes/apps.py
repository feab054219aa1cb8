"""Apps: create and list need an admin key; an app-scoped key may read or delete its own app."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from tuneloom.server.auth import api_key, context, require_admin, require_app
from tuneloom.server.cleanup import remove_artifacts
from tuneloom.server.context import ServerContext
from tuneloom.server.schemas import AppCreate, AppOut
from tuneloom.store import apps
from tuneloom.store.models import ApiKey

router = APIRouter(prefix="/api/apps", tags=["apps"])
Context = Annotated[ServerContext, Depends(context)]


@router.post("", status_code=201, dependencies=[Depends(require_admin)])
def create_app(body: AppCreate, ctx: Context) -> AppOut:
    return AppOut.model_validate(apps.create_app(ctx.db, body.name, body.id))


@router.get("")
def list_apps(ctx: Context, key: Annotated[ApiKey, Depends(api_key)]) -> list[AppOut]:
    visible = None if key.app_id is None else [key.app_id]
    return [AppOut.model_validate(a) for a in apps.list_apps(ctx.db, visible)]


@router.get("/{app_id}")
def get_app(app_id: Annotated[str, Depends(require_app)], ctx: Context) -> AppOut:
    return AppOut.model_validate(apps.get_app(ctx.db, app_id))


@router.delete("/{app_id}", status_code=204)
def delete_app(app_id: Annotated[str, Depends(require_app)], ctx: Context, request: Request) -> Response:
    remove_artifacts(request, apps.delete_app(ctx.db, app_id))
    return Response(status_code=204)
