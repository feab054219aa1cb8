"""The compiled decode path (`tuneloom generate --compile`): tuneloom's own loop over a static, bucketed
KV cache for one-input calls.

The step is compiled only on a GPU, so here (CPU) the loop runs eagerly: these tests check that it
gives exactly the default path's answers — greedy, seeded sampling, penalties — and which calls take
it; the speed is measured on a GPU by `bench/gpu.sh` (bench.generate's `compiled` variant).
"""

from __future__ import annotations

from typing import Any

import pytest
from bench.step_ops import CountOps
from tests.conftest import run_cli

from tuneloom.generate import sampling
from tuneloom.generate.compiled import CACHE_BUCKET, StaticDecoder, cache_length, compile_decode
from tuneloom.generate.continuous import run_alone
from tuneloom.generate.generator import generate, stream
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.rows import Row

PROMPTS = ["Is the delivery late?", "Summarise: the invoice was paid twice and the customer wants a refund."]


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_for_inference("tiny-random")


def test_the_cache_is_rounded_up_to_a_bucket_within_the_context() -> None:
    assert cache_length(100, None) == CACHE_BUCKET
    assert cache_length(CACHE_BUCKET + 1, None) == 2 * CACHE_BUCKET  # one more graph, not one per length
    assert cache_length(900, 1000) == 1000  # never sized past the model's positions
    assert cache_length(1000, 1000) == 1000


PARAMS = [
    InferenceParams(max_tokens=24),
    InferenceParams(max_tokens=24, temperature=0.9, top_p=0.9, seed=7),
    InferenceParams(max_tokens=24, repetition_penalty=1.8, frequency_penalty=0.5),
    InferenceParams(max_tokens=24, stop=("e",)),
]


def answers(loaded: Any, params: InferenceParams) -> tuple[list[Any], list[str]]:
    generations = [generate(loaded, [p], params)[0] for p in PROMPTS]
    streams = ["".join(stream(loaded, p, params)) for p in PROMPTS]
    return [(g.text, g.tokens, g.finish_reason) for g in generations], streams


@pytest.mark.parametrize("params", PARAMS, ids=["greedy", "seeded-sampling", "penalties", "stop-string"])
def test_the_static_loop_answers_exactly_as_the_default_path(loaded: Any, params: InferenceParams) -> None:
    default, default_streams = answers(loaded, params)
    loaded.compiled_decode = True  # what compile_decode sets on a GPU; eager here
    loaded.decoders.clear()
    try:
        static, static_streams = answers(loaded, params)
    finally:
        loaded.compiled_decode = False
    assert list(loaded.decoders) == [CACHE_BUCKET]  # one decoder (one graph on a GPU) served every call
    assert static == default
    assert any(tokens > 0 for _, tokens, _ in default)
    assert static_streams == default_streams == [text for text, _, _ in default]


def test_only_single_input_single_beam_calls_take_the_static_loop(loaded: Any) -> None:
    loaded.compiled_decode = True
    loaded.decoders.clear()
    try:
        batched = generate(loaded, PROMPTS, InferenceParams(max_tokens=8))
        beams = generate(loaded, PROMPTS[:1], InferenceParams(max_tokens=8, num_beams=2))
    finally:
        loaded.compiled_decode = False
    assert loaded.decoders == {}  # a new batch size or beam count would be a new graph: generate() serves them
    assert len(batched) == 2 and len(beams) == 1


def test_the_device_starts_each_step_before_the_host_takes_the_token_that_feeds_it(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlap that hides the host's per-token work behind the device's (`run_static`): step k+1 is
    started before token k is detokenized, and a row that reaches max_tokens starts no step it would not use."""
    order: list[str] = []
    real_step, real_accept = StaticDecoder.step, Row.accept

    def step(self: StaticDecoder, token: Any) -> Any:
        order.append("step")
        return real_step(self, token)

    def accept(self: Row, *args: Any) -> None:
        order.append("take")
        real_accept(self, *args)

    monkeypatch.setattr(StaticDecoder, "step", step)
    monkeypatch.setattr(Row, "accept", accept)
    loaded.compiled_decode = True
    try:
        generation = generate(loaded, PROMPTS[:1], InferenceParams(max_tokens=6))[0]
    finally:
        loaded.compiled_decode = False
    assert generation.tokens == 6 and generation.finish_reason == "length"
    assert order == ["step", "take"] * 5 + ["take"]


@pytest.mark.parametrize(
    "params",
    [*PARAMS[:3], InferenceParams(max_tokens=24, temperature=0.8, top_p=0.9, seed=2)],
    ids=["greedy", "seeded-sampling", "penalties", "top-p"],
)
def test_after_the_prompt_the_loop_never_makes_the_host_wait_for_the_device(
    loaded: Any, params: InferenceParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between tokens the host reads only the token itself (a copy it waits for by an event, after starting
    the next step): no boolean index, `bool(tensor)` or `.item()` in the token choice, which on a GPU would
    stop the host until the step it just started had run. Top-p rows sort in full there (as here)."""
    monkeypatch.setattr(sampling, "sorts_in_full", lambda device: True)
    row = Row.create(loaded, PROMPTS[1], params)
    loaded.compiled_decode = True
    try:
        pauses = run_alone(loaded, [row])
        next(pauses)  # the prompt's pass, and what a request does once
        with CountOps() as ops:
            for _ in pauses:
                pass
    finally:
        loaded.compiled_decode = False
    assert len(row.ids) > 1
    assert ops.waits == []


def test_log_probabilities_from_the_static_loop_are_those_of_the_batch(loaded: Any) -> None:
    def reported(compiled: bool) -> list[Any]:
        row = Row.create(loaded, PROMPTS[1], InferenceParams(max_tokens=10, temperature=0.8, top_k=20, seed=5), 3)
        loaded.compiled_decode = compiled
        try:
            for _ in run_alone(loaded, [row]):
                pass
        finally:
            loaded.compiled_decode = False
        return row.logprobs

    static, batch = reported(True), reported(False)
    assert len(static) == 10 and all(len(t.top) == 3 for t in static)
    assert static == batch


@pytest.mark.soak  # a cold inductor compile takes 15-30 s on 2 cores
def test_the_compiled_step_and_prompt_pass_are_two_graphs_that_every_token_and_prompt_replays(loaded: Any) -> None:
    """A graph break or a recompile per token or prompt length would undo what compiling saves; compiling
    here (CPU, inductor) checks the graphs the GPU would run, and that they answer as the eager loop: the
    step's, and the prompt pass's for every length (the first prompt runs eagerly: it allocates the cache)."""
    import torch._dynamo

    params = InferenceParams(max_tokens=12, temperature=0.9, seed=3)
    prompts = [*PROMPTS, "Translate to French: the parcel arrived damaged, please send another one."]
    eager = [generate(loaded, [p], params)[0].text for p in prompts]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    loaded.compiled_decode = True
    loaded.decoders.clear()
    loaded.decoders[CACHE_BUCKET] = StaticDecoder(loaded.model, CACHE_BUCKET, compile_step=True)
    try:
        compiled = [generate(loaded, [p], params)[0].text for p in prompts]
    finally:
        loaded.compiled_decode = False
        loaded.decoders.clear()
    assert compiled == eager
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # the step; the prompt pass, any length
    assert not torch._dynamo.utils.counters["graph_break"]


def test_compile_is_refused_quietly_without_a_gpu(loaded: Any) -> None:
    assert compile_decode(loaded) is False and loaded.compiled_decode is False
    result = run_cli("generate", "tiny-random", "Is the delivery late?", "--compile", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert "--compile has no effect without a GPU" in result.stderr
