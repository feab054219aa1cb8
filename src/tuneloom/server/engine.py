"""One model version's engine: a thread that runs every request for it in one continuous batch.

Requests (`Job`s) are queued from the event loop; the engine thread admits them between decoding
steps — as many as fit `MAX_BATCH_ROWS` rows and `MAX_RUNNING_BATCH_TOKENS` tokens (prompt +
max_tokens per row), the oldest first so that none is starved — prefills them into the running
`ContinuousBatch`, and after every step hands each stream its new text and each finished
prediction its outputs, through the event loop. A request whose client went away is dropped at the
next step. Beam search, which a continuous batch cannot do, runs alone through `generate()`
between two steps. A request that asks for its prompts' own log-probabilities (OpenAI's echo) has
them scored in one forward pass when it is admitted, before its rows join the batch (with max_tokens
0 it ends there). The thread exits when nothing is running or waiting, and starts again on the next
request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tuneloom.errors import SettingsError
from tuneloom.generate.params import MAX_INPUTS, InferenceParams

if TYPE_CHECKING:
    from tuneloom.generate.continuous import ContinuousBatch
    from tuneloom.generate.loading import InferenceModel
    from tuneloom.generate.results import Generation, Prompt, TokenLogprob
    from tuneloom.generate.rows import Row

MAX_BATCH_ROWS = MAX_INPUTS  # rows decoded together: one request, however many inputs, always fits
MAX_RUNNING_BATCH_TOKENS = 65_536  # rows × (prompt + max_tokens) admitted together, unless a request is alone


@dataclass(frozen=True)
class Prediction:
    generation: Generation
    prompt_tokens: int


def batch_tokens(inputs: int, longest_prompt: int, max_tokens: int, beams: int = 1) -> int:
    """What a request can hold in memory at once: its rows (× beams) × (longest prompt + max_tokens) tokens."""
    return inputs * beams * (longest_prompt + max_tokens)


class TextStream:
    """One streamed generation: iterate for text pieces; afterwards `finish_reason` and token counts are set.

    Pieces arrive from the engine's thread through a queue on the event loop. When the consumer
    stops early (client gone, `cancel()`), the engine drops the generation at its next step.
    `chunks()` gives each piece with the log-probabilities of the tokens generated since the last
    one (where they were asked for; tokens whose text is never shown come in a last, empty piece).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.tokens = 0
        self.prompt_tokens = 0
        self.ended = False  # engine thread: its generation has finished (its "done" is on the way)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for piece, _ in self.chunks():
                yield piece
        finally:
            self.cancel()

    async def chunks(self) -> AsyncIterator[tuple[str, tuple[TokenLogprob, ...]]]:
        pending: tuple[TokenLogprob, ...] = ()
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "logprobs":
                    pending += tuple(value)
                elif kind == "piece":
                    piece, pending = (value, pending), ()
                    yield piece
                elif kind == "error":
                    raise value
                else:
                    if pending:
                        yield "", pending
                    return
        finally:
            self.cancel()

    def finish(self, generation: Generation, prompt_tokens: int) -> None:
        """Engine thread: record how the generation ended, then end the stream."""
        self.tokens, self.finish_reason, self.prompt_tokens = generation.tokens, generation.finish_reason, prompt_tokens
        self.ended = True
        self._put("done", None)

    def _put(self, kind: str, value: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))


