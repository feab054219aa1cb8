"""One HTTP session to the server: auth header, JSON in and out, server-sent events, and errors.

Every failure reaches the caller as a `TuneloomAPIError` carrying the HTTP status and the server's
own `code`, `message` and offending settings `key`, so scripts can branch on them without parsing
text; a server that cannot be reached is a `TuneloomConnectionError` naming the URL that failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict, Unpack

import httpx


class TuneloomAPIError(Exception):
    """The server refused or failed a request: `status` (HTTP), `code`, `message`, `key` (a settings key)."""

    def __init__(
        self, status: int, code: str, message: str, key: str | None = None, details: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.key = key
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        where = f" (key '{self.key}')" if self.key else ""
        return f"HTTP {self.status} {self.code}: {self.message}{where}"


class TuneloomConnectionError(TuneloomAPIError, ConnectionError):
    """No HTTP answer at all (refused, unreachable, timed out): status 0, and the URL in the message."""

    def __init__(self, url: str, err: Exception):
        kind = "no answer in time from" if isinstance(err, httpx.TimeoutException) else "cannot reach"
        super().__init__(0, "CONNECTION_ERROR", f"{kind} the tuneloom server at {url}: {err or type(err).__name__}")
        self.url = url

    def __str__(self) -> str:
        return self.message


def error_from_response(response: httpx.Response) -> TuneloomAPIError:
    """The server answers every error as `{code, message, details?}`; anything else came from something else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if not isinstance(body, dict):
        text = response.text.strip()[:500] or response.reason_phrase
        return TuneloomAPIError(status, f"HTTP_{status}", text)
    raw_details = body.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    if "message" in body:
        key = body.get("key") or details.get("key")
        return TuneloomAPIError(status, str(body.get("code", f"HTTP_{status}")), str(body["message"]), key, details)
    return TuneloomAPIError(status, f"HTTP_{status}", str(body)[:500])  # not tuneloom's answer: a proxy's?


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) per server-sent event; `event` is "message" unless the server named it."""
    data: list[str] = []
    event, named = "message", False
    for line in lines:
        if not line:
            if data or named:
                yield event, "\n".join(data)
            event, data, named = "message", [], False
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event, named = value, True
            elif name == "data":
                data.append(value)
    if data or named:
        yield event, "\n".join(data)


class RequestOptions(TypedDict, total=False):
    """What a request may carry besides its method and path. `timeout`: the longest wait for this answer,
    where it may take longer than the client's (None: the client's)."""

    json: Any
    params: dict[str, Any] | None
    content: Any
    timeout: float | None


class Transport:
    """A thin wrapper over one `httpx.Client` (connection reuse) that raises tuneloom errors."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Key {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """The decoded JSON answer (None for an empty one, such as 204 after a delete)."""
        return self._decoded(self._send(method, path, **options))

    def listed(self, path: str, *, limit: int | None, page_size: int) -> Iterator[Any]:
        """The items of a paged list in its order, `page_size` a request, the first `limit` (None: all).

        Pages are read as the iteration goes, each following the previous one's `Link: <…>; rel="next"`
        (the same query with a cursor; `server.paging`); the last page has no such link.
        """
        left = limit
        url: str | None = path
        params: dict[str, Any] | None = {"limit": page_size if left is None else max(1, min(page_size, left))}
        while url is not None and (left is None or left > 0):
            response = self._send("GET", url, params=params)
            items = self._decoded(response)[:left]
            yield from items
            left = None if left is None else left - len(items)
            url, params = response.links.get("next", {}).get("url"), None  # the link keeps `limit`

    def _send(self, method: str, path: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        timeout = options.get("timeout")
        wait = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        json, params, content = options.get("json"), options.get("params"), options.get("content")
        try:
            response = self.http.request(
                method, path, json=json, params=_drop_none(params), content=content, timeout=wait
            )
        except httpx.TransportError as err:
            raise TuneloomConnectionError(self.base_url, err) from err
        if response.is_error:
            raise error_from_response(response)
        return response

    def _decoded(self, response: httpx.Response) -> Any:
        """The JSON body; a success that is not JSON comes from something other than tuneloom (a proxy, a
        login page, another service on that port), and a bare JSONDecodeError would name neither."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            text = response.text.strip()[:200]
            where = f"{response.request.method} {response.request.url}"
            raise TuneloomAPIError(
                response.status_code,
                "NOT_JSON",
                f"{where} answered HTTP {response.status_code} with something that is not JSON: is "
                f"{self.base_url} a tuneloom server? The answer began: {text!r}",
            ) from None

    def events(self, path: str, body: Any) -> Iterator[tuple[str, Any]]:
        """POST, then (event, decoded data) for each server-sent event as it arrives."""
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                for event, data in parse_sse(response.iter_lines()):
                    yield event, _decode(data)
        except httpx.TransportError as err:
            raise TuneloomConnectionError(self.base_url, err) from err

    def download(
        self, path: str, to: Path, *, timeout: float = 600.0, progress: Callable[[int, int | None], None] | None = None
    ) -> str:
        """Stream GET `path` into the file `to`; its SHA-256. `timeout`: the longest wait for a next chunk.
        `progress(done, total)` after each chunk, in bytes (total: the announced length, if any)."""
        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", path, timeout=timeout) as response, to.open("wb") as out:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                length = response.headers.get("content-length")
                total, done = (int(length) if length and length.isdigit() else None), 0
                for chunk in response.iter_bytes(1024 * 1024):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except httpx.TransportError as err:
            raise TuneloomConnectionError(self.base_url, err) from err
        return digest.hexdigest()

    def close(self) -> None:
        self.http.close()


def _decode(data: str) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data


def _drop_none(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}
