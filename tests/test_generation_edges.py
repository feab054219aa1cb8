"""Generation requests at the edges: past the model's context, beam search streamed, long stop strings,
OpenAI fields that would change the answer, a /predict or a stream of `n` choices whose client leaves
before the answer, and a system prompt with a sectioned input.

Each of these once crashed, ran away or silently answered something else; tiny-random's context is
1,024 positions (`max_position_embeddings`), so a prompt of ~1,200 words is past it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from tests.conftest import NEGATIVE, POSITIVE, server_log
from tests.server_helpers import ONE_STEP, Deployed, deploy

from tuneloom.data.types import Example
from tuneloom.errors import DataFileError, SettingsError
from tuneloom.evaluate.runner import evaluate_examples
from tuneloom.generate.generator import context_length, generate, stream
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import MAX_STOP_CHARS, InferenceParams
from tuneloom.server.limits import refuse_above

LONG = "word " * 1200  # ~1,220 tokens as prompted: past tiny-random's 1,024
NEAR = "word " * 900  # ~920 tokens: room for 100 new ones, not for 300
# One generation at a time per key: a slot held for a client that left shows at once.
SERVER_ARGS = ["--max-concurrent-generations-per-key", "1"]
# Generation never touches the database: the server runs on SQLite only (as in test_server_predict.py).
ON_SQLITE = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_for_inference("tiny-random")


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    return deploy(*server)


def predict(deployed: Deployed, inputs: list[str], params: dict[str, Any], timeout: float = 120) -> httpx.Response:
    body = {"inputs": inputs, "inference_params": params}
    return httpx.post(f"{deployed.model_url}/predict", json=body, headers=deployed.headers, timeout=timeout)


def v1(deployed: Deployed, path: str, **body: Any) -> httpx.Response:
    body = {"model": f"{deployed.app_id}/{deployed.model_id}", **body}
    return httpx.post(f"{deployed.url}/v1/{path}", json=body, headers=deployed.headers, timeout=120)


def test_a_prompt_past_the_context_is_refused_before_generating(loaded: Any) -> None:
    assert context_length(loaded) == 1024
    greedy = InferenceParams(max_tokens=20)
    with pytest.raises(SettingsError) as alone:
        generate(loaded, ["short", LONG], greedy)
    assert alone.value.key == "inputs" and alone.value.details["limit"] == 1024
    assert "input 1" in alone.value.message
    with pytest.raises(SettingsError) as streamed:
        list(stream(loaded, LONG, greedy))
    assert streamed.value.key == "input"
    with pytest.raises(SettingsError) as room:
        generate(loaded, [NEAR], InferenceParams(max_tokens=300))
    assert room.value.key == "max_tokens" and "at most" in room.value.message
    (fits,) = generate(loaded, [NEAR], InferenceParams(max_tokens=100))
    assert fits.tokens == 100


def test_evaluation_fits_long_held_out_examples_and_names_one_that_cannot_fit(loaded: Any) -> None:
    """A held-out set is the user's data: a long example shortens its chunk's answers, not the whole run."""
    near = Example(prompt=NEAR, completion="positive", line=7)
    result = evaluate_examples(loaded, [Example(prompt="I love it", completion="positive", line=3), near],
                               params=InferenceParams(max_tokens=300))  # fmt: skip
    assert [row["line"] for row in result.rows] == [3, 7]
    with pytest.raises(DataFileError, match=r"^line 9: the prompt is \d+ tokens and this model's context is 1024"):
        evaluate_examples(loaded, [near, Example(prompt=LONG, completion="positive", line=9)])


def test_beam_search_streams_its_answer_in_one_piece(loaded: Any) -> None:
    """transformers cannot stream beam search: `tuneloom generate --stream --num-beams 3` raised ValueError."""
    beams = InferenceParams(max_tokens=12, num_beams=3)
    (expected,) = generate(loaded, ["I love it"], beams)
    assert "".join(stream(loaded, "I love it", beams)) == expected.text


def test_long_stop_strings_are_refused_naming_the_limit() -> None:
    InferenceParams.from_dict({"stop": ["x" * MAX_STOP_CHARS]})
    with pytest.raises(SettingsError) as refused:
        InferenceParams.from_dict({"stop": ["ok", "x" * 5000]})
    assert refused.value.key == "stop" and refused.value.details["limit"] == MAX_STOP_CHARS


@ON_SQLITE
def test_the_server_refuses_past_the_context_on_every_route(deployed: Deployed) -> None:
    long = predict(deployed, ["I love it", LONG], {"max_tokens": 20})
    assert long.status_code == 422, long.text
    assert long.json()["details"]["key"] == "inputs" and long.json()["details"]["limit"] == 1024
    room = predict(deployed, [NEAR], {"max_tokens": 300})
    assert room.status_code == 422 and room.json()["details"]["key"] == "max_tokens"
    body = {"input": LONG, "inference_params": {"max_tokens": 5}}
    streamed = httpx.post(f"{deployed.model_url}/generate", json=body, headers=deployed.headers, timeout=120)
    assert streamed.status_code == 422 and streamed.json()["details"]["key"] == "input"
    completion = v1(deployed, "completions", prompt=LONG, stream=True)
    assert completion.status_code == 400 and completion.json()["error"]["param"] == "prompt"
    chat = v1(deployed, "chat/completions", messages=[{"role": "user", "content": LONG}])
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"
    assert predict(deployed, ["I love it"], {"max_tokens": 3}).status_code == 200  # the engine is unharmed


@ON_SQLITE
@pytest.mark.parametrize(
    ("path", "field", "body"),
    [
        ("completions", "suffix", {"prompt": "I love it", "suffix": "."}),
        ("completions", "best_of", {"prompt": "I love it", "best_of": 3}),
        ("chat/completions", "top_logprobs", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
        (
            "chat/completions",
            "messages.0.content",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]},
        ),
    ],
)
def test_openai_fields_that_would_change_the_answer_are_refused(
    deployed: Deployed, path: str, field: str, body: dict[str, Any]
) -> None:
    """Ignored, they answered 200 with no inserted text, all answers unranked, or an image dropped from the question
    (`top_logprobs` alone: it only says how many alternatives `logprobs: true` reports)."""
    answer = v1(deployed, path, max_tokens=2, **body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field


@ON_SQLITE
def test_openai_defaults_of_those_fields_are_accepted(deployed: Deployed) -> None:
    plain = v1(deployed, "completions", prompt="I love it", max_tokens=2, echo=False, best_of=1, logprobs=None)
    assert plain.status_code == 200, plain.text
    parts = [{"type": "text", "text": "I love "}, {"type": "text", "text": "it"}]
    chat = v1(deployed, "chat/completions", max_tokens=2, logprobs=False, messages=[{"role": "user", "content": parts}])
    assert chat.status_code == 200, chat.text


@ON_SQLITE
def test_a_predict_whose_client_left_frees_its_slot(deployed: Deployed) -> None:
    """A plain response is not cancelled when its client goes: the generation ran on, the key's one slot held."""
    big = {"max_tokens": 500, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        predict(deployed, ["I love it"] * 120, big, timeout=1)
    deadline = time.monotonic() + 5
    while (answer := predict(deployed, ["I love it"], {"max_tokens": 2})).status_code == 429:
        assert time.monotonic() < deadline, "the slot of the abandoned /predict was not freed"
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text


def test_beam_search_counts_each_beam_against_the_batch_limit() -> None:
    """Beam search holds num_beams rows per input: 20 inputs × 4 beams × 1,024 tokens is past 65,536."""
    refuse_above(65_536, 20, 24, 1000)  # 20,480 batch tokens without beams
    with pytest.raises(SettingsError, match=r"20 input\(s\) × 4 beams × \(24 prompt tokens \+ 1000 max_tokens\)"):
        refuse_above(65_536, 20, 24, 1000, beams=4)


def joined(parts: list[Any], text_of: Any) -> list[str]:
    """Each choice's text, index by index: the texts of its chunks, joined."""
    return ["".join(text_of(p) for p in parts if p.index == i) for i in range(max(p.index for p in parts) + 1)]


@ON_SQLITE
def test_streamed_n_choices_interleave_and_join_to_the_unstreamed_ones(deployed: Deployed) -> None:
    """`n` above 1 with `stream: true` was a 400. OpenAI interleaves the choices' chunks, each naming its choice, each
    choice ending with its own finish_reason; joined, they are the choices not streamed (seeded: choice i samples
    with seed + i), and the usage counts every choice and the prompt once. Parsed by the `openai` package."""
    client = OpenAI(base_url=f"{deployed.url}/v1", api_key=deployed.key, max_retries=0, timeout=120)
    model = f"{deployed.app_id}/{deployed.model_id}"
    ask: Any = {"model": model, "prompt": "I love it", "max_tokens": 8, "temperature": 1.5, "seed": 21, "n": 3}
    whole = client.completions.create(**ask)
    chunks = list(client.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    parts = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert joined(parts, lambda p: p.text) == [c.text for c in whole.choices] and len(set(joined(parts, str))) == 3
    assert chunks[-1].usage == whole.usage and [p.index for p in parts] != sorted(p.index for p in parts)
    for choice in whole.choices:
        ends = [p.finish_reason for p in parts if p.index == choice.index]
        assert ends[-1] == choice.finish_reason and not any(ends[:-1])
    greedy: Any = {"model": model, "messages": [{"role": "user", "content": "I love it"}], "max_tokens": 6, "n": 2}
    chat = client.chat.completions.create(**greedy, temperature=0)
    streamed = [c.choices[0] for c in client.chat.completions.create(**greedy, temperature=0, stream=True) if c.choices]
    assert [(p.index, p.delta.role) for p in streamed[:2]] == [(0, "assistant"), (1, "assistant")]
    assert joined(streamed, lambda p: p.delta.content or "") == [c.message.content for c in chat.choices]


@ON_SQLITE
def test_a_streamed_n_whose_client_left_ends_every_choice(deployed: Deployed) -> None:
    """Each choice is a row of the version's batch, and 128 of them fill it: a /predict of two inputs waits until
    they leave. Once the client has gone they all leave at the next step (left running, they generate for 11 s
    here, longer on a busy machine). Streamed or not, `n` counts as n inputs against --max-batch-tokens.

    A step's 128 chunks were written one after another with no turn of the event loop between them, so the
    server went on writing to the closed socket until the turn after: asyncio's "socket.send() raised
    exception." came into the server's log once per write (dozens of lines per client that left)."""
    log = server_log(deployed.data_dir)
    logged_before = log.stat().st_size
    body = {"model": f"{deployed.app_id}/{deployed.model_id}", "prompt": "I love it", "stream": True, "n": 128}
    too_big = httpx.post(f"{deployed.url}/v1/completions", json={**body, "max_tokens": 600}, headers=deployed.headers)
    assert too_big.status_code == 400 and "--max-batch-tokens" in too_big.json()["error"]["message"]
    payload = {**body, "max_tokens": 450, "temperature": 0}
    with httpx.stream("POST", f"{deployed.url}/v1/completions", json=payload, headers=deployed.headers) as response:
        assert response.status_code == 200
        next(line for line in response.iter_lines() if line.startswith("data: "))
    left = time.monotonic()
    while (answer := predict(deployed, ["I love it", "ok"], {"max_tokens": 2})).status_code == 429:
        time.sleep(0.05)  # the key's one slot: freed with the choices
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - left < 5, "the choices of the stream whose client left kept generating"
    with log.open("rb") as written:
        written.seek(logged_before)
        assert b"socket.send() raised exception" not in written.read()


@ON_SQLITE
def test_a_training_run_prints_no_deprecation_warning_of_the_libraries_into_the_server_log(deployed: Deployed) -> None:
    """peft reads transformers' deprecated `is_gradient_checkpointing`: each run (its own process) printed that
    FutureWarning into the server's log; `deployed` trained one."""
    assert "is_gradient_checkpointing" not in server_log(deployed.data_dir).read_text(encoding="utf-8")


SLOTTED = [f"### System: {{system_prompt}} ### Human: {text} ### Assistant: ok" for text in POSITIVE + NEGATIVE]


@ON_SQLITE
def test_a_sectioned_input_gets_the_system_prompt_in_the_section_the_version_has_for_it(deployed: Deployed) -> None:
    """Trained on `### System: {system_prompt} ### Human: … ### Assistant: …`: a sectioned input (a chat message,
    or a /predict input) was answered as if no system prompt had been given."""
    slotted = deploy(deployed.url, deployed.data_dir, "slotted", "chat", trainer_config=ONE_STEP, lines=SLOTTED)
    system, question = "Answer in one word.", "### Human: I love it"
    greedy = {"max_tokens": 6, "temperature": 0}
    as_trained = v1(slotted, "completions", prompt=f"### System: {system} {question} ### Assistant:", **greedy).json()
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    chat = v1(slotted, "chat/completions", messages=messages, **greedy).json()
    assert chat["usage"] == as_trained["usage"], (chat, as_trained)
    assert chat["choices"][0]["message"]["content"] == as_trained["choices"][0]["text"]
    own = predict(slotted, [f"### System: be verbose {question}"], {**greedy, "system_prompt": system})
    assert own.status_code == 422 and own.json()["details"]["key"] == "system_prompt", own.text
    assert "the input carries its own system section" in own.json()["message"]
    messages[1]["content"] = f"### System: be verbose {question}"
    refused = v1(slotted, "chat/completions", messages=messages, **greedy)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages", refused.text
