"""Downloads by signed link (`server.exports`): no API key, since the link itself is the permission.

A browser follows such a link with no header to add, and saves the file with its own progress;
the link names one export of one version and expires within the hour.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from tuneloom.server.auth import context
from tuneloom.server.context import ServerContext
from tuneloom.server.exports import Exports
from tuneloom.server.routes.predict import trained_files
from tuneloom.store import registry

router = APIRouter(prefix="/api/downloads", tags=["downloads"])
Context = Annotated[ServerContext, Depends(context)]


@router.get("/{token}")
def download(token: str, ctx: Context, request: Request) -> FileResponse:
    """The export a link names: 403 if no server of this database signed it, 410 once expired, 404 once its version
    is deleted. Byte ranges are served, so an interrupted download resumes."""
    exports: Exports = request.app.state.exports
    named = exports.named_by(token)
    version = registry.get_model_version(ctx.db, named.app_id, named.model_id, named.version_id)
    packed = exports.packed(named, trained_files(version, "be exported"))
    headers = {"Cache-Control": "private, no-store", "X-Content-SHA256": packed.sha256}
    return FileResponse(packed.path, media_type="application/zip", filename=packed.file_name, headers=headers)
