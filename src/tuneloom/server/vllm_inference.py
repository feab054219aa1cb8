"""The server's vLLM backend: the same `predict` / `stream` / `cache` the routes use, on vLLM engines.

What differs from the transformers backend (`tuneloom.server.inference`), and why:
- No micro-batching and no per-model lock here: vLLM batches every in-flight request itself
  (continuous batching), so each input is submitted as soon as it arrives.
- One engine per base model, not one model per version: a LoRA version is a `LoRARequest` on its
  base's engine, with an int id given to the version on first use and never reused, so vLLM's
  adapter cache never serves one version's weights for another.
- At most `max_engines` engines at once (each takes a fixed share of GPU memory); a request for
  another base waits until the least recently used engine is idle, which is then shut down.

Untested against real vLLM here (no GPU on the development machine): the tests drive it through a
stand-in `vllm` module; `bench/gpu.sh` runs it for real where vLLM is installed.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloom.errors import ModelUnavailableError, SettingsError
from tuneloom.generate.generator import model_prompt, prompt_text
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.results import Prompt
from tuneloom.generate.vllm_engine import (
    EngineConfig,
    ServingPlan,
    check_adapter_fits,
    engine_kwargs,
    generation_of,
    lora_request,
    plan_version,
    request_errors,
    sampling_params,
    start_engine,
)
from tuneloom.server.backends import refuse_logprobs, start_each
from tuneloom.server.inference import Prediction, TextStream
from tuneloom.server.limits import check_batch_tokens
from tuneloom.templates.prompting import PromptFormat


@dataclass(frozen=True)
class VllmVersion:
    """A model version as the vLLM backend serves it."""

    plan: ServingPlan
    tokenizer: Any  # the version's own: its EOS ends generation; the evaluation table counts tokens with it
    lora: Any | None  # the version's LoRARequest; None for a full fine-tune

    @property
    def prompt_format(self) -> PromptFormat:
        return self.plan.prompt_format


class VersionRegistry:
    """Per version: its serving plan, tokenizer and LoRA request (with a stable int id). Thread-safe.

    It plays `ModelCache`'s part for the routes: `get` (blocking: call it from a worker thread) and
    `discard` (a deleted version is forgotten; its id is not handed to any other version).
    """

    def __init__(self) -> None:
        self._versions: dict[str, VllmVersion] = {}
        self._tokenizers: dict[str, Any] = {}  # by the checksums of the tokenizer files
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, version_id: str, path: Path) -> VllmVersion:
        with self._lock:
            known = self._versions.get(version_id)
        if known is not None:
            return known
        plan = plan_version(path, label=f"model version '{version_id}'")  # errors never show the data dir
        tokenizer = self._tokenizer(plan.tokenizer_key, path / "tokenizer")
        lora = (
            None if plan.adapter_dir is None else lora_request(version_id, self.lora_id(version_id), plan.adapter_dir)
        )
        version = VllmVersion(plan, tokenizer, lora)
        with self._lock:
            return self._versions.setdefault(version_id, version)

    def _tokenizer(self, key: str, folder: Path) -> Any:
        """Versions of one base share their tokenizer files: load one copy per distinct set."""
        with self._lock:
            known = self._tokenizers.get(key)
        if known is not None:
            return known
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        with self._lock:
            return self._tokenizers.setdefault(key, tokenizer)

    def lora_id(self, version_id: str) -> int:
        """1, 2, 3… in order of first use; the same version always gets the same id."""
        with self._lock:
            return self._ids.setdefault(version_id, len(self._ids) + 1)

    def discard(self, version_id: str) -> None:
        with self._lock:
            self._versions.pop(version_id, None)


@dataclass
class _Engine:
    engine: Any  # None while it starts
    rank_limit: int
    busy: int = 0


class VllmInference:
    """`await predict(...)`, `await stream(...)` on vLLM; use from the server's one event loop."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        max_engines: int = 1,
        start: Callable[[dict[str, Any]], Any] = start_engine,
        max_batch_tokens: int | None = None,
    ):
        self.config = config or EngineConfig()
        self.max_batch_tokens = max_batch_tokens  # a request above it is refused (422) before vLLM sees it
        self.cache = VersionRegistry()
        self.generates_here = True
        self.max_engines = max_engines
        self._start = start
        self._engines: OrderedDict[str, _Engine] = OrderedDict()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Future[Any]] = set()

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
        """Every input submitted at once; vLLM batches them with whatever else is running. With `prompt_logprobs`
        the texts are the prompts as sent (not rendered in the version's prompt format)."""
        as_sent = prompt_logprobs is not None
        version = await self._admitted(version_id, path, texts, params, as_sent=as_sent)
        eos = version.tokenizer.eos_token_id
        # Refused parameters fail before any work; input i samples with seed + i, as on transformers.
        asked = {"logprobs": logprobs, "prompt_logprobs": prompt_logprobs}
        requests = [sampling_params(params.for_input(i), eos, stream=False, **asked) for i in range(len(texts))]
        prompts = list(texts) if as_sent else [model_prompt(version, t, params) for t in texts]
        entry = await self._acquire(version.plan)
        try:
            assert entry.engine is not None
            pairs = zip(prompts, requests, strict=True)
            runs = (self._complete(entry.engine, version, prompt, params, request, asked) for prompt, request in pairs)
            results = await asyncio.gather(*runs, return_exceptions=True)  # none left running on a failure
        finally:
            await self._release(entry)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        return [r for r in results if isinstance(r, Prediction)]

    async def stream(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, *, logprobs: int | None = None
    ) -> TextStream:
        """Start one streamed generation; errors before the first token raise here, later ones in the stream."""
        (handle,) = await self.streams(version_id, path, text, params, 1, logprobs=logprobs)
        return handle

    async def streams(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, n: int, *, logprobs: int | None = None
    ) -> list[VllmStream]:
        """`n` streamed generations of `text`, counted as `n` inputs; choice i samples with seed + i."""
        refuse_logprobs(logprobs, "vllm")
        version = await self._admitted(version_id, path, [text] * n, params)
        eos = version.tokenizer.eos_token_id
        # refused parameters fail before any stream starts
        requests = [sampling_params(params.for_input(i), eos, stream=True) for i in range(n)]
        prompt = model_prompt(version, text, params)

        async def start(request: Any) -> VllmStream:
            entry = await self._acquire(version.plan)
            assert entry.engine is not None
            outputs = _generate(entry.engine, prompt, request, version.lora)
            handle = VllmStream(asyncio.get_running_loop())
            shown = prompt_text(version.tokenizer, prompt)
            handle.start(outputs, shown, params, lambda: self._later(self._release(entry)))
            return handle

        return await start_each(start(request) for request in requests)

    async def _admitted(
        self, version_id: str, path: Path, texts: Sequence[Prompt], params: InferenceParams, *, as_sent: bool = False
    ) -> VllmVersion:
        """The version's serving plan and tokenizer, once the request is within `--max-batch-tokens` (`as_sent`: the
        texts are the prompts, without the prompt format)."""
        version = await asyncio.to_thread(self.cache.get, version_id, path)
        if self.max_batch_tokens is not None:
            await asyncio.to_thread(check_batch_tokens, version, texts, params, self.max_batch_tokens, as_sent=as_sent)
        return version

    async def _complete(
        self,
        engine: Any,
        version: VllmVersion,
        prompt: Prompt,
        params: InferenceParams,
        request: Any,
        asked: dict[str, int | None],
    ) -> Prediction:
        """One input's generation; `asked`: its `logprobs` and `prompt_logprobs`, as `generation_of` reports them (in a
        worker thread: it decodes every token and alternative, which would hold up every other request's stream)."""
        final = None
        async for output in _generate(engine, prompt, request, version.lora):
            final = output
        if final is None:
            raise ModelUnavailableError("the vLLM engine ended the request without an output")
        generation = await asyncio.to_thread(generation_of, final, prompt, params, version.tokenizer, **asked)
        return Prediction(generation, len(final.prompt_token_ids or []))

    async def _acquire(self, plan: ServingPlan) -> _Engine:
        """The engine for `plan`, started if need be, marked busy until `_release`."""
        async with self._changed:
            while True:
                entry = self._engines.get(plan.engine_key)
                if entry is not None and entry.engine is not None:
                    check_adapter_fits(plan, entry.rank_limit)
                    entry.busy += 1
                    self._engines.move_to_end(plan.engine_key)
                    return entry
                if entry is None and await self._room_for_one_more():
                    break
                await self._changed.wait()  # it is starting, or every engine is busy
            kwargs = engine_kwargs(plan, self.config)
            entry = _Engine(None, int(kwargs.get("max_lora_rank", 0)), busy=1)
            self._engines[plan.engine_key] = entry
        try:
            entry.engine = await asyncio.to_thread(self._start, kwargs)
        except Exception as err:
            async with self._changed:
                del self._engines[plan.engine_key]
                self._changed.notify_all()
            raise ModelUnavailableError(f"vLLM could not start an engine for '{plan.model}': {err}") from err
        async with self._changed:
            self._changed.notify_all()
        return entry

    async def _room_for_one_more(self) -> bool:
        """True when another engine may start, after shutting down the least recently used idle one if needed."""
        if len(self._engines) < self.max_engines:
            return True
        idle = next((key for key, e in self._engines.items() if e.busy == 0 and e.engine is not None), None)
        if idle is None:
            return False
        evicted = self._engines.pop(idle).engine
        await asyncio.to_thread(evicted.shutdown)  # frees its share of GPU memory for the next engine
        return True

    async def _release(self, entry: _Engine) -> None:
        async with self._changed:
            entry.busy -= 1
            self._changed.notify_all()

    def _later(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)


