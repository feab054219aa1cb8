"""The FastAPI application: routers, and one mapping from tuneloom's errors to HTTP answers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tuneloom import __version__
from tuneloom.errors import (
    ConflictError,
    DataFileError,
    InvalidIdError,
    NotFoundError,
    SettingsError,
    TuneloomError,
)
from tuneloom.server.context import ServerContext
from tuneloom.server.routes import apps, datasets, models, openai_compat, predict
from tuneloom.web import mount_web

STATUS_BY_ERROR: tuple[tuple[type[TuneloomError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidIdError, 422),
    (SettingsError, 422),
    (DataFileError, 422),
)


def create_app(ctx: ServerContext) -> FastAPI:
    # No /docs or /redoc: their pages load scripts from a CDN, and tuneloom runs offline.
    app = FastAPI(title="tuneloom", version=__version__, docs_url=None, redoc_url=None)
    app.state.context = ctx
    app.include_router(apps.router)
    app.include_router(datasets.router)
    app.include_router(models.router)
    app.include_router(models.templates_router)
    app.include_router(predict.router)
    app.include_router(openai_compat.router)
    mount_web(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.exception_handler(TuneloomError)
    def tuneloom_error(_: Request, err: TuneloomError) -> JSONResponse:
        status = next((code for kind, code in STATUS_BY_ERROR if isinstance(err, kind)), 400)
        return JSONResponse(err.to_dict(), status_code=status)

    return app
