"""The vLLM serving backend, checked without vLLM: backend selection, parameter mapping, and the
backend driven through the real routes against a stand-in `vllm` module.

vLLM cannot be installed on the development machine (its wheel needs a CUDA build of torch) and no
GPU is here, so `FakeVllm` below is the one stand-in this suite allows: it records every call the
backend makes with vLLM's documented signatures and answers as vLLM does (stop strings excluded from
the text, `max_tokens` ending a request with "length", deltas when streaming). The real engine is
run by `bench/gpu.sh` on a machine that has vLLM; until then that path is untested.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib.machinery
import json
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from tests.conftest import _free_port, sentiment_lines

from tuneloom.errors import ConflictError, SettingsError
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.vllm_engine import EngineConfig, engine_kwargs, plan_version, sampling_kwargs
from tuneloom.model_version import finalize
from tuneloom.server.backends import BackendUnavailableError, choose_backend, vllm_missing
from tuneloom.templates import resolve_settings
from tuneloom.templates.catalogue import TINY_RANDOM
from tuneloom.templates.sources import resolve_model_dir

FORMAT = {"template": "### Human: {prompt} ### Assistant:", "response_header": "Assistant"}
ANSWER = [" ", "{name}", " answers", " fine", " ###", " Human:", " again"]  # what the stand-in model "generates"


# --- the stand-in vllm module ------------------------------------------------------------------------


class OutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass(frozen=True)
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class Call:
    prompt: str | dict[str, list[int]]  # a text, or vLLM's TokensPrompt
    params: Any
    request_id: str
    lora: LoRARequest | None
    finished: bool = False  # False at the end: the consumer went away and vLLM would abort it


@dataclass
class FakeEngine:
    args: dict[str, Any]
    delay_s: float = 0.0
    calls: list[Call] = field(default_factory=list)
    shut_down: bool = False

    async def generate(
        self,
        prompt: str | dict[str, list[int]],
        params: Any,
        request_id: str,
        *,
        lora_request: LoRARequest | None = None,
    ) -> AsyncIterator[Any]:
        if isinstance(prompt, str) and "TOO LONG" in prompt:
            raise ValueError("the prompt (3000 tokens) is longer than the maximum model length of 2048")
        call = Call(prompt, params, request_id, lora_request)
        self.calls.append(call)
        steps, finish = _decode(lora_request.lora_name if lora_request else "full", params)
        prompt_ids = list(prompt["prompt_token_ids"]) if isinstance(prompt, dict) else list(range(len(prompt.split())))
        if params.output_kind is OutputKind.FINAL_ONLY:
            text, ids = "".join(t for t, _ in steps), [i for _, i in steps]
            yield _with_logprobs(_output(prompt_ids, text, ids, finish), params)
        else:
            for n, (text, token) in enumerate(steps):
                await asyncio.sleep(self.delay_s)
                yield _output(prompt_ids, text, [token], finish if n == len(steps) - 1 else None)
        call.finished = True  # not reached when the consumer cancels: vLLM aborts the request there

    def shutdown(self) -> None:
        self.shut_down = True


def _decode(name: str, params: Any) -> tuple[list[tuple[str, int]], str]:
    """vLLM's rules on a fixed answer: stop strings cut (and are left out), max_tokens ends with "length"."""
    words = [w.format(name=name) for w in ANSWER] * (50 if params.max_tokens > 100 else 1)
    steps: list[tuple[str, int]] = []
    text = ""
    for token, word in enumerate(words):
        hits = [(text + word).find(s) for s in params.stop if s in text + word]
        if hits:
            steps.append(((text + word)[: min(hits)][len(text) :], token))
            return steps, "stop"
        steps.append((word, token))
        text += word
        if len(steps) == params.max_tokens:
            return steps, "length"
    return steps, "stop"  # the end of the answer stands for EOS


@dataclass(frozen=True)
class Logprob:
    """vLLM's `Logprob`: a token's log-probability at a place, and its rank there (1: the most likely)."""

    logprob: float
    rank: int | None


def _at(token: int, n: int) -> dict[int, Logprob]:
    """vLLM's entry for one place: the token (the stand-in's most likely) and the rest of the best `n`."""
    return {token: Logprob(-0.25, 1), **{token + 100 + k: Logprob(-1.0 - k, k + 2) for k in range(n - 1)}}


