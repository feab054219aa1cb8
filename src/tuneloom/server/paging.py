"""Paged lists in the API: `?limit=` and `?before=`, the next page's address in a `Link` header.

The body stays the JSON array it always was, so a client that reads a list keeps working, and the
next page is named the way GitHub's API names it (RFC 8288): `Link: </api/…?limit=50&before=…>;
rel="next"`, the same query with the cursor of the page's last row; the last page has no header.
The address is path-absolute, as the console and the SDK send their own requests.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from tuneloom.store.paging import CURSOR_KEY, DEFAULT_PAGE, MAX_PAGE

PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"rows per page (default {DEFAULT_PAGE})")]
PageCursor = Annotated[
    str | None,
    Query(alias=CURSOR_KEY, max_length=100, description="where the page starts: the cursor a Link header gave"),
]


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    """Name the next page in `response`'s Link header (none when `cursor` is None: this page was the last)."""
    if cursor is not None:
        url = request.url.include_query_params(**{CURSOR_KEY: cursor})
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
