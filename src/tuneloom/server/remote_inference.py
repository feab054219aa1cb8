"""Generation on other servers: `tuneloom serve --backend remote` sends each request to a generation node.

A node is a `tuneloom serve --advertise-url URL` sharing this server's database (and its artifacts),
typically on a GPU machine running vLLM. This server keeps the API, keys, limits and the queue; it
never fetches or loads a model version. Each version goes to one node, picked by rendezvous
hashing over the live nodes, so that a version stays loaded (and its adapter cached) on one machine
while the nodes come and go; a node that cannot be reached is skipped for a while and the next
one in that version's order is asked. The node checks and answers the request exactly as it would
its own: its refusals come back here with their status, code and message. Log-probabilities (of the
generated tokens, and of the prompt's with echo) are the node's, carried as `node_wire` writes them; a node
too old to send them is named rather than answered without.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tuneloom.errors import TuneloomError, error_from_dict
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.results import Generation, Prompt, TokenLogprob
from tuneloom.server.backends import start_each
from tuneloom.server.engine import Prediction
from tuneloom.server.node_wire import tokens_of
from tuneloom.store.db import Database
from tuneloom.store.nodes import NodeInfo, live_nodes

log = logging.getLogger("tuneloom.server")
NODES_REFRESH_S = 2.0  # how stale this server's list of live nodes may be
SKIP_UNREACHABLE_S = 10.0  # a node that refused a connection is tried last for this long
TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=30.0, pool=30.0)  # a long generation is not an outage
LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)  # reuse connections under load


class GenerationNodeUnavailable(TuneloomError):
    """No live generation node could take the request (503: try again, or start a node)."""

    code = "GENERATION_NODE_UNAVAILABLE"


class RemoteStream:
    """One generation streamed by a node: iterate for pieces; then `finish_reason` and token counts are set."""

    def __init__(self, response: httpx.Response, node: NodeInfo, logprobs: bool = False):
        self._response = response
        self._node = node
        self._logprobs = logprobs  # asked for: each piece must carry its tokens'
        self._closing: asyncio.Task[None] | None = None  # held: a task nobody references may be collected
        self.finish_reason: str | None = None
        self.tokens = 0
        self.prompt_tokens = 0

    def cancel(self) -> None:
        """Close the connection: the node drops the generation at its next step."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._response.aclose())

    async def __aiter__(self) -> AsyncIterator[str]:
        async for piece, _ in self.chunks():
            yield piece

    async def chunks(self) -> AsyncIterator[tuple[str, tuple[TokenLogprob, ...]]]:
        """Each piece with the log-probabilities of its tokens (none where they were not asked for)."""
        try:
            async for event, data in _server_sent_events(self._response):
                if event == "error":
                    raise error_from_dict(data)
                if event == "done":
                    self.finish_reason, self.tokens = data["finish_reason"], data["tokens"]
                    self.prompt_tokens = data.get("prompt_tokens", 0)
                    return
                tokens = tokens_of(data.get("logprobs"))
                if self._logprobs and tokens is None:
                    raise _without_logprobs(self._node)
                yield data["text"], tokens or ()
        except httpx.TransportError as err:
            raise GenerationNodeUnavailable(f"the generation node stopped answering mid-stream ({err})") from err
        finally:
            await self._response.aclose()
        raise GenerationNodeUnavailable("the generation node ended the stream without finishing it")


class NothingLoaded:
    """The remote backend's `cache`: this server loads no version, so there is nothing to look up or drop."""

    def get(self, version_id: str, path: Path) -> Any:
        raise RuntimeError("a --backend remote server loads no model version; its nodes do")

    def discard(self, version_id: str) -> None:
        return None


