"""`Authorization: Key <key>` or `Bearer <key>` on every route but /healthz, and app scoping.

An app-scoped key sees its own app only: any other app id answers 404, exactly as if it did not
exist, so a key cannot be used to discover other apps. Admin keys (no app) see everything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from tuneloom.server.context import ServerContext
from tuneloom.store.apps import app_not_found
from tuneloom.store.keys import authenticate
from tuneloom.store.models import ApiKey

SCHEMES = ("key", "bearer")


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.context
    return ctx


def api_key(request: Request, ctx: Annotated[ServerContext, Depends(context)]) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in SCHEMES or not token.strip():
        raise HTTPException(401, "missing API key: send 'Authorization: Key <key>'", {"WWW-Authenticate": "Key"})
    record = authenticate(ctx.db, token.strip(), ctx.pepper)
    if record is None:
        raise HTTPException(401, "invalid or revoked API key", {"WWW-Authenticate": "Key"})
    return record


def require_admin(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    if key.app_id is not None:
        raise HTTPException(403, "this key is scoped to one app; an admin key is needed")
    return key


def require_app(app_id: str, key: Annotated[ApiKey, Depends(api_key)]) -> str:
    """The app id of the path, if this key may use it (otherwise the missing app's very 404: no hint that it exists)."""
    if key.app_id is not None and key.app_id != app_id:
        raise app_not_found(app_id)
    return app_id