@dataclass(eq=False)
class Job:
    """One request: its rows, and where their results go (a future for /predict; for streams, one `TextStream`
    per row: OpenAI's `n` streamed choices are rows of one request)."""

    loaded: InferenceModel
    texts: list[Prompt]
    params: InferenceParams
    rows: list[Row]
    prompt_tokens: list[int]
    continuous: bool  # False: run alone through generate() (beam search; `continuous.generate_only_reason`)
    streams: list[TextStream] = field(default_factory=list)  # row i's text goes to streams[i]; empty: a future
    logprobs: int | None = None  # alternatives reported with each token's log-probability; None: none
    prompt_logprobs: int | None = None  # the same for each prompt token (the prompts used as sent); None: none
    scored: list[tuple[TokenLogprob, ...]] | None = None  # the prompts' tokens, once scored (engine thread)
    future: asyncio.Future[list[Prediction]] | None = None
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        loaded: InferenceModel,
        texts: list[Prompt],
        params: InferenceParams,
        streams: list[TextStream],
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
    ) -> Job:
        """Render and count the prompts (worker thread); a stream with return_full_text starts with its prompt.
        With `prompt_logprobs` the texts are the prompts as sent (no template): their own tokens are scored; token-id
        prompts are always as sent (`generator.model_prompt`).

        A prompt that leaves no room for max_tokens in the model's context is refused here, before the
        request joins a batch whose other requests it would fail; so is a seed the batch cannot honour,
        and log-probabilities (`logprobs`: how many alternatives with each token) it cannot report.
        Input i samples with seed + i (`InferenceParams.for_input`).
        """
        from tuneloom.generate.continuous import check_seedable, generate_only_reason
        from tuneloom.generate.generator import (
            check_context,
            check_token_ids,
            count_prompt_tokens,
            model_prompt,
            prompt_text,
        )
        from tuneloom.generate.rows import Row

        check_seedable(loaded, params)
        why = generate_only_reason(loaded, params)
        continuous = why is None
        if logprobs is not None and why is not None and params.max_tokens > 0:
            raise SettingsError(
                f"'logprobs' is not supported {why}: transformers' generate() runs such a request, and it "
                "reports no log-probabilities; leave logprobs out",
                key="logprobs",
            )
        key = "input" if streams else "inputs"
        check_token_ids(loaded, texts, key)
        prompts = texts if prompt_logprobs is not None else [model_prompt(loaded, t, params) for t in texts]
        rows = [Row.rendered(prompt, params.for_input(i), logprobs) for i, prompt in enumerate(prompts)]
        counts = [count_prompt_tokens(loaded, row.prompt) for row in rows]
        check_context(loaded, counts, params, key=key)
        if streams and continuous and params.return_full_text:
            for row, stream in zip(rows, streams, strict=True):
                stream._put("piece", prompt_text(loaded.tokenizer, row.prompt) + " ")
        return cls(loaded, texts, params, rows, counts, continuous, streams, logprobs, prompt_logprobs)

    @property
    def batch_tokens(self) -> int:
        return batch_tokens(len(self.rows), max(self.prompt_tokens), self.params.max_tokens, self.params.num_beams)

    def abandoned(self) -> bool:
        if self.streams:
            return all(stream.cancelled for stream in self.streams)
        return self.future is None or self.future.done()

    def deliver(self) -> bool:
        """Engine thread, after a step: pass on new text and finished results; True once the job is over."""
        if self.abandoned():
            for row in self.rows:
                row.cancelled = True
            return True
        if self.streams:
            for row, stream, prompt_tokens in zip(self.rows, self.streams, self.prompt_tokens, strict=True):
                self._deliver_row(row, stream, prompt_tokens)
            return all(row.finished or row.cancelled for row in self.rows)
        if not all(row.finished for row in self.rows):
            return False
        self.complete([row.generation(self.loaded) for row in self.rows])
        return True

    def _deliver_row(self, row: Row, stream: TextStream, prompt_tokens: int) -> None:
        """One streamed row's new text (and log-probabilities), and its end; a row whose stream was cancelled
        (its client gone) leaves the batch at the next step."""
        if stream.ended:
            return
        if stream.cancelled and not row.finished:
            row.cancelled = True
            return
        if (row.piece or row.finished) and (fresh := row.unsent_logprobs()):
            stream._put("logprobs", fresh)
        if row.piece:
            stream._put("piece", row.piece)
            row.piece = ""
        if row.finished:
            stream.finish(row.generation(self.loaded), prompt_tokens)

    def score(self) -> bool:
        """Engine thread, before the rows join the batch: the prompts' own tokens scored where they were asked for
        (one forward pass, `logprobs.prompt_logprobs`). False once the job is over: it asked for the prompts only
        (max_tokens 0: nothing is generated, as OpenAI's echo with max_tokens 0), or scoring failed."""
        from tuneloom.generate.generator import finish_generation, prompt_text
        from tuneloom.generate.logprobs import prompt_logprobs

        try:
            if self.prompt_logprobs is not None:
                self.scored = prompt_logprobs(self.loaded, [row.prompt for row in self.rows], self.prompt_logprobs)
            if self.params.max_tokens > 0:
                return True
            generations = [
                finish_generation(prompt_text(self.loaded.tokenizer, row.prompt), "", 0, False, row.params)
                for row in self.rows
            ]
            self.complete([replace(g, logprobs=None if self.logprobs is None else ()) for g in generations])
        except Exception as err:
            self.fail(err)
        return False

    def complete(self, generations: list[Generation]) -> None:
        if self.scored is not None:
            generations = [replace(g, prompt_logprobs=s) for g, s in zip(generations, self.scored, strict=True)]
        if self.streams:  # generate()'s answers, each in one piece
            for stream, generation, prompt_tokens in zip(self.streams, generations, self.prompt_tokens, strict=True):
                stream._put("piece", generation.text)
                stream.finish(generation, prompt_tokens)
            return
        predictions = [Prediction(g, n) for g, n in zip(generations, self.prompt_tokens, strict=True)]
        self._resolve(lambda future: future.set_result(predictions))

    def fail(self, err: BaseException) -> None:
        for stream in self.streams:
            stream._put("error", err)
        self._resolve(lambda future: future.set_exception(err))  # a job of streams has no future

    def _resolve(self, settle: Any) -> None:
        future = self.future
        if future is None or self.loop is None:
            return

        def settle_once() -> None:
            if not future.done():
                settle(future)

        self.loop.call_soon_threadsafe(settle_once)


