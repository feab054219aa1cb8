"""Limits that keep one client from exhausting the server: body size, generations per key, max_tokens.

- JSON bodies: at most `max_json_bytes` (default 1 MiB) on every route but uploads, which stream to
  disk under their own, larger limit. A declared `Content-Length` over the limit is refused before a
  byte is read; a chunked body is counted as it arrives. The answer is a 413 naming the limit.
- Upload idle time: an upload that sends nothing for `upload_idle_s` (default 60 s) is dropped with
  a 408 naming the file and the limit, its `.part` file removed; uvicorn itself waits for a body
  forever, so a client that stalls after its headers held the request and its file for good.
- Generations: one key may run at most `max_generations_per_key` at a time (/predict, the SSE
  stream, the OpenAI routes, the evaluation page); the next one is a 429 naming the limit, at once,
  rather than a queue that one client can grow without bound while others wait behind it. On
  PostgreSQL the count is shared by every server on the database (`store.generation_slots`).
- max_tokens: a server-wide cap (`--max-tokens-limit`, at most `MAX_TOKENS_LIMIT`), refused as a
  422 naming the key and the limit; a request that does not ask gets the default, lowered to the cap.
- batch tokens: inputs × (longest prompt + max_tokens), what one request can hold in memory at once
  (128 inputs × 4,096 tokens would exhaust it though each count is within its own cap), at most
  `--max-batch-tokens`; above it is a 422 naming the limit and the request's figure.

Every refusal here is a `LimitExceeded`: the API answers it in tuneloom's error shape, `{"code",
"message", "details": {"limit"}}`, like any other error; the OpenAI routes answer it in OpenAI's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloom.errors import SettingsError
from tuneloom.generate.params import InferenceParams
from tuneloom.server.heartbeat import Heartbeat
from tuneloom.server.limit_defaults import (
    DEFAULT_MAX_GENERATIONS_PER_KEY,
    DEFAULT_MAX_JSON_BYTES,
)
from tuneloom.store import generation_slots as generation_slots_store
from tuneloom.store.db import Database

if TYPE_CHECKING:
    from tuneloom.generate.results import Prompt

log = logging.getLogger("tuneloom.server")

UPLOAD_PATH = re.compile(r"^/api/apps/[^/]+/datasets/[^/]+/uploads/?$")


class LimitExceeded(HTTPException):
    """A request refused by one of the server's limits, with a stable `code` and the `limit` it hit.

    An HTTPException, not a TuneloomError, because the body limit fires inside FastAPI's body reading,
    which lets only HTTPExceptions through (anything else becomes a bare 400 "error parsing the body").
    """

    def __init__(self, status: int, code: str, message: str, limit: float, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.code = code
        self.limit = limit

    def to_dict(self) -> dict[str, object]:
        """tuneloom's error shape (as `TuneloomError.to_dict`), with the limit as a number."""
        return {"code": self.code, "message": self.detail, "details": {"limit": self.limit}}


def body_too_large(limit: int) -> LimitExceeded:
    message = f"request body larger than the {limit:,}-byte limit for JSON bodies (--max-json-kb)"
    return LimitExceeded(413, "REQUEST_TOO_LARGE", message, limit)


def upload_too_large(limit: int) -> LimitExceeded:
    message = f"upload larger than the {limit:,}-byte limit (--max-upload-mb)"
    return LimitExceeded(413, "UPLOAD_TOO_LARGE", message, limit)


def upload_stalled(filename: str, limit: float) -> LimitExceeded:
    """The 408 for an upload that went silent; `Connection: close`, as the rest of its body may still come."""
    message = (
        f"the upload of '{filename}' sent nothing for {limit:g} s, the limit between parts of an upload "
        "(--upload-idle-seconds): it was dropped and nothing was stored; send it again"
    )
    return LimitExceeded(408, "UPLOAD_STALLED", message, limit, {"Connection": "close"})


