"""Datasets and their inputs: uploads add the valid examples of a parsed file, with its report.

Inputs are numbered per dataset (`seq`) from a counter on the dataset row, taken under the row's
lock (`FOR UPDATE` on PostgreSQL, the writer lock on SQLite): numbers are never reused, even after
deletes, so `seq` is a stable input id and a paging cursor (`after`) that does not skip or repeat
rows when others are added or deleted between pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from tuneloom.data.types import DataReport, Example
from tuneloom.store.apps import add_under_app, find_app, not_found_in_app, raw_uploads
from tuneloom.store.db import Database
from tuneloom.store.ids import ConflictError, check_id, new_id
from tuneloom.store.models import Dataset, DatasetVersion, Input, ModelVersion, Upload, utcnow
from tuneloom.store.registry import refuse_while_a_run_needs

INSERT_CHUNK = 1000
DELETE_CHUNK = 1000  # input numbers per DELETE statement
MAX_PAGE = 1000


@dataclass(frozen=True)
class InputPage:
    """One page of inputs; pass `next_after` as `after` for the next page (None: this was the last)."""

    items: list[Input]
    next_after: int | None


def create_dataset(db: Database, app_id: str, dataset_id: str | None = None, name: str | None = None) -> Dataset:
    dataset = Dataset(app_id=check_id(app_id, "app id"), id=check_id(dataset_id or new_id(), "dataset id"))
    dataset.name = name or dataset.id
    add_under_app(db, dataset, "dataset")
    return dataset


def get_dataset(db: Database, app_id: str, dataset_id: str) -> Dataset:
    with db.read() as session:
        return find_dataset(session, app_id, dataset_id)


def list_datasets(db: Database, app_id: str) -> list[Dataset]:
    query = select(Dataset).where(Dataset.app_id == check_id(app_id, "app id")).order_by(Dataset.created_at, Dataset.id)
    with db.read() as session:
        find_app(session, app_id)  # a mistyped app is a 404, not "no datasets yet"
        return list(session.scalars(query))


def delete_dataset(db: Database, app_id: str, dataset_id: str) -> list[str]:
    """Delete a dataset, its inputs and versions; returns version artifact paths for the caller to remove.

    Refused (409) while a queued or training run uses one of its versions: that run would fail later
    (or, mid-training, lose its data file), far from the request that caused it.
    """
    with db.write() as session:
        dataset = find_dataset(session, app_id, dataset_id, lock=True)
        versions = select(DatasetVersion.id).where(DatasetVersion.dataset_pk == dataset.pk)
        needs = f"dataset '{dataset_id}' has version '{{version}}' that {{run}} trains on"
        refuse_while_a_run_needs(session, ModelVersion.dataset_version_id.in_(versions), needs, "the dataset")
        paths = session.scalars(
            select(DatasetVersion.artifact_path).where(
                DatasetVersion.dataset_pk == dataset.pk, DatasetVersion.artifact_path.is_not(None)
            )
        )
        removed = [p for p in paths if p] + raw_uploads(session, Upload.dataset_pk == dataset.pk)
        session.delete(dataset)
    return removed


def add_upload(
    db: Database,
    app_id: str,
    dataset_id: str,
    report: DataReport,
    examples: Iterable[Example],
    *,
    source_file: str | None = None,
    upload_id: str | None = None,
    began_with: Dataset | None = None,
) -> Upload:
    """Store an upload's report and its valid examples, in one transaction (all or nothing).

    `source_file` is the user's file name, kept only as text for display; it never names a file.
    `upload_id` is the id the raw file was kept under (`artifacts.kept_upload`), so that it goes with the dataset.
    `began_with` is the dataset as it was when the upload began: if it was deleted and a new one took its
    id meanwhile, the upload is refused (409) rather than stored in a dataset made after it.
    """
    source = (source_file or report.source or "")[:255]
    upload = Upload(
        id=check_id(upload_id or new_id(), "upload id"),
        source_file=source,
        format=report.format,
        valid_rows=report.valid_rows,
        invalid_rows=report.invalid_rows,
        report=report.to_dict(),
    )
    with db.write() as session:
        dataset = find_dataset(session, app_id, dataset_id, lock=True)
        if began_with is not None and not _same_dataset(dataset, began_with):
            raise ConflictError(
                f"dataset '{dataset_id}' was deleted while this upload was being sent, and a new dataset has "
                "its id now: nothing was stored; upload the file again if it belongs in the new one"
            )
        upload.dataset_pk = dataset.pk
        session.add(upload)
        session.flush()
        dataset.next_seq = _insert_inputs(session, dataset, upload, examples)
    return upload


def _same_dataset(found: Dataset, began_with: Dataset) -> bool:
    """Whether `found` is the very row `began_with` was: SQLite may hand a deleted row's key to the next one."""
    return (found.pk, found.created_at) == (began_with.pk, began_with.created_at)