class Engine:
    """The queue and the thread that serve one model version; `submit` from the event loop."""

    def __init__(self, executor: Executor, window_s: float, *, one_at_a_time: bool = False):
        """`one_at_a_time`: the benchmarks' baseline — each request alone through `generate()`, no batching."""
        self._executor = executor
        self._window_s = window_s
        self._one_at_a_time = one_at_a_time
        self._lock = threading.Lock()
        self._pending: deque[Job] = deque()
        self._running = False
        self.batches = 0  # prefills and generate() calls …
        self.requests = 0  # … and the requests they started

    def submit(self, job: Job) -> None:
        with self._lock:
            self._pending.append(job)
            start, self._running = not self._running, True
        if start:
            self._executor.submit(self._run)

    def _run(self) -> None:
        """Admit, step, deliver — until nothing is running or waiting; never leaves a request hanging."""
        active: list[Job] = []
        try:
            self._serve(active)
        except BaseException as err:  # a bug, not a model error: fail everything rather than hang
            with self._lock:
                waiting, self._running = list(self._pending), False
                self._pending.clear()
            for job in active + waiting:
                job.fail(err)
            raise

    def _serve(self, active: list[Job]) -> None:
        time.sleep(self._window_s)  # requests arriving together start together
        batch: ContinuousBatch | None = None
        while (taken := self._admit(active)) is not None:
            taken = [job for job in taken if job.score()]
            for job in taken:
                if self._one_at_a_time or not job.continuous:
                    self._alone(job)
            fresh = [] if self._one_at_a_time else [job for job in taken if job.continuous]
            active += fresh
            try:
                batch = self._advance(batch, fresh)
            except Exception as err:  # e.g. out of memory: every request in the batch learns it
                for job in active:
                    job.fail(err)
                active.clear()
                batch = None
                continue
            active[:] = [job for job in active if not job.deliver()]

    def _advance(self, batch: ContinuousBatch | None, fresh: list[Job]) -> ContinuousBatch | None:
        """Prefill newly admitted rows, or else decode one token for every running row."""
        from tuneloom.generate.continuous import ContinuousBatch

        if fresh:
            if batch is None or not batch.rows:
                batch = ContinuousBatch(fresh[0].loaded)
            batch.add([row for job in fresh for row in job.rows])
            self.batches += 1
        elif batch is not None:
            batch.step()
        return batch

    def _admit(self, active: list[Job]) -> list[Job] | None:
        """The waiting jobs that fit beside the running ones (oldest first); None when there is no work left."""
        with self._lock:
            if not self._pending and not active:
                self._running = False
                return None
            rows = sum(len(job.rows) for job in active)
            tokens = sum(job.batch_tokens for job in active)
            taken: list[Job] = []
            while self._pending:
                job = self._pending[0]
                if job.abandoned():
                    self._pending.popleft()
                    continue
                busy = bool(active or taken)
                full = rows + len(job.rows) > MAX_BATCH_ROWS or tokens + job.batch_tokens > MAX_RUNNING_BATCH_TOKENS
                if busy and (self._one_at_a_time or full):
                    break
                taken.append(self._pending.popleft())
                rows, tokens = rows + len(job.rows), tokens + job.batch_tokens
            self.requests += len(taken)
            return taken

    def _alone(self, job: Job) -> None:
        """What the batch cannot run (`continuous.generate_only_reason`): `generate()` for this job alone, between
        two steps of the batch (one at a time, a job asking for log-probabilities runs in a batch of its own
        instead: `generate()` reports none)."""
        from tuneloom.generate.continuous import run_alone
        from tuneloom.generate.generator import generate

        self.batches += 1
        try:
            if job.logprobs is not None and job.continuous:
                for _ in run_alone(job.loaded, job.rows):
                    if job.deliver():
                        return
                return
            job.complete(generate(job.loaded, job.texts, job.params))
        except Exception as err:
            job.fail(err)