def _with_logprobs(output: Any, params: Any) -> Any:
    """vLLM's `logprobs` (per generated token) and `prompt_logprobs` (None for the first token), where asked."""
    completion = output.outputs[0]
    n, prompt_n = getattr(params, "logprobs", None), getattr(params, "prompt_logprobs", None)
    completion.logprobs = None if n is None else [_at(t, n) for t in completion.token_ids]
    output.prompt_logprobs = (
        None if prompt_n is None else [None, *(_at(t, prompt_n) for t in output.prompt_token_ids[1:])]
    )
    return output


def _output(prompt_ids: list[int], text: str, ids: list[int], finish: str | None) -> Any:
    completion = SimpleNamespace(text=text, token_ids=ids, finish_reason=finish)
    return SimpleNamespace(prompt_token_ids=prompt_ids, outputs=[completion], finished=finish is not None)


class FakeVllm:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.engines: list[FakeEngine] = []

    def start(self, args: dict[str, Any]) -> FakeEngine:
        engine = FakeEngine(args, self.delay_s)
        self.engines.append(engine)
        return engine

    def modules(self) -> dict[str, ModuleType]:
        root = ModuleType("vllm")
        root.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
        root.AsyncEngineArgs = lambda **kwargs: kwargs  # type: ignore[attr-defined]
        root.AsyncLLMEngine = SimpleNamespace(from_engine_args=self.start)  # type: ignore[attr-defined]
        root.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)  # type: ignore[attr-defined]
        lora, request, sampling = (
            ModuleType("vllm.lora"),
            ModuleType("vllm.lora.request"),
            ModuleType("vllm.sampling_params"),
        )
        request.LoRARequest = LoRARequest  # type: ignore[attr-defined]
        sampling.RequestOutputKind = OutputKind  # type: ignore[attr-defined]
        return {"vllm": root, "vllm.lora": lora, "vllm.lora.request": request, "vllm.sampling_params": sampling}


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> FakeVllm:
    fake = FakeVllm()
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return fake


# --- model-version folders as training leaves them (weights are never read by the stand-in) -------


@functools.cache
def tiny_settings() -> dict[str, Any]:
    return resolve_settings("tiny-random").to_dict()


