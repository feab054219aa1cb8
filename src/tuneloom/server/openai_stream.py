"""The OpenAI-compatible routes' streams: server-sent chunks of one or `n` choices, as OpenAI sends them.

OpenAI streams the `n` choices of a request interleaved, each chunk holding one choice that
`choices[0].index` names; every choice opens (the echoed prompt, or chat's role) and ends with its
own `finish_reason` chunk; then, where `stream_options.include_usage` asks, one chunk with no
choices and the usage of all of them (the prompt counted once), and `data: [DONE]`. Each choice is
its own generation (its own row of the version's batch: `GenerationService.streams`), so the
chunks come in the order the choices produce them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from tuneloom.errors import TuneloomError
from tuneloom.generate.results import TokenLogprob
from tuneloom.server.backends import PieceStream
from tuneloom.server.event_stream import event_stream
from tuneloom.server.openai_logprobs import chat_logprobs, completion_logprobs
from tuneloom.server.schemas.openai import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChoice,
    FinishReason,
    ResponseHead,
    Usage,
    finish_reason,
)

log = logging.getLogger(__name__)
# A choice's chunk: (index, text, log-probabilities of its tokens or None, finish_reason on its last chunk only)
ChunkOf = Callable[[int, str, Sequence[TokenLogprob] | None, FinishReason | None], BaseModel]
Piece = tuple[int, str | None, tuple[TokenLogprob, ...]]  # (choice, text or None once it has ended, logprobs)


def streaming(chunks: AsyncIterator[str], done: BackgroundTask) -> StreamingResponse:
    """The response; `done` (it ends every choice's generation and frees the slot) runs after it, or after a
    disconnect."""
    return event_stream(chunks, done)


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def completion_chunks(
    choices: Sequence[PieceStream], head: ResponseHead, with_usage: bool, echoed: str, reported: bool
) -> AsyncIterator[str]:
    """/v1/completions' chunks; `echoed` (the prompt, with `echo`) opens each choice, as OpenAI sends it.
    `reported`: each chunk carries the log-probabilities of its choice's tokens since its previous chunk."""

    def chunk(
        index: int, text: str, tokens: Sequence[TokenLogprob] | None = None, finish: FinishReason | None = None
    ) -> Completion:
        logprobs = completion_logprobs(tokens if reported else None)
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        return Completion(**head, choices=[choice])

    def totals(counts: Usage) -> Completion:
        return Completion(**head, choices=[], usage=counts)

    opening = (lambda index: chunk(index, echoed)) if echoed else None
    return _choice_chunks(choices, chunk, opening=opening, totals=totals if with_usage else None)


def chat_chunks(
    choices: Sequence[PieceStream], head: ResponseHead, with_usage: bool, reported: bool
) -> AsyncIterator[str]:
    """/v1/chat/completions' chunks: each choice opens with the assistant's role, as OpenAI sends it.
    `reported`: each chunk carries the log-probabilities of its choice's tokens since its previous chunk."""

    def chunk(
        index: int, text: str, tokens: Sequence[TokenLogprob] | None = None, finish: FinishReason | None = None
    ) -> ChatCompletionChunk:
        delta = ChatDelta() if finish else ChatDelta(content=text)
        logprobs = chat_logprobs(tokens if reported else None)
        choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)
        return ChatCompletionChunk(**head, choices=[choice])

    def opening(index: int) -> ChatCompletionChunk:
        choice = ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))
        return ChatCompletionChunk(**head, choices=[choice])

    def totals(counts: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(**head, choices=[], usage=counts)

    return _choice_chunks(choices, chunk, opening=opening, totals=totals if with_usage else None)


async def _choice_chunks(
    choices: Sequence[PieceStream],
    chunk: ChunkOf,
    *,
    opening: Callable[[int], BaseModel] | None,
    totals: Callable[[Usage], BaseModel] | None,
) -> AsyncIterator[str]:
    """Every choice's opening, then their chunks as they come, each choice's last with its finish_reason; then
    the usage (`totals`, where asked for) and `[DONE]`. A failure mid-stream ends it with OpenAI's error shape."""
    if opening is not None:
        for index in range(len(choices)):
            yield _data(opening(index))
    try:
        async for index, text, tokens in interleaved(choices):
            ended = text is None
            reason = finish_reason(choices[index].finish_reason) if ended else None
            yield _data(chunk(index, text or "", None if ended else tokens, reason))
    except Exception as err:
        yield _data(_stream_error(err))
        return
    if totals is not None:  # the choices share their prompt: counted once, as OpenAI counts it
        yield _data(totals(usage(choices[0].prompt_tokens, sum(pieces.tokens for pieces in choices))))
    yield _data("[DONE]")


async def interleaved(choices: Sequence[PieceStream]) -> AsyncIterator[Piece]:
    """Each choice's pieces as it produces them, with its index, and (index, None, ()) when it has ended.

    One task reads each choice; the first error raises here. Closing this (the client left, or an error)
    stops the readers, which cancels the generations they read (the response's background task cancels
    them too).
    """
    queue: asyncio.Queue[Piece | BaseException] = asyncio.Queue()

    async def read(index: int, pieces: PieceStream) -> None:
        try:
            async for text, tokens in pieces.chunks():
                queue.put_nowait((index, text, tokens))
            queue.put_nowait((index, None, ()))
        except Exception as err:
            queue.put_nowait(err)

    readers = [asyncio.ensure_future(read(index, pieces)) for index, pieces in enumerate(choices)]
    try:
        running = len(choices)
        while running:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item[1] is None:
                running -= 1
            yield item
    finally:
        for reader in readers:
            reader.cancel()


def _data(chunk: BaseModel | dict[str, Any] | str) -> str:
    text = (
        chunk.model_dump_json()
        if isinstance(chunk, BaseModel)
        else chunk
        if isinstance(chunk, str)
        else json.dumps(chunk)
    )
    return f"data: {text}\n\n"


def _stream_error(err: Exception) -> dict[str, Any]:
    """An error after the stream started: the `openai` client raises it as an APIError."""
    if isinstance(err, TuneloomError):
        message = err.message
    else:
        log.exception("generation failed", exc_info=err)
        message = f"generation failed ({type(err).__name__})"
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