async def body_chunks(request: Request, idle_s: float, filename: str) -> AsyncIterator[bytes]:
    """The request body as it arrives; `upload_stalled` when nothing arrives for `idle_s` seconds."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), idle_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise upload_stalled(filename, idle_s) from None
        yield chunk


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes, except uploads (they have their own limit).

    It wraps `receive`, so the 413 is raised where the route reads its body and answered by the
    route's own error handling (the OpenAI routes answer in OpenAI's error shape).
    """

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_JSON_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or UPLOAD_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        declared_size = int(declared) if declared.isdigit() else 0  # over the limit: refused at the first chunk
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":  # not the http.disconnect a streaming response listens for
                received += len(message.get("body", b""))
                if max(declared_size, received) > self.limit:
                    raise body_too_large(self.limit)
            return message

        await self.app(scope, counted, send)


class GenerationSlots:
    """How many generations each key has running; taking one more than `limit` is a 429.

    Counted in this server's memory, and also in the database when `shared` is given (servers on
    one PostgreSQL database): the memory count refuses without a query, the database's holds the cap
    across servers.
    """

    def __init__(self, limit: int = DEFAULT_MAX_GENERATIONS_PER_KEY, shared: SharedSlots | None = None) -> None:
        self.limit = limit
        self.shared = shared
        self.running: Counter[str] = Counter()  # touched only from the event loop: no lock needed

    def start(self) -> None:
        if self.shared is not None:
            self.shared.start()

    def stop(self) -> None:
        """Blocking (frees the database's slots): run it off the event loop."""
        if self.shared is not None:
            self.shared.stop()

    async def take(self, key_id: str) -> Slot:
        if self.running[key_id] >= self.limit:
            raise self._refusal()
        self.running[key_id] += 1
        slot = Slot(self, key_id)
        if self.shared is not None:
            try:
                await in_thread(self.shared.take, slot, self.limit)
            except BaseException:  # a database error, or the request cancelled meanwhile
                await slot.release()
                raise
            if slot.number is None:
                await slot.release()
                raise self._refusal(elsewhere=True)
        return slot

    @asynccontextmanager
    async def hold(self, key_id: str) -> AsyncIterator[None]:
        slot = await self.take(key_id)
        try:
            yield
        finally:
            await slot.release()

    def _refusal(self, *, elsewhere: bool = False) -> LimitExceeded:
        where = " on the servers sharing this database" if elsewhere else ""
        return LimitExceeded(
            429,
            "TOO_MANY_GENERATIONS",
            f"this key already has {self.limit} generations running{where}, the limit per key "
            "(--max-concurrent-generations-per-key); wait for one to finish",
            self.limit,
            {"Retry-After": "1"},
        )


@dataclasses.dataclass
class Slot:
    """One running generation; `release` is idempotent (a stream may end and be cancelled too)."""

    slots: GenerationSlots
    key_id: str
    number: int | None = None  # its row in the database's count, when the count is shared
    released: bool = False

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        running = self.slots.running
        running[self.key_id] -= 1
        if running[self.key_id] <= 0:
            del running[self.key_id]
        if self.slots.shared is not None:
            await in_thread(self.slots.shared.release, self)


async def in_thread(function: Callable[..., None], *args: Any) -> None:
    """Run a blocking call in a thread, to its end even if the awaiting request is cancelled meanwhile.

    The call is submitted before the first await, so a cancelled request still takes or frees its
    database slot; waiting for it is what a cancellation may cut short.
    """
    await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, function, *args))