def write_version(target: Path, *, rank: int | None = 8) -> Path:
    """A finalized LoRA version of tiny-random (rank None: a full fine-tune), with the real tokenizer."""
    staging = target.with_name(target.name + ".staging")
    tokenizer_src = Path(resolve_model_dir(TINY_RANDOM))
    (staging / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the fast tokenizer needs no vocab/merges files
        shutil.copyfile(tokenizer_src / name, staging / "tokenizer" / name)
    weights = "model" if rank is None else "adapter"
    (staging / weights).mkdir()
    config = {"model_type": "llama"} if rank is None else {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank}
    name = "config.json" if rank is None else "adapter_config.json"
    (staging / weights / name).write_text(json.dumps(config), encoding="utf-8")
    manifest = {"template": "tiny-random", "weights": weights, "settings": tiny_settings(), "prompt_format": FORMAT}
    finalize(staging, target, manifest)
    return target


# --- selection ------------------------------------------------------------------------------------


def test_backend_choice_follows_what_the_machine_has() -> None:
    """auto takes vLLM only where it can run; transformers never even probes; vllm where it cannot is an error."""
    probed: list[bool] = []

    def probe(missing: str | None) -> Any:
        return lambda: probed.append(True) or missing

    assert choose_backend("auto", probe(None)) == "vllm"
    assert choose_backend("auto", probe("no CUDA GPU is visible")) == "transformers"
    assert choose_backend("vllm", probe(None)) == "vllm"
    probed.clear()
    assert choose_backend("transformers", probe("vLLM is not installed")) == "transformers"
    assert probed == []
    with pytest.raises(BackendUnavailableError) as refused:
        choose_backend("vllm", probe("no CUDA GPU is visible (torch.cuda.is_available() is False)"))
    assert "no CUDA GPU is visible" in refused.value.message
    assert "pip install 'tuneloom[vllm]'" in refused.value.message
    assert "--backend transformers" in refused.value.message


def test_the_probe_names_what_is_missing_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this machine vLLM is absent; with a vllm that imports (the stand-in), the CPU-only torch is named."""
    if "vllm" not in sys.modules and importlib.util.find_spec("vllm") is None:
        assert vllm_missing() == "vLLM is not installed"
        assert choose_backend("auto") == "transformers"
    for name, module in FakeVllm().modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    import torch

    if not torch.cuda.is_available():
        assert vllm_missing() == "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        assert choose_backend("auto") == "transformers"


def test_serve_with_vllm_where_it_cannot_run_exits_saying_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloom serve --backend vllm` (the CLI's own entry point, in this process: no second interpreter start)."""
    from tuneloom.cli import main

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    data_dir = tmp_path / "data"
    code = main(["serve", "--backend", "vllm", "--data-dir", str(data_dir), "--port", str(_free_port())])
    assert code == 1
    stderr = capsys.readouterr().err
    message = " ".join(stderr.split())
    assert "--backend vllm needs vLLM and an NVIDIA GPU" in message
    assert "vLLM is not installed" in message
    assert "pip install 'tuneloom[vllm]'" in message and "vllm==0.33.0" in message
    assert "Traceback" not in stderr
    assert not data_dir.exists()  # refused before anything was created or started


# --- mapping --------------------------------------------------------------------------------------


def test_inference_params_map_onto_sampling_params() -> None:
    greedy = sampling_kwargs(InferenceParams(max_tokens=7, temperature=0.9, do_sample=False, stop=("\n",)), 50256)
    assert greedy == {
        "max_tokens": 7,
        "stop": ["###", "\n"],
        "n": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "stop_token_ids": [50256],
    }
    sampled = sampling_kwargs(InferenceParams(temperature=0.7, top_p=0.9, top_k=40), None)
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.7, 0.9, 40)
    assert sampled["max_tokens"] == 128 and sampled["stop"] == ["###"] and "stop_token_ids" not in sampled
    assert "seed" not in sampled and sampling_kwargs(InferenceParams(temperature=0.7, seed=9), None)["seed"] == 9
    assert sampling_kwargs(InferenceParams(do_sample=True, temperature=0.0), None)["temperature"] == 0.0
    penalized = sampling_kwargs(
        InferenceParams(repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=-1), None
    )
    assert (penalized["repetition_penalty"], penalized["presence_penalty"], penalized["frequency_penalty"]) == (
        1.3,
        0.5,
        -1,
    )
    assert "presence_penalty" not in sampling_kwargs(InferenceParams(frequency_penalty=0.2), None)  # only what is set
    with pytest.raises(SettingsError) as beams:
        sampling_kwargs(InferenceParams(num_beams=4), None)
    assert beams.value.key == "num_beams" and "vLLM backend" in beams.value.message
    scored = sampling_kwargs(InferenceParams(max_tokens=0), None, logprobs=1, prompt_logprobs=3)
    assert (scored["max_tokens"], scored["logprobs"], scored["prompt_logprobs"]) == (1, 1, 3)  # vLLM makes a token
    assert "logprobs" not in greedy and "prompt_logprobs" not in greedy


def test_versions_map_onto_engines(tmp_path: Path) -> None:
    """A LoRA version loads its base with LoRA on (rank room for it); a full fine-tune is its own model."""
    base = resolve_model_dir(TINY_RANDOM)
    lora = plan_version(write_version(tmp_path / "lora", rank=8))
    assert (lora.model, lora.adapter_dir, lora.adapter_rank) == (base, tmp_path / "lora" / "adapter", 8)
    args = engine_kwargs(lora, EngineConfig())
    assert args["model"] == base and args["enable_lora"] is True
    assert (args["max_lora_rank"], args["max_loras"]) == (64, 8)
    wide = plan_version(write_version(tmp_path / "wide", rank=100))
    assert wide.engine_key == lora.engine_key  # same base: one engine for both
    assert engine_kwargs(wide, EngineConfig())["max_lora_rank"] == 128  # vLLM's next allowed rank
    full = plan_version(write_version(tmp_path / "full", rank=None))
    assert full.model == str(tmp_path / "full" / "model") and full.adapter_dir is None
    assert "enable_lora" not in engine_kwargs(full, EngineConfig())
    assert full.engine_key != lora.engine_key


# --- the backend on its own: engines, cancellation ---------------------------------------------------


