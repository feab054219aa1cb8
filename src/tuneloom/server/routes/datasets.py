"""Datasets of an app: uploads (validated by the core parsers), inputs, and immutable versions.

An upload is streamed to disk under the data dir with a size limit, then parsed with
`tuneloom.data.parse_file`; the valid examples are stored and the report (every refused row with
its line and reason) is the answer. The raw file is kept under the upload's id: nothing a user
uploaded is lost, and its name is display text only — it never becomes a path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tuneloom.data import FORMATS, parse_file
from tuneloom.errors import SettingsError, TuneloomError
from tuneloom.server.auth import context, require_app
from tuneloom.server.cleanup import remove_artifacts
from tuneloom.server.context import ServerContext
from tuneloom.server.limits import body_chunks, upload_too_large
from tuneloom.server.paging import PageCursor, PageLimit, link_next
from tuneloom.server.schemas import (
    DatasetCreate,
    DatasetOut,
    DatasetVersionOut,
    InputOut,
    InputPageOut,
    InputsDelete,
    InvalidRowOut,
    UploadReport,
)
from tuneloom.store import dataset_versions, datasets
from tuneloom.store.artifacts import kept_upload
from tuneloom.store.db import MAX_INTEGER
from tuneloom.store.ids import new_id
from tuneloom.store.paging import DEFAULT_PAGE
from tuneloom.templates import get_template, tokenizer_settings

router = APIRouter(prefix="/api/apps/{app_id}/datasets", tags=["datasets"])
STATS_TEMPLATE = "tiny-random"
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
Context = Annotated[ServerContext, Depends(context)]
AppId = Annotated[str, Depends(require_app)]


@router.post("", status_code=201)
def create_dataset(app_id: AppId, body: DatasetCreate, ctx: Context) -> DatasetOut:
    return DatasetOut.model_validate(datasets.create_dataset(ctx.db, app_id, body.id, body.name))


@router.get("")
def list_datasets(app_id: AppId, ctx: Context) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in datasets.list_datasets(ctx.db, app_id)]


@router.get("/{dataset_id}")
def get_dataset(app_id: AppId, dataset_id: str, ctx: Context) -> DatasetOut:
    return DatasetOut.model_validate(datasets.get_dataset(ctx.db, app_id, dataset_id))


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(app_id: AppId, dataset_id: str, ctx: Context, request: Request) -> Response:
    remove_artifacts(request, datasets.delete_dataset(ctx.db, app_id, dataset_id))
    return Response(status_code=204)


@router.post("/{dataset_id}/uploads", status_code=201)
async def upload(
    app_id: AppId,
    dataset_id: str,
    request: Request,
    ctx: Context,
    filename: Annotated[str, Query(max_length=255)] = "upload",
    format: Annotated[str, Query(pattern="^(" + "|".join(FORMATS) + ")$")] = "auto",
) -> UploadReport:
    """The request body is the file (any content type); `filename` is shown in reports only."""
    if CONTROL_CHARS.search(filename):  # display text only; PostgreSQL cannot even store a NUL
        raise SettingsError("filename must not contain control characters", key="filename")
    dataset = await run_in_threadpool(datasets.get_dataset, ctx.db, app_id, dataset_id)  # 404 before reading a byte
    upload_id = new_id()  # the file's name and the upload's id: deleting the dataset finds the file
    path = await receive_upload(request, ctx, upload_id, filename)
    try:
        parsed = await run_in_threadpool(parse_file, path, format=format)
    except BaseException as error:
        path.unlink(missing_ok=True)  # refused as a whole, or the request was cut off: no row will name it
        if isinstance(error, TuneloomError):
            raise name_upload(error, path, filename) from None
        raise
    parsed.report.source = filename
    try:
        stored = await run_in_threadpool(
            functools.partial(datasets.add_upload, upload_id=upload_id, source_file=filename, began_with=dataset),
            ctx.db,
            app_id,
            dataset_id,
            parsed.report,
            parsed.examples,
        )
    except TuneloomError:
        path.unlink(missing_ok=True)  # refused before storing anything (the dataset was deleted meanwhile)
        raise
    report = parsed.report
    return UploadReport(
        upload_id=stored.id,
        source_file=filename,
        format=report.format,
        total_rows=report.total_rows,
        valid_rows=report.valid_rows,
        invalid_rows=report.invalid_rows,
        invalid_percent=round(report.invalid_percent, 3),
        invalid=[InvalidRowOut(line=r.line, reason=r.reason, excerpt=r.excerpt) for r in report.invalid],
    )


async def receive_upload(request: Request, ctx: ServerContext, upload_id: str, filename: str) -> Path:
    """Stream the body to the upload's `.part` file within the size and idle limits, then keep it (`keep_upload`).

    Whatever ends the stream early (a limit, a client that hangs up or stalls, a full disk, a cancelled
    request) removes the part file at once: no row will ever name it, and a dataset deleted meanwhile
    must leave nothing behind.
    """
    path = ctx.artifacts.upload_file(upload_id)
    try:
        with ctx.artifacts.storing(f"the upload '{filename}'"):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                size = 0
                async for chunk in body_chunks(request, ctx.upload_idle_s, filename):
                    size += len(chunk)
                    if size > ctx.max_upload_bytes:
                        raise upload_too_large(ctx.max_upload_bytes)
                    handle.write(chunk)
            return keep_upload(ctx, path, upload_id, filename)
    except BaseException as error:
        path.unlink(missing_ok=True)
        if isinstance(error, ClientDisconnect):  # nobody reads the answer, but the log gets no traceback
            raise TuneloomError(
                f"the upload of '{filename}' stopped before the whole file arrived: nothing was stored",
                code="UPLOAD_INTERRUPTED",
            ) from None
        raise


def keep_upload(ctx: ServerContext, path: Path, upload_id: str, filename: str) -> Path:
    """Rename the streamed `.part` file to where a complete upload is kept (`artifacts.kept_upload`)."""
    kept = ctx.artifacts.resolve(kept_upload(upload_id, filename))
    path.rename(kept)
    return kept


def name_upload(error: TuneloomError, path: Path, filename: str) -> TuneloomError:
    """Name the user's file in a whole-file error, not the server's copy (its path is nobody's business)."""
    error.message = error.message.replace(str(path), filename)
    error.args = (error.message,)
    if "path" in error.details:
        error.details["path"] = filename
    return error


@router.get("/{dataset_id}/inputs")
def list_inputs(
    app_id: AppId,
    dataset_id: str,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=datasets.MAX_PAGE)] = 100,
    after: Annotated[int | None, Query(ge=0, le=MAX_INTEGER)] = None,
) -> InputPageOut:
    page = datasets.list_inputs(ctx.db, app_id, dataset_id, limit=limit, after=after)
    return InputPageOut(
        items=[InputOut.model_validate(i) for i in page.items],
        next_after=page.next_after,
        total=datasets.count_inputs(ctx.db, app_id, dataset_id),
    )