class SharedSlots:
    """This server's part of the database's count (`store.generation_slots`), its leases kept alive.

    Blocking methods (database writes), run in threads; `_lock` orders a take that is still running
    against the release of a request that left meanwhile, so that neither leaves a row behind.
    """

    def __init__(self, db: Database, lease_s: float = generation_slots_store.SLOT_LEASE_S) -> None:
        self.db, self.lease_s = db, lease_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(self._renew, lease_s / 3, "generation-slots")

    def start(self) -> None:
        self._heartbeat.start()

    def stop(self) -> None:
        self._heartbeat.stop()
        try:
            generation_slots_store.release_all(self.db, self.holder)
        except Exception as err:  # their lease runs out by itself
            log.warning("could not free this server's generation slots: %s", err)

    def take(self, slot: Slot, limit: int) -> None:
        """Set `slot.number` to a database slot, or leave it None when the key has `limit` running."""
        number = generation_slots_store.take(self.db, slot.key_id, limit, self.holder, self.lease_s)
        with self._lock:
            if number is None or not slot.released:
                slot.number = number
                if number is not None:
                    self._held.add((slot.key_id, number))
                return
        self._free(slot.key_id, number)  # the request was released while this ran

    def release(self, slot: Slot) -> None:
        with self._lock:
            number, slot.number = slot.number, None
            if number is None:  # refused, or its take still runs (and frees the row itself)
                return
            self._held.discard((slot.key_id, number))  # not renewed from now on, even if the delete fails
        self._free(slot.key_id, number)

    def _free(self, key_id: str, number: int) -> None:
        try:
            generation_slots_store.release(self.db, key_id, number, self.holder)
        except Exception as err:
            log.warning("could not free a generation slot (it frees itself within %.0f s): %s", self.lease_s, err)

    def _renew(self) -> None:
        with self._lock:
            held = list(self._held)
        generation_slots_store.renew(self.db, self.holder, held, self.lease_s)


def generation_slots(request: Request) -> GenerationSlots:
    """The app's one `GenerationSlots` (set up by `create_app`)."""
    slots: GenerationSlots = request.app.state.generation_slots
    return slots


def cap_max_tokens(params: InferenceParams, limit: int, *, asked: bool, key: str = "max_tokens") -> InferenceParams:
    """`params` within the server's max_tokens cap: refused if asked for above it, else lowered to it."""
    if params.max_tokens <= limit:
        return params
    if asked:
        raise SettingsError(
            f"'{key}' is {params.max_tokens}, above this server's limit of {limit} tokens (--max-tokens-limit)",
            key=key,
        )
    return dataclasses.replace(params, max_tokens=limit)


def check_batch_tokens(
    loaded: Any, texts: Sequence[Prompt], params: InferenceParams, limit: int, *, as_sent: bool = False
) -> None:
    """Refuse a request whose inputs × (longest prompt + max_tokens) exceeds `limit` (blocking: tokenizes).

    `loaded` is what the generation service's cache holds for the version: anything with the
    version's `tokenizer` and `prompt_format`. `as_sent`: the texts are the prompts themselves (a
    completion's echo with logprobs), counted without the prompt format they will not get.
    """
    from tuneloom.generate.generator import count_prompt_tokens, model_prompt

    prompts = texts if as_sent else [model_prompt(loaded, text, params) for text in texts]
    longest = max(count_prompt_tokens(loaded, prompt) for prompt in prompts)
    refuse_above(limit, len(texts), longest, params.max_tokens, params.num_beams)


def refuse_above(limit: int, inputs: int, longest_prompt: int, max_tokens: int, beams: int = 1) -> None:
    """The 422 for a request over `--max-batch-tokens`, naming its figure; for prompts already counted.

    Beam search keeps `num_beams` rows per input, so it counts that many times.
    """
    from tuneloom.server.engine import batch_tokens

    figure = batch_tokens(inputs, longest_prompt, max_tokens, beams)
    if figure > limit:
        rows = f"{inputs} input(s) × {beams} beams" if beams > 1 else f"{inputs} input(s)"
        raise SettingsError(
            f"this request needs {rows} × ({longest_prompt} prompt tokens + {max_tokens} max_tokens) "
            f"= {figure:,} batch tokens, above this server's limit of {limit:,} (--max-batch-tokens); "
            "send fewer inputs or ask for fewer max_tokens",
            key="max_batch_tokens",
            details={"limit": limit, "batch_tokens": figure},
        )