def test_engines_are_shared_per_base_and_swapped_when_idle(tmp_path: Path, fake_vllm: FakeVllm) -> None:
    from tuneloom.server.vllm_inference import VllmInference

    versions = {n: write_version(tmp_path / n, rank=r) for n, r in (("a", 8), ("c", 512), ("full", None))}

    async def run() -> None:
        service = VllmInference(start=fake_vllm.start)
        params = InferenceParams(max_tokens=3)
        await service.predict("a", versions["a"], ["x", "y"], params)
        with pytest.raises(ConflictError) as too_wide:
            await service.predict("c", versions["c"], ["z"], params)
        assert "LoRA rank is 512" in too_wide.value.message and "max_lora_rank 64" in too_wide.value.message
        await service.predict("full", versions["full"], ["z"], params)
        assert len(fake_vllm.engines) == 2 and fake_vllm.engines[0].shut_down  # the idle base engine made room
        await service.predict("a", versions["a"], ["x"], params)
        assert fake_vllm.engines[1].shut_down and len(fake_vllm.engines) == 3
        tokenizers = {id(service.cache.get(n, versions[n]).tokenizer) for n in versions}
        assert len(tokenizers) == 1  # identical tokenizer files: one loaded copy for every version
        ids = [(c.lora.lora_name, c.lora.lora_int_id) for e in fake_vllm.engines for c in e.calls if c.lora]
        assert ids == [("a", 1), ("a", 1), ("a", 1)]  # stable across engines ("c" took 2, never reused)

    asyncio.run(run())


def test_a_stream_the_client_leaves_is_aborted_and_frees_the_engine(tmp_path: Path, fake_vllm: FakeVllm) -> None:
    from tuneloom.server.vllm_inference import VllmInference

    fake_vllm.delay_s = 0.05
    version = write_version(tmp_path / "v")

    async def run() -> None:
        service = VllmInference(start=fake_vllm.start)
        stream = await service.stream("v", version, "hi", InferenceParams(max_tokens=300, stop=("nothing",)))
        pieces = stream.__aiter__()
        first = await pieces.__anext__()
        assert first == "v"
        stream.cancel()
        await asyncio.sleep(0.1)
        (call,) = fake_vllm.engines[0].calls
        assert not call.finished  # vLLM's generate saw the cancellation: it aborts the request
        assert all(e.busy == 0 for e in service._engines.values())

    asyncio.run(run())


def test_a_prompt_scored_as_sent_is_counted_as_sent(tmp_path: Path, fake_vllm: FakeVllm) -> None:
    """`--max-batch-tokens` counted an echoed prompt inside the prompt format it does not get: a request within the
    limit (3 tokens, nothing generated) was refused as if it were 9, where the transformers backend admits it."""
    from tuneloom.server.vllm_inference import VllmInference

    version = write_version(tmp_path / "v")

    async def run() -> None:
        service = VllmInference(start=fake_vllm.start, max_batch_tokens=6)
        scored = service.predict("v", version, ["hello there friend"], InferenceParams(max_tokens=0), prompt_logprobs=0)
        (prediction,) = await scored
        assert prediction.generation.prompt_logprobs is not None and prediction.generation.text == ""
        with pytest.raises(SettingsError) as refused:  # the same text, prompted: 9 tokens
            await service.predict("v", version, ["hello there friend"], InferenceParams(max_tokens=1))
        assert refused.value.key == "max_batch_tokens"

    asyncio.run(run())


# --- through the real routes ------------------------------------------------------------------------


