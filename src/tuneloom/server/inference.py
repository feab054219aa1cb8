"""Serving predictions: a memory-bounded cache of loaded model versions, and continuous batching.

Three rules keep a CPU server fast and correct under concurrent requests:

- A model version is loaded once, on first use, and kept while it fits: `ModelCache` is an LRU
  bounded by the bytes of the models' parameters and buffers. Concurrent first requests for one
  version wait for a single load (a lock per version).
- One model never runs two generations at once (they would only fight over the same cores): each
  version has one engine thread (`tuneloom.server.engine`) that alone uses the model.
- Every request for a version — /predict, streamed or not, whatever its sampling parameters —
  joins that engine's running batch (`tuneloom.generate.continuous`): one forward pass per token
  serves them all, a stream receives its text as each step produces it, and a request that is done
  (or whose client went away) leaves the batch at once. Requests that arrive within a few
  milliseconds of an idle engine start together.

Heavy imports (torch, transformers) happen on first use, so `tuneloom keys create` stays quick.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tuneloom.server.engine import Engine, Job, Prediction, TextStream
from tuneloom.server.limits import refuse_above

if TYPE_CHECKING:
    from tuneloom.generate.loading import InferenceModel
    from tuneloom.generate.params import InferenceParams
    from tuneloom.generate.results import Prompt

__all__ = ["Inference", "ModelCache", "Prediction", "TextStream", "load_model", "model_bytes"]
T = TypeVar("T")
DEFAULT_CACHE_BYTES = 4 * 1024**3
DEFAULT_BATCH_WINDOW_S = 0.005


def load_model(path: Path) -> InferenceModel:
    """A stored version (its folder is named by its id); a damaged file is named inside the version only."""
    from tuneloom.generate.loading import load_for_inference

    return load_for_inference(path, label=f"model version '{path.name}'")


def model_bytes(loaded: InferenceModel) -> int:
    """What a loaded version costs in memory: its parameters and buffers (weights dominate)."""
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


@dataclass
class _Cached:
    loaded: InferenceModel
    size: int


class ModelCache:
    """Thread-safe LRU of loaded model versions keyed by version id, bounded by `limit_bytes`.

    A model larger than the limit is still served (it is then the only one kept). An evicted model
    that a request is still using stays alive until that request ends; memory may briefly exceed
    the limit by one model while a new one loads.
    """

    def __init__(self, limit_bytes: int = DEFAULT_CACHE_BYTES, loader: Callable[[Path], InferenceModel] = load_model):
        self.limit_bytes = limit_bytes
        self._loader = loader
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, version_id: str, path: Path) -> InferenceModel:
        """The loaded version, loading it on first use (blocking: call from a worker thread)."""
        with self._lock:
            hit = self._touch(version_id)
            if hit is not None:
                return hit
            key_lock = self._loading.setdefault(version_id, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._touch(version_id)
            if hit is not None:
                return hit  # another request loaded it while this one waited
            try:
                loaded = self._loader(path)
                self._store(version_id, loaded)
            finally:
                with self._lock:
                    self._loading.pop(version_id, None)
        return loaded

    def info(self) -> dict[str, Any]:
        """Cached versions (least recently used first) and their sizes."""
        with self._lock:
            entries = [{"version_id": k, "bytes": e.size} for k, e in self._entries.items()]
        return {"limit_bytes": self.limit_bytes, "bytes": sum(e["bytes"] for e in entries), "entries": entries}

    def discard(self, version_id: str) -> None:
        with self._lock:
            self._entries.pop(version_id, None)

    def _touch(self, version_id: str) -> InferenceModel | None:
        entry = self._entries.get(version_id)
        if entry is None:
            return None
        self._entries.move_to_end(version_id)
        return entry.loaded

    def _store(self, version_id: str, loaded: InferenceModel) -> None:
        size = model_bytes(loaded)
        with self._lock:
            self._entries[version_id] = _Cached(loaded, size)
            total = sum(e.size for e in self._entries.values())
            while total > self.limit_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.size


class Inference:
    """The server's entry point for generation: `await predict(...)`, `await stream(...)`.

    Must be used from one event loop (the server's); blocking work (loading, tokenizing, the
    engines' loops) runs in its own thread pool so that slow generations never take the threads
    that ordinary routes need. `micro_batch=False` (the benchmarks' baseline) runs one request at a
    time per version, each through `generate()` (streams then arrive in one piece), instead of batching them.
    """

    def __init__(
        self,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        micro_batch: bool = True,
        batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
        threads: int = 8,
        max_batch_tokens: int | None = None,
    ):
        self.cache = ModelCache(cache_bytes)
        self.max_batch_tokens = max_batch_tokens  # a request above it is refused (422) before it joins a batch
        self.generates_here = True
        self.micro_batch = micro_batch
        self.batch_window_s = batch_window_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tuneloom-inference")
        self._engines: dict[str, Engine] = {}

    @property
    def batches(self) -> int:
        """Forward passes that started requests (prefills, or generate() calls) over all versions …"""
        return sum(engine.batches for engine in self._engines.values())

    @property
    def requests(self) -> int:
        """… and the requests they started (requests / batches: how much merging helped)."""
        return sum(engine.requests for engine in self._engines.values())

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
        """Generate for `texts` in this version's running batch; the outputs in input order (with each token's
        log-probability and its `logprobs` most likely alternatives', where `logprobs` is not None; and each
        prompt token's, with `prompt_logprobs`: the texts are then the prompts as sent, and max_tokens may be 0)."""
        job = await self._run(self._job, version_id, path, list(texts), params, [], logprobs, prompt_logprobs)
        job.loop = asyncio.get_running_loop()
        future = job.future = job.loop.create_future()
        self._engine(version_id).submit(job)
        return await future

    async def stream(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, *, logprobs: int | None = None
    ) -> TextStream:
        """Start streaming one generation in this version's running batch.

        Load errors raise here (before a response has started); errors while generating come out
        of the returned stream. Cancelling the stream (client gone) drops its row at the next step.
        """
        (handle,) = await self.streams(version_id, path, text, params, 1, logprobs=logprobs)
        return handle

    async def streams(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, n: int, *, logprobs: int | None = None
    ) -> list[TextStream]:
        """Start streaming `n` generations of `text` (OpenAI's streamed `n` choices): rows of one request, as
        /predict's `n` inputs are, so it is counted as `n` inputs against `--max-batch-tokens`; choice i samples
        with seed + i. Cancelling one stream drops its row only."""
        loop = asyncio.get_running_loop()
        handles = [TextStream(loop) for _ in range(n)]
        job = await self._run(self._job, version_id, path, [text] * n, params, handles, logprobs)
        self._engine(version_id).submit(job)
        return handles

    def _job(
        self,
        version_id: str,
        path: Path,
        texts: list[Prompt],
        params: InferenceParams,
        streams: list[TextStream],
        logprobs: int | None,
        prompt_logprobs: int | None = None,
    ) -> Job:
        """Worker thread: the loaded version and the request's rows (prompts rendered and counted once,
        for the batch-size limit, admission and usage alike)."""
        loaded = self.cache.get(version_id, path)
        job = Job.create(loaded, texts, params, streams, logprobs, prompt_logprobs)
        if self.max_batch_tokens is not None:
            refuse_above(self.max_batch_tokens, len(texts), max(job.prompt_tokens), params.max_tokens, params.num_beams)
        return job

    def _engine(self, version_id: str) -> Engine:
        engine = self._engines.get(version_id)
        if engine is None:
            window = self.batch_window_s if self.micro_batch else 0.0
            engine = self._engines[version_id] = Engine(self._executor, window, one_at_a_time=not self.micro_batch)
        return engine

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
