"""The FastAPI application: routers, and one mapping from tuneloom's errors to HTTP answers.

A database that cannot be reached (stopped, restarting, connection cut) is a 503 with a message and
`Retry-After`, never a 500, and `/healthz` says so; the server needs no restart once it is back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tuneloom import __version__
from tuneloom.errors import (
    ConflictError,
    DataFileError,
    DiskFullError,
    InvalidIdError,
    ModelVersionError,
    NotFoundError,
    SettingsError,
    TuneloomError,
)
from tuneloom.server.builds import BuildLeases
from tuneloom.server.context import ServerContext
from tuneloom.server.exports import ExportFailed, Exports, LinkError, LinkExpired
from tuneloom.server.limits import BodySizeLimit, GenerationSlots, LimitExceeded, SharedSlots
from tuneloom.server.remote_inference import GenerationNodeUnavailable
from tuneloom.server.routes import apps, datasets, downloads, models, nodes, openai_compat, predict
from tuneloom.server.security import SecurityHeaders
from tuneloom.server.validation import as_sent, describe
from tuneloom.store.db import is_disk_full, is_unavailable
from tuneloom.store.nodes import live_nodes
from tuneloom.store.shared import ArtifactIntegrityError, ArtifactStoreError
from tuneloom.web import mount_web

log = logging.getLogger("tuneloom.server")
RETRY_AFTER_S = 5
DATABASE_DOWN = "the database is unavailable (stopped, restarting or unreachable); try again in a few seconds"
DATABASE_DISK_FULL = (
    "the disk holding the server's database is full: nothing was saved. Free some space on it, then try again "
    "(reading goes on meanwhile)"
)

STATUS_BY_ERROR: tuple[tuple[type[TuneloomError], int], ...] = (
    (LinkExpired, 410),  # before LinkError, which it is: a download link past its time
    (LinkError, 403),  # a download link no server of this database signed
    (ExportFailed, 503),  # the export's process was killed (memory, most likely): try again later
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidIdError, 422),
    (SettingsError, 422),
    (DataFileError, 422),
    (ModelVersionError, 409),  # a damaged or incomplete model version on disk: the request was fine
    (ArtifactIntegrityError, 409),  # the shared store's copy does not match what was published
    (ArtifactStoreError, 503),  # the shared store is unreachable: try again
    (DiskFullError, 507),  # the data dir's disk is full (`Artifacts.storing`): nothing partial was kept
    (GenerationNodeUnavailable, 503),  # --backend remote, and no node answered: try again
)
# Codes for the errors FastAPI and the key checks raise as bare HTTP statuses.
CODE_BY_STATUS = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    429: "TOO_MANY_REQUESTS",
}


def create_app(ctx: ServerContext) -> FastAPI:
    # No /docs or /redoc: their pages load scripts from a CDN, and tuneloom runs offline.
    slots = GenerationSlots(ctx.max_generations_per_key, None if ctx.db.is_sqlite else SharedSlots(ctx.db))
    builds = BuildLeases(ctx.db, ctx.artifacts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        slots.start()
        builds.start()
        try:
            yield
        finally:
            await run_in_threadpool(builds.stop)
            await run_in_threadpool(slots.stop)

    app = FastAPI(title="tuneloom", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.context = ctx
    app.state.generation_slots = slots
    app.state.builds = builds
    app.state.exports = Exports(ctx.artifacts, ctx.pepper, ctx.exports_cache_bytes)
    app.add_middleware(BodySizeLimit, limit=ctx.max_json_bytes)
    app.add_middleware(SecurityHeaders)  # added last: the outermost of the two
    app.include_router(apps.router)
    app.include_router(datasets.router)
    app.include_router(models.router)
    app.include_router(models.templates_router)
    app.include_router(predict.router)
    app.include_router(openai_compat.router)
    app.include_router(nodes.router)
    app.include_router(downloads.router)
    mount_web(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> Any:
        try:
            ctx.db.ping()
        except DBAPIError as err:
            if not is_unavailable(err):
                raise
            log.warning("health check: database unavailable: %s", err.orig)
            body = {"status": "unavailable", "database": "unavailable", "message": DATABASE_DOWN}
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        health: dict[str, Any] = {
            "status": "ok",
            "database": "ok",
            "version": __version__,
            "backend": ctx.inference_backend,
        }
        if ctx.inference_backend == "remote":
            health["generation_nodes"] = len(live_nodes(ctx.db))
        return health

    @app.exception_handler(DBAPIError)
    def database_error(_: Request, err: DBAPIError) -> JSONResponse:
        if is_disk_full(err):
            log.warning("database disk full: %s", err.orig)
            return JSONResponse({"code": "DISK_FULL", "message": DATABASE_DISK_FULL}, status_code=507)
        if not is_unavailable(err):
            raise err  # a bug: the usual 500, with its traceback in the server log
        log.warning("database unavailable: %s", err.orig)
        body = {"code": "DATABASE_UNAVAILABLE", "message": DATABASE_DOWN}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(TuneloomError)
    def tuneloom_error(_: Request, err: TuneloomError) -> JSONResponse:
        status = next((code for kind, code in STATUS_BY_ERROR if isinstance(err, kind)), 400)
        return JSONResponse(err.to_dict(), status_code=status)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, err: HTTPException) -> JSONResponse:
        """A missing key, an unknown route: the same {code, message} shape as every other error.

        Under /v1 (an unknown endpoint such as /v1/embeddings, a wrong method) OpenAI's shape instead,
        as there: an OpenAI client reads only that one.
        """
        if request.url.path.startswith(f"{openai_compat.router.prefix}/"):
            unknown = err.status_code in (404, 405) and err.detail in ("Not Found", "Method Not Allowed")
            message = f"Invalid URL ({request.method} {request.url.path})" if unknown else str(err.detail)
            return openai_compat.openai_error(err.status_code, message, headers=err.headers, coded=not unknown)
        code = CODE_BY_STATUS.get(err.status_code, f"HTTP_{err.status_code}")
        body = {"code": code, "message": str(err.detail)}
        return JSONResponse(body, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        """A body or query that does not fit its schema: its problems named (20 at most), the first as `key`."""
        errors = as_sent(list(err.errors()), request)
        return JSONResponse(describe(errors, request.headers.get("content-type")), status_code=422)

    @app.exception_handler(LimitExceeded)
    def limit_exceeded(_: Request, err: LimitExceeded) -> JSONResponse:
        """413/429 from the server's limits, in the same shape as every other error (not FastAPI's {"detail"})."""
        return JSONResponse(err.to_dict(), status_code=err.status_code, headers=err.headers)

    return app