@pytest.fixture
def vllm_server(tmp_path: Path, fake_vllm: FakeVllm) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The real app on a loopback port, in this process (so the stand-in module is the one it imports)."""
    from tuneloom.server.app import create_app
    from tuneloom.server.context import ServerContext
    from tuneloom.store.keys import create_key

    ctx = ServerContext.open(tmp_path / "data")
    ctx.inference_backend = "vllm"
    key, _ = create_key(ctx.db, None, ctx.pepper)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Key {key}"}, tmp_path / "data"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ctx.db.dispose()


def trained_versions(url: str, headers: dict[str, str], data_dir: Path, count: int) -> list[str]:
    """A model with `count` MODEL_TRAINED versions: dataset through the API, runs recorded in the store."""
    from tuneloom.store import jobs
    from tuneloom.store.db import open_database
    from tuneloom.store.models import TrainingStatus

    api = f"{url}/api/apps"
    assert httpx.post(api, json={"id": "shop"}, headers=headers, timeout=60).status_code == 201
    assert httpx.post(f"{api}/shop/datasets", json={"id": "reviews"}, headers=headers, timeout=60).status_code == 201
    body = ("\n".join(sentiment_lines()) + "\n").encode()
    assert (
        httpx.post(f"{api}/shop/datasets/reviews/uploads", content=body, headers=headers, timeout=60).status_code == 201
    )
    dataset_version = httpx.post(f"{api}/shop/datasets/reviews/versions", headers=headers, timeout=60).json()["id"]
    assert httpx.post(f"{api}/shop/models", json={"id": "gen"}, headers=headers, timeout=60).status_code == 201
    db = open_database(None, data_dir=data_dir, migrate=False)
    settings = tiny_settings()
    ids = []
    for _ in range(count):
        job = jobs.enqueue(
            db, "shop", "gen", dataset_version_id=dataset_version, template="tiny-random", settings=settings
        )
        assert jobs.claim_next(db, "tests", lease_seconds=600) is not None
        write_version(data_dir / "model-versions" / job.id)
        jobs.finish(
            db, job.id, TrainingStatus.MODEL_TRAINED, artifact_path=f"model-versions/{job.id}", worker_id="tests"
        )
        ids.append(job.id)
    db.dispose()
    return ids


def _raw_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event name, data text) per server-sent event."""
    events, kind = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((kind, line[len("data: ") :]))
            kind = "message"
    return events


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, json.loads(data)) for kind, data in _raw_events(response)]


