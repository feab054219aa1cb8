"""Every server-sent event stream's response: /generate, the OpenAI streams, a node's /stream and a run's /events.

A stream stops when its client leaves: uvicorn then answers every write with nothing, and Starlette
cancels the stream (its background task ends the generation). Both learn it in a callback that the
event loop runs after a write to the socket failed. A stream whose chunks were already waiting (one
decoding step of 128 streamed choices, a page of a run's log) wrote them all in one go before that
callback could run, each write after the failure logging asyncio's "socket.send() raised exception.":
so the loop gets a turn after every chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(chunks: AsyncIterator[str], background: BackgroundTask | None = None) -> StreamingResponse:
    """`chunks` as `text/event-stream`; `background` runs after the last one, or after the client left."""
    return StreamingResponse(
        _turn_after_each(chunks), media_type="text/event-stream", headers=SSE_HEADERS, background=background
    )


async def _turn_after_each(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """`chunks`, the event loop running between two of them, so that a client gone stops the next write."""
    async for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)  # the loop's turn: uvicorn's connection_lost, if the write above failed
