"""Serving predictions: a memory-bounded cache of loaded model versions, and micro-batched generation.

Three rules keep a CPU server fast and correct under concurrent requests:

- A model version is loaded once, on first use, and kept while it fits: `ModelCache` is an LRU
  bounded by the bytes of the models' parameters and buffers. Concurrent first requests for one
  version wait for a single load (a lock per version).
- One model never runs two generations at once (they would only fight over the same cores): each
  version has an asyncio lock, taken on the event loop, so no thread sits blocked waiting for it.
- /predict requests for the same version with identical parameters that arrive within a few
  milliseconds of each other — or while the model is busy — are merged into one `generate()` call
  (it batches up to 32 length-sorted prompts) and the outputs are split back, in order.

Heavy imports (torch, transformers) happen on first use, so `tuneloom keys create` stays quick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from tuneloom.generate.generator import Generation
    from tuneloom.generate.loading import InferenceModel
    from tuneloom.generate.params import InferenceParams

T = TypeVar("T")
DEFAULT_CACHE_BYTES = 4 * 1024**3
DEFAULT_BATCH_WINDOW_S = 0.005
MAX_BATCH_INPUTS = 128  # generate()'s own limit per call


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


@dataclass(frozen=True)
class Prediction:
    generation: Generation
    prompt_tokens: int


@dataclass
class _Request:
    path: Path
    texts: list[str]
    params: InferenceParams
    future: asyncio.Future[list[Prediction]]
    arrived: float


@dataclass
class _Runner:
    """One model version's queue of /predict requests and its exclusive-use lock."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: deque[_Request] = field(default_factory=deque)
    draining: bool = False


