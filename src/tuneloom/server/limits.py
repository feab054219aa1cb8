"""Limits that keep one client from exhausting the server: body size, generations per key, max_tokens.

- JSON bodies: at most `max_json_bytes` (default 1 MiB) on every route but uploads, which stream to
  disk under their own, larger limit. A declared `Content-Length` over the limit is refused before a
  byte is read; a chunked body is counted as it arrives. The answer is a 413 naming the limit.
- Generations: one key may run at most `max_generations_per_key` at a time (/predict, the SSE
  stream, the OpenAI routes, the evaluation page); the next one is a 429 naming the limit, at once,
  rather than a queue that one client can grow without bound while others wait behind it.
- max_tokens: a server-wide cap (`--max-tokens-limit`, at most `MAX_TOKENS_LIMIT`), refused as a
  422 naming the key and the limit; a request that does not ask gets the default, lowered to the cap.
- batch tokens: inputs × (longest prompt + max_tokens), what one request can hold in memory at once
  (128 inputs × 4,096 tokens would exhaust it though each count is within its own cap), at most
  `--max-batch-tokens`; above it is a 422 naming the limit and the request's figure.

Every refusal here is a `LimitExceeded`: the API answers it in tuneloom's error shape, `{"code",
"message", "details": {"limit"}}`, like any other error; the OpenAI routes answer it in OpenAI's.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloom.errors import SettingsError
from tuneloom.generate.params import InferenceParams

DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_MAX_GENERATIONS_PER_KEY = 4
DEFAULT_MAX_BATCH_TOKENS = 65_536  # e.g. 128 inputs × 512 tokens, or 16 × 4,096; ~3 GiB of KV cache for SmolLM2
UPLOAD_PATH = re.compile(r"^/api/apps/[^/]+/datasets/[^/]+/uploads/?$")


class LimitExceeded(HTTPException):
    """A request refused by one of the server's limits, with a stable `code` and the `limit` it hit.

    An HTTPException, not a TuneloomError, because the body limit fires inside FastAPI's body reading,
    which lets only HTTPExceptions through (anything else becomes a bare 400 "error parsing the body").
    """

    def __init__(self, status: int, code: str, message: str, limit: int, headers: dict[str, str] | None = None):
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
    """How many generations each key has running; taking one more than `limit` is a 429."""

    def __init__(self, limit: int = DEFAULT_MAX_GENERATIONS_PER_KEY) -> None:
        self.limit = limit
        self.running: Counter[str] = Counter()  # touched only from the event loop: no lock needed

    def take(self, key_id: str) -> Slot:
        if self.running[key_id] >= self.limit:
            raise LimitExceeded(
                429,
                "TOO_MANY_GENERATIONS",
                f"this key already has {self.limit} generations running, the limit per key "
                "(--max-concurrent-generations-per-key); wait for one to finish",
                self.limit,
                {"Retry-After": "1"},
            )
        self.running[key_id] += 1
        return Slot(self, key_id)

    @asynccontextmanager
    async def hold(self, key_id: str) -> AsyncIterator[None]:
        slot = self.take(key_id)
        try:
            yield
        finally:
            slot.release()


@dataclasses.dataclass
class Slot:
    """One running generation; `release` is idempotent (a stream may end and be cancelled too)."""

    slots: GenerationSlots
    key_id: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots.running[self.key_id] -= 1
            if self.slots.running[self.key_id] <= 0:
                del self.slots.running[self.key_id]


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


def check_batch_tokens(loaded: Any, texts: Sequence[str], params: InferenceParams, limit: int) -> None:
    """Refuse a request whose inputs × (longest prompt + max_tokens) exceeds `limit` (blocking: tokenizes).

    `loaded` is what the generation service's cache holds for the version: anything with the
    version's `tokenizer` and `prompt_format`.
    """
    from tuneloom.generate.generator import render_prompt
    from tuneloom.server.engine import count_tokens

    longest = max(count_tokens(loaded, render_prompt(loaded, text, params)) for text in texts)
    refuse_above(limit, len(texts), longest, params.max_tokens)


def refuse_above(limit: int, inputs: int, longest_prompt: int, max_tokens: int) -> None:
    """The 422 for a request over `--max-batch-tokens`, naming its figure; for prompts already counted."""
    from tuneloom.server.engine import batch_tokens

    figure = batch_tokens(inputs, longest_prompt, max_tokens)
    if figure > limit:
        raise SettingsError(
            f"this request needs {inputs} input(s) × ({longest_prompt} prompt tokens + {max_tokens} max_tokens) "
            f"= {figure:,} batch tokens, above this server's limit of {limit:,} (--max-batch-tokens); "
            "send fewer inputs or ask for fewer max_tokens",
            key="max_batch_tokens",
            details={"limit": limit, "batch_tokens": figure},
        )