class RemoteInference:
    """`await predict(...)`, `await stream(...)` on the live generation nodes; use from the server's event loop."""

    def __init__(self, db: Database, client: httpx.AsyncClient | None = None):
        self.cache = NothingLoaded()
        self.generates_here = False
        self._db = db
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS)
        self._nodes: list[NodeInfo] = []
        self._read_at = float("-inf")
        self._unreachable: dict[str, float] = {}  # node id → until when it is tried last

    async def predict(
        self,
        version_id: str,
        path: Path,
        texts: Sequence[Prompt],
        params: InferenceParams,
        *,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
    ) -> list[Prediction]:
        body = _request_body(version_id, list(texts), params, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        for node in await self._order(version_id):
            try:
                response = await self._client.post(f"{node.url}/internal/generation/predict", json=body, **_auth(node))
            except httpx.TransportError as err:
                self._skip_or_raise(node, err)
                continue
            if _answered(response, node, self._skip):
                return [_prediction(output, node, logprobs) for output in response.json()["outputs"]]
        raise await self._none_answered()

    async def stream(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, *, logprobs: int | None = None
    ) -> RemoteStream:
        """Start the stream on a node; its refusals (before the first piece) raise here."""
        body = _request_body(version_id, [text], params, logprobs=logprobs)
        for node in await self._order(version_id):
            request = self._client.build_request(
                "POST", f"{node.url}/internal/generation/stream", json=body, **_auth(node)
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as err:
                self._skip_or_raise(node, err)
                continue
            if response.status_code == 200:
                return RemoteStream(response, node, logprobs is not None)
            await response.aread()
            await response.aclose()
            _answered(response, node, self._skip)
        raise await self._none_answered()

    async def streams(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, n: int, *, logprobs: int | None = None
    ) -> list[RemoteStream]:
        """`n` streams of `text`, choice i with seed + i: one node stream each (a node counts each against its own
        `--max-batch-tokens`); one refused, the others started are closed."""
        return await start_each(
            self.stream(version_id, path, text, params.for_input(i), logprobs=logprobs) for i in range(n)
        )

    async def _order(self, version_id: str) -> list[NodeInfo]:
        """The live nodes in this version's rendezvous order, recently unreachable ones last."""
        if time.monotonic() - self._read_at > NODES_REFRESH_S:
            self._nodes = await asyncio.to_thread(live_nodes, self._db)
            self._read_at = time.monotonic()
        now = time.monotonic()
        ranked = sorted(self._nodes, key=lambda node: _score(node.id, version_id), reverse=True)
        return sorted(ranked, key=lambda node: self._unreachable.get(node.id, 0.0) > now)

    def _skip(self, node: NodeInfo) -> None:
        self._unreachable[node.id] = time.monotonic() + SKIP_UNREACHABLE_S

    def _skip_or_raise(self, node: NodeInfo, err: httpx.TransportError) -> None:
        """A node that is down (refused, reset, gone mid-answer) is skipped and the next one asked; one that
        is only slow is not: asking another would run the same long generation twice."""
        if isinstance(err, httpx.TimeoutException) and not isinstance(err, httpx.ConnectTimeout):
            raise GenerationNodeUnavailable(
                f"the generation node at {node.url} did not answer in time ({type(err).__name__})"
            ) from err
        self._skip(node)

    async def _none_answered(self) -> GenerationNodeUnavailable:
        self._read_at = float("-inf")  # read the nodes again next time: one may have just started
        if not self._nodes:
            return GenerationNodeUnavailable(
                "no generation node is live: this server (--backend remote) sends generation to servers started "
                "with --advertise-url on the same database; start one, or serve with another --backend"
            )
        urls = ", ".join(node.url for node in self._nodes)
        return GenerationNodeUnavailable(f"no generation node answered (tried {urls}); try again shortly")


def _request_body(
    version_id: str, texts: list[Prompt], params: InferenceParams, **logprobs: int | None
) -> dict[str, Any]:
    """What a node's /internal/generation routes take (`routes.nodes.NodeRequest`); unasked log-probabilities are
    left out, so that a node of an older tuneloom is asked nothing it does not know."""
    asked = {name: n for name, n in logprobs.items() if n is not None}
    return {"version_id": version_id, "inputs": texts, "inference_params": _sent_params(params), **asked}


def _sent_params(params: InferenceParams) -> dict[str, Any]:
    """`params` as a node reads them (`InferenceParams.from_dict`), less what changes nothing there: unset values
    (None) and the presence and frequency penalties at 0. A node of an older tuneloom refuses every parameter it
    does not know, so a request that uses none of the newer ones must not name them."""
    sent = {name: value for name, value in params.to_dict().items() if value is not None}
    for name in ("presence_penalty", "frequency_penalty"):
        if sent[name] == 0.0:
            del sent[name]
    return sent


def _auth(node: NodeInfo) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Node {node.token}"}}


def _score(node_id: str, version_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{node_id}\0{version_id}".encode()).digest()[:8], "big")


def _answered(response: httpx.Response, node: NodeInfo, skip: Callable[[NodeInfo], None]) -> bool:
    """True for an answer; a node's refusal (4xx: the request's fault) raises as the node's own error;
    a node failing (5xx, or no tuneloom error body) is skipped: False, ask the next."""
    if response.status_code == 200:
        return True
    try:
        body = response.json()
    except ValueError:
        body = None
    if 400 <= response.status_code < 500 and isinstance(body, dict) and "code" in body:
        raise error_from_dict(body)
    log.warning("generation node %s answered HTTP %d: asked last for a while", node.url, response.status_code)
    skip(node)
    return False


def _prediction(output: dict[str, Any], node: NodeInfo, logprobs: int | None) -> Prediction:
    generated, scored = tokens_of(output.get("logprobs")), tokens_of(output.get("prompt_logprobs"))
    if logprobs is not None and generated is None:
        raise _without_logprobs(node)
    fields = (output["prompt"], output["text"], output["tokens"], output["finish_reason"])
    return Prediction(Generation(*fields, logprobs=generated, prompt_logprobs=scored), output["prompt_tokens"])


def _without_logprobs(node: NodeInfo) -> GenerationNodeUnavailable:
    return GenerationNodeUnavailable(
        f"the generation node at {node.url} sent no log-probabilities: it runs an older tuneloom that does not "
        "report them; upgrade it, or leave logprobs out"
    )


async def _server_sent_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a `text/event-stream` body as tuneloom writes it (one `data:` line per event)."""
    event = "message"
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))
            event = "message"