class Inference:
    """The server's entry point for generation: `await predict(...)`, `await stream(...)`.

    Must be used from one event loop (the server's); blocking work runs in its own thread pool so
    that slow generations never take the threads that ordinary routes need.
    """

    def __init__(
        self,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        micro_batch: bool = True,
        batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
        threads: int = 8,
    ):
        self.cache = ModelCache(cache_bytes)
        self.micro_batch = micro_batch
        self.batch_window_s = batch_window_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tuneloom-inference")
        self._runners: dict[str, _Runner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # generate() calls made for /predict requests …
        self.requests = 0  # … and the requests they answered (requests / batches: how much merging helped)

    async def predict(
        self, version_id: str, path: Path, texts: Sequence[str], params: InferenceParams
    ) -> list[Prediction]:
        """Generate for `texts`, possibly in one batch with other requests for the same version."""
        loop = asyncio.get_running_loop()
        runner = self._runners.setdefault(version_id, _Runner())
        request = _Request(path, list(texts), params, loop.create_future(), loop.time())
        runner.pending.append(request)
        if not runner.draining:
            runner.draining = True
            task = asyncio.create_task(self._drain(version_id, runner))
            self._tasks.add(task)  # keep a reference: the loop holds tasks weakly
            task.add_done_callback(self._tasks.discard)
        return await request.future

    async def stream(self, version_id: str, path: Path, text: str, params: InferenceParams) -> TextStream:
        """Start streaming one generation; waits for the model to be free and loaded first.

        Load errors raise here (before a response has started); errors while generating come out
        of the returned stream. The model stays reserved until the stream ends or is cancelled.
        """
        loop = asyncio.get_running_loop()
        runner = self._runners.setdefault(version_id, _Runner())
        await runner.lock.acquire()
        try:
            loaded = await self._run(self.cache.get, version_id, path)
        except BaseException:
            runner.lock.release()
            raise
        handle = TextStream(loop)
        self._executor.submit(
            handle.produce, loaded, text, params, lambda: loop.call_soon_threadsafe(runner.lock.release)
        )
        return handle

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _drain(self, version_id: str, runner: _Runner) -> None:
        """Run this version's pending requests, merged into batches, until none is left."""
        try:
            while runner.pending:
                await self._wait_for_batch(runner)
                async with runner.lock:
                    batch = self._take_batch(runner)
                    if batch:
                        await self._run_batch(version_id, batch)
        finally:
            runner.draining = False

    async def _wait_for_batch(self, runner: _Runner) -> None:
        """Give requests arriving just after the oldest pending one a few ms to join its batch."""
        if not self.micro_batch:
            return
        delay = runner.pending[0].arrived + self.batch_window_s - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _take_batch(self, runner: _Runner) -> list[_Request]:
        """The oldest live request, plus (micro-batching) later ones with equal params, ≤ 128 inputs."""
        while runner.pending and runner.pending[0].future.done():
            runner.pending.popleft()  # its caller gave up
        if not runner.pending:
            return []
        first = runner.pending.popleft()
        batch, total, keep = [first], len(first.texts), deque[_Request]()
        while self.micro_batch and runner.pending:
            request = runner.pending.popleft()
            if request.future.done():
                continue
            if request.params == first.params and total + len(request.texts) <= MAX_BATCH_INPUTS:
                batch.append(request)
                total += len(request.texts)
            else:
                keep.append(request)
        runner.pending.extendleft(reversed(keep))
        return batch

    async def _run_batch(self, version_id: str, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        self.batches, self.requests = self.batches + 1, self.requests + len(batch)
        try:
            results = await self._run(self._generate, version_id, batch[0].path, texts, batch[0].params)
        except Exception as err:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(err)
            return
        start = 0
        for request in batch:
            part = results[start : start + len(request.texts)]
            start += len(request.texts)
            if not request.future.done():
                request.future.set_result(part)

    def _generate(self, version_id: str, path: Path, texts: list[str], params: InferenceParams) -> list[Prediction]:
        from tuneloom.generate.generator import generate

        loaded = self.cache.get(version_id, path)
        generations = generate(loaded, texts, params)
        return [Prediction(g, count_tokens(loaded, g.prompt)) for g in generations]


def count_tokens(loaded: InferenceModel, text: str) -> int:
    """Tokens of `text` as the model reads it (special tokens included, as when generating)."""
    return len(loaded.tokenizer(text, add_special_tokens=True)["input_ids"])


class TextStream:
    """One streamed generation: iterate for text pieces; afterwards `finish_reason` and token counts are set.

    Generation runs in a worker thread that hands pieces to the event loop through a queue. When
    the consumer stops early (client gone, `cancel()`), the worker closes the generator, which
    stops generating at its next token; then the model's lock is released.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.tokens = 0
        self.prompt_tokens = 0

    def cancel(self) -> None:
        self._cancelled.set()

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "piece":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            self.cancel()

    def produce(self, loaded: InferenceModel, text: str, params: InferenceParams, done: Callable[[], object]) -> None:
        """Worker thread: run `generate.stream`, forward its pieces, record how it finished."""
        from tuneloom.generate.generator import render_prompt, stream

        recorder = _RecordingModel(loaded.model)
        pieces = cast(Generator[str, None, None], stream(dataclasses.replace(loaded, model=recorder), text, params))
        try:
            self.prompt_tokens = count_tokens(loaded, render_prompt(loaded, text, params))
            for piece in pieces:
                if self._cancelled.is_set():
                    break
                self._put("piece", piece)
            pieces.close()  # joins the generation thread: the recorder has its output now
            self.tokens, self.finish_reason = recorder.outcome(loaded, params)
            self._put("done", None)
        except Exception as err:
            self._put("error", err)
        finally:
            pieces.close()
            done()

    def _put(self, kind: str, value: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))


class _RecordingModel:
    """The loaded model, passed through unchanged, remembering what `generate` returned.

    `generate.stream` yields text only; the streamed answer still has to say whether it ended on
    EOS/a stop string or ran out of tokens, and how many tokens it used — both read off the ids.
    """

    def __init__(self, model: Any):
        self._model = model
        self._new_ids: list[int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, **kwargs: Any) -> Any:
        output = self._model.generate(**kwargs)
        self._new_ids = output[0, kwargs["input_ids"].shape[1] :].tolist()
        return output

    def outcome(self, loaded: InferenceModel, params: InferenceParams) -> tuple[int, str]:
        """(new tokens, finish reason) by the same rules as `generate()`'s batched path."""
        from tuneloom.generate.generator import cut_at_stop, stop_strings

        ids = list(self._new_ids or [])
        eos, pad = loaded.tokenizer.eos_token_id, loaded.tokenizer.pad_token_id
        while ids and ids[-1] == pad and pad != eos:
            ids.pop()
        if eos in ids:
            return ids.index(eos), "stop"
        _, stopped = cut_at_stop(loaded.tokenizer.decode(ids, skip_special_tokens=True), stop_strings(params))
        return len(ids), "stop" if stopped or len(ids) < params.max_tokens else "length"