async def _generate(engine: Any, prompt: Prompt, request: Any, lora: Any | None) -> AsyncGenerator[Any, None]:
    """One request's outputs; a request vLLM refuses (a prompt longer than the model allows…) is a 422. Token ids go
    as vLLM's `TokensPrompt` (a dict), read as they are."""
    request_id = f"tuneloom-{uuid.uuid4().hex}"
    sent: Any = {"prompt_token_ids": list(prompt)} if isinstance(prompt, tuple) else prompt
    try:
        async for output in engine.generate(sent, request, request_id, lora_request=lora):
            yield output
    except request_errors() as err:
        raise SettingsError(f"vLLM refused the request: {err}", key="inputs") from err


class VllmStream(TextStream):
    """A `TextStream` fed by a task on the event loop (vLLM's outputs are async) instead of a thread.

    Pieces are the text deltas with leading whitespace dropped and trailing whitespace held back
    until more text follows, so the streamed text equals the /predict text. Cancelling (client gone)
    cancels the task, which makes vLLM abort the request.
    """

    _task: asyncio.Future[None] | None = None

    def start(
        self, outputs: AsyncGenerator[Any, None], prompt: str, params: InferenceParams, done: Callable[[], None]
    ) -> None:
        self._task = asyncio.ensure_future(self._feed(outputs, prompt, params))
        self._task.add_done_callback(lambda _: done())

    def cancel(self) -> None:
        super().cancel()
        if self._task is not None:
            self._task.cancel()

    async def _feed(self, outputs: AsyncGenerator[Any, None], prompt: str, params: InferenceParams) -> None:
        pending, started = "", False
        try:
            if params.return_full_text:
                self._put("piece", prompt + " ")
            async for output in outputs:
                if output.prompt_token_ids:  # deltas may carry it on the first output only
                    self.prompt_tokens = len(output.prompt_token_ids)
                if params.max_tokens == 0:  # the prompt alone: the one token vLLM had to generate is no answer
                    self.finish_reason = "length"
                    continue
                completion = output.outputs[0]
                self.tokens += len(completion.token_ids)
                text = pending + completion.text
                text = text if started else text.lstrip()
                body = text.rstrip()
                pending = text[len(body) :]
                if body:
                    self._put("piece", body)
                    started = True
                if completion.finish_reason is not None:
                    self.finish_reason = "length" if completion.finish_reason == "length" else "stop"
            self._put("done", None)
        except Exception as err:
            self._put("error", err)
        finally:
            await outputs.aclose()