def test_routes_serve_each_version_as_its_adapter_on_one_engine(vllm_server: Any, fake_vllm: FakeVllm) -> None:
    url, headers, data_dir = vllm_server
    assert httpx.get(f"{url}/healthz").json()["backend"] == "vllm"
    first, second = trained_versions(url, headers, data_dir, 2)
    model = f"{url}/api/apps/shop/models/gen"

    predicted = httpx.post(
        f"{model}/predict",
        json={"inputs": ["hello", "bye"], "version": first, "inference_params": {"max_tokens": 2}},
        headers=headers,
        timeout=30,
    )
    assert predicted.status_code == 200, predicted.text
    assert [(o["text"], o["finish_reason"], o["tokens"]) for o in predicted.json()["outputs"]] == [
        (first, "length", 2)
    ] * 2

    body = {"input": "hello", "version": second, "inference_params": {"stop": [" fine"], "max_tokens": 50}}
    with httpx.stream("POST", f"{model}/generate", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        events = sse_events(response)
    pieces = [data["text"] for kind, data in events if kind == "message"]
    assert "".join(pieces) == f"{second} answers" and len(pieces) >= 2  # streamed token by token
    assert events[-1] == (
        "done",
        {"finish_reason": "stop", "model_version_id": second, "tokens": 4, "prompt_tokens": 5},
    )

    again = httpx.post(f"{model}/predict", json={"inputs": ["hi"], "version": first}, headers=headers, timeout=30)
    assert again.json()["outputs"][0]["text"] == f"{first} answers fine"  # `###` stops it, as on transformers

    (engine,) = fake_vllm.engines  # both versions on one engine of the base model
    assert engine.args["model"] == resolve_model_dir(TINY_RANDOM) and engine.args["enable_lora"] is True
    calls = engine.calls
    prompts = ["### Human: hello ### Assistant:", "### Human: bye ### Assistant:"]
    assert [c.prompt for c in calls] == [*prompts, prompts[0], "### Human: hi ### Assistant:"]
    assert [(c.lora.lora_name, c.lora.lora_int_id) for c in calls if c.lora] == [
        (first, 1),
        (first, 1),
        (second, 2),
        (first, 1),
    ]
    assert calls[0].lora and calls[0].lora.lora_path == str(data_dir / "model-versions" / first / "adapter")
    predict_params, stream_params = calls[0].params, calls[2].params
    assert (predict_params.max_tokens, predict_params.stop, predict_params.output_kind) == (
        2,
        ["###"],
        OutputKind.FINAL_ONLY,
    )
    assert predict_params.temperature == 0.0 and predict_params.stop_token_ids == [50256]
    assert (stream_params.max_tokens, stream_params.stop, stream_params.output_kind) == (
        50,
        ["###", " fine"],
        OutputKind.DELTA,
    )
    assert len({c.request_id for c in calls}) == len(calls)

    # the OpenAI-compatible stream: same backend, usage counted from vLLM's token ids
    body = {"model": f"shop/gen/{first}", "prompt": "hello", "max_tokens": 3, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        chunks = [json.loads(d) for kind, d in _raw_events(response) if d != "[DONE]"]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == f"{first} answers"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    asked = httpx.post(f"{url}/v1/completions", json={**body, "logprobs": 1}, headers=headers, timeout=30)
    assert asked.status_code == 400 and asked.json()["error"]["param"] == "logprobs"  # not answered without them
    sampled = {**body, "n": 2, "seed": 9, "temperature": 1}
    with httpx.stream("POST", f"{url}/v1/completions", json=sampled, headers=headers, timeout=30) as response:
        chunks = [json.loads(d) for kind, d in _raw_events(response) if d != "[DONE]"]
    assert [c.params.seed for c in engine.calls[-2:]] == [9, 10]  # a vLLM request per choice, seed + i
    parts = [c["choices"][0] for c in chunks if c["choices"]]
    texts = ["".join(p["text"] for p in parts if p["index"] == i) for i in (0, 1)]
    assert texts == [f"{first} answers"] * 2 and chunks[-1]["usage"]["completion_tokens"] == 6

    refused = httpx.post(f"{model}/predict", json={"inputs": ["TOO LONG"]}, headers=headers, timeout=30)
    assert refused.status_code == 422
    assert refused.json()["code"] == "INVALID_PARAMS" and "maximum model length" in refused.json()["message"]

    seeded = {"inputs": ["a", "b", "c"], "version": first, "inference_params": {"temperature": 1.0, "seed": 40}}
    assert httpx.post(f"{model}/predict", json=seeded, headers=headers, timeout=30).status_code == 200
    assert [c.params.seed for c in engine.calls[-3:]] == [40, 41, 42]  # input i samples with seed + i


def test_log_probabilities_are_vllms_with_the_prompt_scored_as_sent(vllm_server: Any, fake_vllm: FakeVllm) -> None:
    """`logprobs` was refused on vLLM. They are vLLM's own (its processed ones for generated tokens, as tuneloom's
    are), in OpenAI's shape; with echo the prompt goes to vLLM as sent, scored by its `prompt_logprobs`."""
    url, headers, data_dir = vllm_server
    (version,) = trained_versions(url, headers, data_dir, 1)
    ask = {"model": f"shop/gen/{version}", "prompt": "hello there friend", "temperature": 0}
    echo = {**ask, "echo": True, "logprobs": 2, "max_tokens": 0}
    answer = httpx.post(f"{url}/v1/completions", json=echo, headers=headers, timeout=30).json()
    (choice,), usage = answer["choices"], answer["usage"]
    assert (choice["text"], choice["finish_reason"], usage["completion_tokens"]) == (ask["prompt"], "length", 0)
    lp = choice["logprobs"]
    assert lp["token_logprobs"] == [None, -0.25, -0.25] and lp["top_logprobs"][0] is None
    assert [len(top) for top in lp["top_logprobs"][1:]] == [2, 2] and len(lp["tokens"]) == usage["prompt_tokens"]
    (engine,) = fake_vllm.engines
    assert engine.args["logprobs_mode"] == "processed_logprobs"
    sent = engine.calls[-1]
    assert (sent.prompt, sent.params.prompt_logprobs, sent.params.max_tokens) == (ask["prompt"], 2, 1)

    generated = httpx.post(f"{url}/v1/completions", json={**ask, "logprobs": 1, "max_tokens": 3}, headers=headers)
    (choice,) = generated.json()["choices"]
    assert choice["logprobs"]["token_logprobs"] == [-0.25] * 3 and choice["logprobs"]["text_offset"][0] == 0
    assert engine.calls[-1].prompt == "### Human: hello there friend ### Assistant:"  # no echo: the prompt format

    by_ids = httpx.post(f"{url}/v1/completions", json={**echo, "prompt": [5, 6, 7]}, headers=headers).json()
    assert engine.calls[-1].prompt == {"prompt_token_ids": [5, 6, 7]}  # vLLM's TokensPrompt, read as sent
    assert by_ids["usage"]["prompt_tokens"] == 3 and by_ids["choices"][0]["logprobs"]["token_logprobs"][0] is None