@router.post("/{dataset_id}/inputs/delete")
def delete_inputs(app_id: AppId, dataset_id: str, body: InputsDelete, ctx: Context) -> dict[str, int]:
    return {"deleted": datasets.delete_inputs(ctx.db, app_id, dataset_id, body.seqs)}


@router.post("/{dataset_id}/versions", status_code=201)
def create_version(
    app_id: AppId, dataset_id: str, ctx: Context, request: Request, template: str = STATS_TEMPLATE
) -> DatasetVersionOut:
    """Snapshot the dataset's current inputs (READY), or say why not (FAILURE, with a message).

    A dataset with no inputs is refused (409 `EMPTY_DATASET`, saying how to upload) and no version is made.

    Token lengths in the stats are counted with `template`'s tokenizer (default: the GPT-2 BPE of
    tiny-random, available offline), as training will see them: prompt, completion and EOS. The
    build's heartbeat is kept fresh meanwhile (`server.builds`), so other servers leave it alone.
    """
    count = token_counter(get_template(template).id)
    datasets.get_dataset(ctx.db, app_id, dataset_id)
    version = dataset_versions.create_version(ctx.db, app_id, dataset_id)
    with request.app.state.builds.building(version.id) as builder:
        built = dataset_versions.build_version(ctx.db, ctx.artifacts, version.id, builder=builder, token_length=count)
    return DatasetVersionOut.model_validate(built)


@functools.lru_cache(maxsize=4)
def token_counter(template_id: str) -> Callable[[str, str], int]:
    from tuneloom.templates.loading import load_tokenizer  # transformers, torch: only once a dataset asks

    tokenizer = load_tokenizer(*tokenizer_settings(template_id))

    def count(prompt: str, completion: str) -> int:
        ids = tokenizer([prompt, completion], add_special_tokens=False)["input_ids"]
        return len(ids[0]) + len(ids[1]) + 1

    return count


@router.get("/{dataset_id}/versions")
def list_versions(
    app_id: AppId,
    dataset_id: str,
    ctx: Context,
    request: Request,
    response: Response,
    limit: PageLimit = DEFAULT_PAGE,
    before: PageCursor = None,
) -> list[DatasetVersionOut]:
    """Newest first, `limit` at a time; the next page's URL is in the `Link` header (`server.paging`)."""
    page = dataset_versions.list_versions(ctx.db, app_id, dataset_id, limit=limit, before=before)
    link_next(request, response, page.next_cursor)
    return [DatasetVersionOut.model_validate(v) for v in page.items]


@router.get("/{dataset_id}/versions/{version_id}")
def get_version(app_id: AppId, dataset_id: str, version_id: str, ctx: Context) -> DatasetVersionOut:
    return DatasetVersionOut.model_validate(dataset_versions.get_version(ctx.db, app_id, dataset_id, version_id))


@router.delete("/{dataset_id}/versions/{version_id}", status_code=204)
def delete_version(app_id: AppId, dataset_id: str, version_id: str, ctx: Context, request: Request) -> Response:
    """Delete a READY or FAILURE version and its snapshot; 409 while a run trains on it or it is being built."""
    remove_artifacts(request, dataset_versions.delete_version(ctx.db, app_id, dataset_id, version_id))
    return Response(status_code=204)
