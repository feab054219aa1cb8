"""The web console: static HTML, CSS and JavaScript modules served by the API's own app.

No build step and no third-party code. The page shell carries no app data: every page asks the
API with the key the user typed (kept in the browser's sessionStorage), so without a key there is
nothing but the sign-in form. Routing is by URL hash (`#/apps/demo/models`), so `/` is the one page.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
# The shell is tiny and changes with releases: always revalidate it. Modules are revalidated too
# (ETag), so an upgrade never mixes old and new scripts.
NO_CACHE = {"Cache-Control": "no-cache"}
# Security headers (CSP, nosniff, framing…) are added to every response by tuneloom.server.security.


class _Static(StaticFiles):
    """StaticFiles with revalidation and the right JavaScript type on every platform."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_CACHE)
        path = str(full_path)
        if path.endswith(".js"):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        elif path.endswith(".css"):
            response.headers["content-type"] = "text/css; charset=utf-8"
        return response


def mount_web(app: FastAPI) -> None:
    """Serve the console: `index.html` at `/`, its assets under `/static`, and the API routes it needs."""
    from tuneloom.server.routes import web_support

    app.include_router(web_support.router)
    app.mount("/static", _Static(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)
