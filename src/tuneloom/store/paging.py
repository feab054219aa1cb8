"""Lists read newest first a page at a time: `limit` rows, then an opaque cursor for the next page.

A model trained hundreds of times has hundreds of versions; one response with all of them grows
without bound. A page is the newest `limit` rows ordered by (created_at, id), descending, and its
cursor names the last row shown by that pair, so the next page starts right after it whatever
changed meanwhile: a row added since is newer than every row paged so far (the first page shows
it), and a row deleted since cannot shift the others; nothing is skipped or repeated, as an offset
would. The cursor is `<microseconds since the epoch>.<id>`: clients pass back what they were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from tuneloom.errors import SettingsError
from tuneloom.store.ids import ID_PATTERN
from tuneloom.store.models import DatasetVersion, ModelVersion

DEFAULT_PAGE = 50
MAX_PAGE = 500
CURSOR_KEY = "before"  # the query parameter that carries a cursor
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = TypeVar("Row", ModelVersion, DatasetVersion)


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page, newest first; `next_cursor` continues after its last row (None: this was the last page)."""

    items: list[Row]
    next_cursor: str | None


def newest_first(
    session: Session, table: type[Row], condition: ColumnElement[bool], *, limit: int, before: str | None
) -> Page[Row]:
    """The rows matching `condition`, newest first: the `limit` that follow the cursor `before` (None: the first)."""
    limit = max(1, min(int(limit), MAX_PAGE))
    query = select(table).where(condition)
    if before is not None:
        at, row_id = read_cursor(before)
        query = query.where(or_(table.created_at < at, and_(table.created_at == at, table.id < row_id)))
    rows = list(session.scalars(query.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return Page(items, cursor_of(items[-1]) if len(rows) > limit else None)


def cursor_of(row: ModelVersion | DatasetVersion) -> str:
    return f"{(row.created_at - _EPOCH) // _MICROSECOND}.{row.id}"


def read_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the row a cursor names; a cursor no page gave is a 422 naming `before`."""
    micros, _, row_id = cursor.partition(".")
    try:
        if not micros.isdigit() or not ID_PATTERN.fullmatch(row_id):
            raise ValueError(cursor)
        return _EPOCH + int(micros) * _MICROSECOND, row_id
    except (ValueError, OverflowError):
        raise SettingsError(
            f"{CURSOR_KEY} must be the cursor a previous page gave (in its Link header); got {cursor[:80]!r}",
            key=CURSOR_KEY,
        ) from None