def _insert_inputs(session: Session, dataset: Dataset, upload: Upload, examples: Iterable[Example]) -> int:
    """Insert in chunks (executemany); returns the dataset's next free `seq`."""
    seq = dataset.next_seq
    now = utcnow()
    for chunk in _chunks(examples, INSERT_CHUNK):
        rows: list[dict[str, Any]] = []
        for example in chunk:
            rows.append(
                {
                    "dataset_pk": dataset.pk,
                    "upload_id": upload.id,
                    "seq": seq,
                    "line": example.line,
                    "prompt": example.prompt,
                    "completion": example.completion,
                    "source_file": upload.source_file,
                    "created_at": now,
                }
            )
            seq += 1
        session.execute(insert(Input), rows)
    return seq


def list_uploads(db: Database, app_id: str, dataset_id: str) -> list[Upload]:
    with db.read() as session:
        dataset = find_dataset(session, app_id, dataset_id)
        query = select(Upload).where(Upload.dataset_pk == dataset.pk).order_by(Upload.created_at, Upload.id)
        return list(session.scalars(query))


def list_inputs(db: Database, app_id: str, dataset_id: str, *, limit: int = 100, after: int | None = None) -> InputPage:
    """Inputs in `seq` order, `limit` at a time, starting after the input numbered `after`."""
    limit = max(1, min(int(limit), MAX_PAGE))
    with db.read() as session:
        dataset = find_dataset(session, app_id, dataset_id)
        query = select(Input).where(Input.dataset_pk == dataset.pk)
        if after is not None:
            query = query.where(Input.seq > int(after))
        rows = list(session.scalars(query.order_by(Input.seq).limit(limit + 1)))
    more = len(rows) > limit
    items = rows[:limit]
    return InputPage(items, items[-1].seq if more else None)


def count_inputs(db: Database, app_id: str, dataset_id: str) -> int:
    with db.read() as session:
        dataset = find_dataset(session, app_id, dataset_id)
        return int(session.scalar(select(func.count()).where(Input.dataset_pk == dataset.pk)) or 0)


def delete_inputs(db: Database, app_id: str, dataset_id: str, seqs: Sequence[int] | None = None) -> int:
    """Delete the inputs numbered `seqs`, or all of them when `seqs` is None; returns how many went.

    Versions already made are snapshots and keep their examples. The numbers go `DELETE_CHUNK` to a
    statement: one bound parameter each, and PostgreSQL takes at most 65,535 in one statement.
    """
    with db.write() as session:
        dataset = find_dataset(session, app_id, dataset_id, lock=True)
        query = delete(Input).where(Input.dataset_pk == dataset.pk)
        if seqs is None:
            return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]
        numbers = sorted({int(s) for s in seqs})
        deleted = 0
        for start in range(0, len(numbers), DELETE_CHUNK):
            chunk = query.where(Input.seq.in_(numbers[start : start + DELETE_CHUNK]))
            deleted += int(session.execute(chunk).rowcount or 0)  # type: ignore[attr-defined]
        return deleted


def iter_examples(session: Session, dataset_pk: int, batch: int = INSERT_CHUNK) -> Iterator[tuple[str, str]]:
    """(prompt, completion) of every input in `seq` order, read in keyset-paged batches."""
    after = 0
    while True:
        rows = session.execute(
            select(Input.seq, Input.prompt, Input.completion)
            .where(Input.dataset_pk == dataset_pk, Input.seq > after)
            .order_by(Input.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        for _, prompt, completion in rows:
            yield prompt, completion
        after = rows[-1][0]


def find_dataset(session: Session, app_id: str, dataset_id: str, *, lock: bool = False) -> Dataset:
    """The dataset `dataset_id` of app `app_id`, or NotFoundError (also when it belongs to another app)."""
    query = select(Dataset).where(
        Dataset.app_id == check_id(app_id, "app id"), Dataset.id == check_id(dataset_id, "dataset id")
    )
    if lock:
        query = query.with_for_update()
    dataset = session.scalar(query)
    if dataset is None:
        raise not_found_in_app(session, app_id, "dataset", dataset_id)
    return dataset


def _chunks(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
