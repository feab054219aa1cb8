"""The OpenAI-compatible routes driven by the official `openai` package, unchanged, against a real server.

Every answer is checked against tuneloom's own /predict for the same version and parameters: the
compatibility layer must translate, never change what the model says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from openai import OpenAI
from tests.conftest import INSTRUCTION, NEGATIVE, POSITIVE, api_key
from tests.server_helpers import (
    ONE_STEP,
    Deployed,
    deploy,
    server_on_sqlite,  # noqa: F401  (the module's `server`)
)

from tuneloom.generate.loading import InferenceModel, load_for_inference

INPUT = "I love it"


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    return deploy(*server)


@pytest.fixture(scope="module")
def client(deployed: Deployed) -> OpenAI:
    return OpenAI(base_url=f"{deployed.url}/v1", api_key=deployed.key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(deployed: Deployed) -> InferenceModel:
    """The deployed version, loaded in the test: what the server's answers are checked against."""
    return load_for_inference(deployed.version_dir)


def name(deployed: Deployed, version: bool = False) -> str:
    base = f"{deployed.app_id}/{deployed.model_id}"
    return f"{base}/{deployed.version_id}" if version else base


def predicted(deployed: Deployed, text: str, **params: Any) -> dict[str, Any]:
    body = {"inputs": [text], "inference_params": {"temperature": 0, **params}}
    answer = httpx.post(f"{deployed.model_url}/predict", json=body, headers=deployed.headers, timeout=120)
    assert answer.status_code == 200, answer.text
    output: dict[str, Any] = answer.json()["outputs"][0]
    return output


def test_models_lists_trained_versions_of_the_keys_apps(deployed: Deployed, client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [name(deployed), name(deployed, version=True)]
    assert [client.models.retrieve(model).id for model in ids] == ids
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve(f"{deployed.app_id}/no-such-model")
    assert unknown.value.code == "model_not_found"
    admin = {"Authorization": f"Bearer {api_key(deployed.data_dir)}"}
    assert httpx.post(f"{deployed.url}/api/apps", json={"id": "rival"}, headers=admin).status_code == 201
    rival = OpenAI(base_url=f"{deployed.url}/v1", api_key=api_key(deployed.data_dir, "--app", "rival"), max_retries=0)
    assert list(rival.models.list()) == []
    assert name(deployed) in httpx.get(f"{deployed.url}/v1/models", headers=admin).text  # admin sees every app
    with pytest.raises(openai.NotFoundError) as caught:
        rival.completions.create(model=name(deployed), prompt=INPUT, max_tokens=2)
    assert "not found" in caught.value.message


def test_completions_plain_and_streamed(deployed: Deployed, client: OpenAI) -> None:
    expected = predicted(deployed, INPUT, max_tokens=8)
    answer = client.completions.create(model=name(deployed), prompt=INPUT, max_tokens=8, temperature=0)
    assert answer.object == "text_completion" and answer.model == name(deployed)
    (choice,) = answer.choices
    assert (choice.text, choice.finish_reason, choice.index) == (expected["text"], "length", 0)
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8 and answer.usage.prompt_tokens > 3
    chunks = list(
        client.completions.create(
            model=name(deployed, version=True),
            prompt=INPUT,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected["text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_a_list_of_prompts_answers_in_order(deployed: Deployed, client: OpenAI) -> None:
    prompts = ["great product", "awful quality", INPUT]
    answer = client.completions.create(model=name(deployed), prompt=prompts, max_tokens=6, temperature=0)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert [c.text for c in answer.choices] == [predicted(deployed, p, max_tokens=6)["text"] for p in prompts]


def test_n_answers_each_prompt_n_times_counting_each_prompt_once(deployed: Deployed, client: OpenAI) -> None:
    """`n: 2` was refused; OpenAI orders the choices prompt by prompt, and usage counts a prompt once for its n."""
    prompts = ["great product", INPUT]
    answer = client.completions.create(model=name(deployed), prompt=prompts, n=2, max_tokens=4, temperature=0)
    expected = [predicted(deployed, p, max_tokens=4)["text"] for p in prompts]
    assert [(c.index, c.text) for c in answer.choices] == list(enumerate([expected[0]] * 2 + [expected[1]] * 2))
    alone = [client.completions.create(model=name(deployed), prompt=p, max_tokens=1).usage for p in prompts]
    assert answer.usage is not None and answer.usage.prompt_tokens == sum(u.prompt_tokens for u in alone if u)
    assert answer.usage.completion_tokens == 16
    chat = client.chat.completions.create(
        model=name(deployed), messages=[{"role": "user", "content": INPUT}], n=3, max_tokens=4, temperature=0
    )
    assert [c.index for c in chat.choices] == [0, 1, 2] and {c.message.content for c in chat.choices} == {expected[1]}
    assert chat.usage is not None and chat.usage.completion_tokens == 12


def test_echo_returns_the_prompt_before_the_completion(deployed: Deployed, client: OpenAI) -> None:
    expected = INPUT + predicted(deployed, INPUT, max_tokens=5)["text"]
    answer = client.completions.create(model=name(deployed), prompt=INPUT, max_tokens=5, temperature=0, echo=True)
    assert answer.choices[0].text == expected
    stream = client.completions.create(
        model=name(deployed), prompt=INPUT, max_tokens=5, temperature=0, echo=True, stream=True
    )
    chunks = [c.choices[0].text for c in stream if c.choices]
    assert chunks[0] == INPUT and "".join(chunks) == expected


def test_chat_plain_and_streamed(deployed: Deployed, client: OpenAI) -> None:
    """The earlier turns are part of the input, in the sections of a multi-turn training line (they were dropped)."""
    system = "Answer in one word."
    as_trained = f"### Instruction: {INSTRUCTION} ### Human: an earlier turn ### Assistant: negative ### Human: {INPUT}"
    expected = predicted(deployed, as_trained, max_tokens=10, system_prompt=system)
    messages: list[Any] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "an earlier turn"},
        {"role": "assistant", "content": "negative"},
        {"role": "user", "content": INPUT},
    ]
    answer = client.chat.completions.create(model=name(deployed), messages=messages, max_tokens=10, temperature=0)
    assert answer.object == "chat.completion"
    message = answer.choices[0].message
    finish = answer.choices[0].finish_reason
    assert (message.role, message.content, finish) == ("assistant", expected["text"], expected["finish_reason"])
    assert answer.usage is not None and answer.usage.completion_tokens == expected["tokens"]
    stream = client.chat.completions.create(
        model=name(deployed), messages=messages, max_tokens=10, temperature=0, stream=True
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected["text"]
    assert chunks[-1].choices[0].finish_reason == expected["finish_reason"]


THREE_TURNS: Any = [
    {"role": "user", "content": "awful quality"},
    {"role": "assistant", "content": "negative"},
    {"role": "user", "content": "great product"},
    {"role": "user", "content": "works well"},  # two in a row: one turn, joined by a newline
    {"role": "assistant", "content": "positive"},
    {"role": "user", "content": INPUT},
]
AS_TRAINED = (
    f"### Instruction: {INSTRUCTION} ### Human: awful quality ### Assistant: negative ### Human: great product\n"
    f"works well ### Assistant: positive ### Human: {INPUT} ### Assistant:"
)


def test_chat_history_is_prompted_as_a_multi_turn_training_line(deployed: Deployed, client: OpenAI) -> None:
    """The answer and its prompt tokens are those of the conversation as training text, not of its last message."""
    chat = client.chat.completions.create(model=name(deployed), messages=THREE_TURNS, max_tokens=6, temperature=0)
    same = client.completions.create(model=name(deployed), prompt=AS_TRAINED, max_tokens=6, temperature=0)
    assert chat.choices[0].message.content == same.choices[0].text
    assert chat.usage is not None and same.usage is not None
    assert chat.usage.prompt_tokens == same.usage.prompt_tokens
    last_alone = client.chat.completions.create(model=name(deployed), messages=MESSAGES, max_tokens=1).usage
    assert last_alone is not None and chat.usage.prompt_tokens > last_alone.prompt_tokens + 15


def test_chat_messages_that_cannot_be_shown_to_the_model_are_refused_by_name(
    client: OpenAI, deployed: Deployed
) -> None:
    """A tool result, an assistant message after the last user message, or a participant's name (the sections
    have no place for it) was dropped without a word."""
    tool = [*THREE_TURNS[:2], {"role": "tool", "content": "42", "tool_call_id": "c1"}, THREE_TURNS[2]]
    trailing = [*THREE_TURNS[:2]]
    for messages, param in ((tool, "messages.2.role"), (trailing, "messages.1.role")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=name(deployed), messages=messages, max_tokens=2)
        assert caught.value.param == param, caught.value.message
    assert "not supported" in caught.value.message and "end with a user message" in caught.value.message
    named = [*THREE_TURNS[:5], {**THREE_TURNS[5], "name": "alice"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=name(deployed), messages=named, max_tokens=2)
    assert caught.value.param == "messages.5.name" and "trained without participant names" in caught.value.message
    unnamed = [{**message, "name": ""} for message in THREE_TURNS[:5]] + [{**THREE_TURNS[5], "name": None}]
    answer = client.chat.completions.create(model=name(deployed), messages=unnamed, max_tokens=2)
    assert answer.choices[0].message.content is not None  # an empty name, or null, says nothing: accepted


def test_a_model_trained_without_sections_refuses_history_by_name(deployed: Deployed) -> None:
    """Plain prompt/completion data has no form for earlier turns: they were dropped, now they are refused."""
    lines = [json.dumps({"prompt": f"Review: {text}", "completion": "ok"}) for text in POSITIVE + NEGATIVE]
    plain = deploy(deployed.url, deployed.data_dir, "plainchat", "plain", trainer_config=ONE_STEP, lines=lines)
    client = OpenAI(base_url=f"{plain.url}/v1", api_key=plain.key, max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=name(plain), messages=THREE_TURNS, max_tokens=2)
    assert caught.value.param == "messages" and "plain prompt/completion data" in caught.value.message
    assert "send the conversation as one user message" in caught.value.message
    two_parts: Any = [{"role": "user", "content": "Review: great"}, {"role": "user", "content": "product"}]
    joined = client.completions.create(model=name(plain), prompt="Review: great\nproduct", max_tokens=4, temperature=0)
    answer = client.chat.completions.create(model=name(plain), messages=two_parts, max_tokens=4, temperature=0)
    assert answer.choices[0].message.content == joined.choices[0].text  # one turn: answered, not refused


def test_a_conversation_past_the_context_says_how_long_it_is_and_what_fits(client: OpenAI, deployed: Deployed) -> None:
    """Each message fits; the rendered history does not (tiny-random: 1,024 positions), and the client is told
    how many tokens it is and how many fit, to drop earlier turns by."""
    history: Any = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "word " * 300}] * 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=name(deployed), messages=[*history, *MESSAGES], max_tokens=24)
    message = caught.value.body["message"]  # type: ignore[index]
    assert caught.value.param == "messages" and message.startswith("the conversation is too long: "), message
    assert "this model's context is 1024 tokens" in message and "at most 1000 tokens fit" in message
    with pytest.raises(openai.BadRequestError) as room:
        client.chat.completions.create(
            model=name(deployed), messages=[*history[2:], *MESSAGES], max_completion_tokens=600
        )
    assert room.value.param == "max_completion_tokens" and "at most 424 tokens fit" in room.value.message


def test_stop_strings_are_honoured_and_never_returned(deployed: Deployed, client: OpenAI) -> None:
    full = predicted(deployed, INPUT, max_tokens=24)["text"]
    stop = next(full[i : i + 3] for i in range(1, len(full) - 3) if full.find(full[i : i + 3]) > 0)
    answer = client.completions.create(model=name(deployed), prompt=INPUT, max_tokens=24, temperature=0, stop=stop)
    assert answer.choices[0].text == full[: full.find(stop)].strip() and answer.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(
        model=name(deployed), messages=[{"role": "user", "content": INPUT}], max_tokens=24, temperature=0, stop=[stop]
    )
    assert stop not in (chat.choices[0].message.content or "") and chat.choices[0].finish_reason == "stop"


def test_errors_come_in_openais_shape(deployed: Deployed, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=name(deployed), prompt=INPUT, n=0, stream=True)
    assert caught.value.param == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="shop/no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="not a model name", prompt=INPUT)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{deployed.url}/v1", api_key="wrong", max_retries=0).models.list()
    raw = httpx.post(f"{deployed.url}/v1/completions", json={"model": name(deployed)}, headers=deployed.headers)
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == "prompt"
    bad = httpx.post(
        f"{deployed.url}/v1/completions",
        json={"model": name(deployed), "prompt": INPUT, "temperature": 9},
        headers=deployed.headers,
    ).json()["error"]
    assert bad["param"] == "temperature" and bad["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as caught:  # an endpoint tuneloom does not have, in OpenAI's shape
        client.embeddings.create(model=name(deployed), input="hi")
    assert caught.value.body == {
        "message": "Invalid URL (POST /v1/embeddings)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    wrong_method = httpx.get(f"{deployed.url}/v1/completions", headers=deployed.headers)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["message"] == "Invalid URL (GET /v1/completions)"


MESSAGES: Any = [{"role": "user", "content": INPUT}]
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("logit_bias", {"logit_bias": {"50256": -100}}),
    ("tools", {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}),
    ("tool_choice", {"tool_choice": "required"}),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("modalities", {"modalities": ["text", "audio"]}),
    ("min_p", {"extra_body": {"min_p": 0.1}}),  # not OpenAI's: refused as OpenAI does
]


def test_fields_that_would_change_the_answer_are_refused_by_name(deployed: Deployed, client: OpenAI) -> None:
    """Each was answered 200 as if it had been applied: logit_bias, tools, JSON mode, unknown fields."""
    for param, fields in REFUSED:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=name(deployed), messages=MESSAGES, max_tokens=2, **fields)
        assert caught.value.param == param, caught.value.message
        assert "not supported" in caught.value.message or "unrecognized" in caught.value.message
    for param, value in (("suffix", "end."), ("best_of", 3)):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=name(deployed), **{"prompt": INPUT, "max_tokens": 2, param: value})
        assert caught.value.param == param and "not supported" in caught.value.message, caught.value.message
    # The control: what clients send by default or for bookkeeping, and the neutral values of those fields.
    answer = client.chat.completions.create(
        model=name(deployed),
        messages=MESSAGES,
        max_completion_tokens=6,
        temperature=0,
        seed=7,  # greedy: the same answer with any seed
        user="u-1",
        n=1,
        presence_penalty=0,
        logit_bias={},
        tool_choice="none",
        response_format={"type": "text"},
        metadata={"run": "ci"},
        store=False,
        parallel_tool_calls=False,
        stream_options={"include_usage": True},
    )
    assert answer.choices[0].message.content == predicted(deployed, INPUT, max_tokens=6)["text"]


def test_a_seed_reproduces_sampled_choices_and_the_n_choices_differ(deployed: Deployed, client: OpenAI) -> None:
    """`seed` while sampling was a 400: a sampled answer could not be reproduced. Choice i samples with seed + i,
    so OpenAI's `n` choices are n different samples, each the /predict answer for its seed."""
    ask: Any = {"model": name(deployed), "prompt": INPUT, "max_tokens": 6, "temperature": 1.5, "seed": 21}
    texts = [c.text for c in client.completions.create(**ask, n=3).choices]
    assert len(set(texts)) == 3
    assert [c.text for c in client.completions.create(**ask, n=3).choices] == texts
    assert texts == [predicted(deployed, INPUT, max_tokens=6, temperature=1.5, seed=21 + i)["text"] for i in range(3)]
    chat = client.chat.completions.create(
        model=name(deployed), messages=MESSAGES, max_tokens=6, temperature=1.5, seed=21
    )
    assert chat.choices[0].message.content == texts[0]
    for seed in (-1, "x", 2**64):
        raw = httpx.post(f"{deployed.url}/v1/completions", json={**ask, "seed": seed}, headers=deployed.headers)
        assert raw.status_code == 400 and raw.json()["error"]["param"] == "seed", (seed, raw.text)


def test_logprobs_are_the_chosen_tokens_streamed_or_not(deployed: Deployed, client: OpenAI) -> None:
    """`logprobs` was refused. Greedy: each token is the most likely at its place, one per completion token,
    in OpenAI's shapes (validated by the SDK's own models); a stream carries the same, chunk by chunk."""
    ask: Any = {"model": name(deployed), "max_tokens": 8, "temperature": 0}
    answer = client.completions.create(**ask, prompt=INPUT, logprobs=3)
    assert type(answer).model_validate(answer.to_dict()) == answer
    (choice,), usage = answer.choices, answer.usage
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    assert usage is not None and len(lp.tokens) == len(lp.token_logprobs) == usage.completion_tokens == 8
    assert choice.text == predicted(deployed, INPUT, max_tokens=8)["text"] == "".join(lp.tokens).strip()
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and max(top, key=top.__getitem__) == token and top[token] == logprob and len(top) == 3
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    streamed = [c.choices[0].logprobs for c in client.completions.create(**ask, prompt=INPUT, logprobs=3, stream=True)]
    assert [t for chunk in streamed if chunk for t in chunk.tokens or ()] == lp.tokens

    chat = client.chat.completions.create(**ask, messages=MESSAGES, logprobs=True, top_logprobs=2)
    assert type(chat).model_validate(chat.to_dict()) == chat
    content = chat.choices[0].logprobs and chat.choices[0].logprobs.content
    assert content and chat.usage and len(content) == chat.usage.completion_tokens == 8
    assert [t.token for t in content] == lp.tokens and [t.logprob for t in content] == pytest.approx(lp.token_logprobs)
    for token in content:
        assert token.top_logprobs[0].token == token.token and len(token.top_logprobs) == 2
        assert token.bytes == list(token.token.encode()) and token.top_logprobs[0].logprob == token.logprob
    chunks = list(client.chat.completions.create(**ask, messages=MESSAGES, logprobs=True, stream=True))
    content_streamed = [
        t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or ()
    ]
    assert [(t.token, t.top_logprobs) for t in content_streamed] == [(t.token, []) for t in content]
    plain = client.chat.completions.create(**ask, messages=MESSAGES)
    assert plain.choices[0].logprobs is None  # not asked for: not computed


def test_top_k_applies_as_tuneloom_s_own(deployed: Deployed, client: OpenAI) -> None:
    """`top_k` (vLLM's extension, sent in `extra_body`) was refused: top_k 1 samples the greedy text, and the
    log-probabilities are of the distribution drawn from, where that one token has all the mass."""
    greedy = predicted(deployed, INPUT, max_tokens=6)["text"]
    ask: Any = {"model": name(deployed), "max_tokens": 6, "temperature": 1.0, "extra_body": {"top_k": 1}}
    sampled = client.completions.create(**ask, prompt=INPUT, logprobs=2)
    assert sampled.choices[0].text == greedy and sampled.choices[0].logprobs is not None
    assert sampled.choices[0].logprobs.token_logprobs == [0.0] * 6
    chat = client.chat.completions.create(**ask, messages=MESSAGES)
    assert chat.choices[0].message.content == greedy


def test_penalties_apply_as_on_predict_and_are_range_checked_by_name(deployed: Deployed, client: OpenAI) -> None:
    """`presence_penalty` and `frequency_penalty` were a 400 unless 0, and vLLM's `repetition_penalty` an
    unrecognized field: a model repeating itself could not be told not to. Each answer is /predict's."""
    looping = predicted(deployed, INPUT, max_tokens=12)["text"]
    answer = client.completions.create(
        model=name(deployed), prompt=INPUT, max_tokens=12, temperature=0, frequency_penalty=1.5
    )
    assert answer.choices[0].text == predicted(deployed, INPUT, max_tokens=12, frequency_penalty=1.5)["text"] != looping
    chat = client.chat.completions.create(
        model=name(deployed),
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        presence_penalty=-0.5,
        extra_body={"repetition_penalty": 2.0},
    )
    expected = predicted(deployed, INPUT, max_tokens=12, presence_penalty=-0.5, repetition_penalty=2.0)["text"]
    assert chat.choices[0].message.content == expected
    for route, param, value in [
        ("completions", "frequency_penalty", 2.5),
        ("chat/completions", "presence_penalty", -3),
        ("completions", "repetition_penalty", 0),
        ("chat/completions", "frequency_penalty", "x"),
    ]:
        body = {"model": name(deployed), "max_tokens": 2, param: value}
        body.update({"prompt": INPUT} if route == "completions" else {"messages": MESSAGES})
        refused = httpx.post(f"{deployed.url}/v1/{route}", json=body, headers=deployed.headers, timeout=60)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, (param, refused.text)


REFUSED_VALUES: list[tuple[str, str, dict[str, Any]]] = [
    ("completions", "top_k", {"top_k": -2}),
    ("completions", "top_k", {"top_k": 10_001}),
    ("chat/completions", "top_k", {"top_k": 2.5}),
    ("completions", "logprobs", {"logprobs": 6}),
    ("completions", "logprobs", {"logprobs": -1}),
    ("completions", "stream", {"logprobs": 2, "echo": True, "stream": True}),  # the prompt's come unstreamed
    ("completions", "max_tokens", {"max_tokens": 0}),  # nothing to answer: only with echo
    ("chat/completions", "top_logprobs", {"logprobs": True, "top_logprobs": 21}),
    ("chat/completions", "top_logprobs", {"top_logprobs": 2}),  # without logprobs: true
]


def test_bad_top_k_and_logprobs_are_refused_by_name(deployed: Deployed) -> None:
    for route, param, fields in REFUSED_VALUES:
        body = {"model": name(deployed), "max_tokens": 2, **fields}
        body.update({"prompt": INPUT} if route == "completions" else {"messages": MESSAGES})
        answer = httpx.post(f"{deployed.url}/v1/{route}", json=body, headers=deployed.headers, timeout=60)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, (fields, answer.text)


def token_logprobs(model: InferenceModel, text: str) -> list[float]:
    """Each token's log-probability after the tokens before it (all but the first), from one forward pass here."""
    ids = model.tokenizer(text)["input_ids"]
    with torch.inference_mode():
        logprobs = model.model(torch.tensor([ids])).logits[0].float().log_softmax(dim=-1)
    return [logprobs[k - 1, ids[k]].item() for k in range(1, len(ids))]


def test_echo_with_logprobs_scores_each_prompt_token_as_sent(
    deployed: Deployed, client: OpenAI, model: InferenceModel
) -> None:
    """`logprobs` with `echo` was refused, and `max_tokens: 0` too: what evaluation harnesses send. Now the prompt's
    own tokens (the text as sent, no template) come with the model's log-probabilities (temperature does not apply
    to a prompt), the first null as OpenAI sends it; `max_tokens: 0` answers the prompt alone."""
    prompt = "I love it, works well"
    answer = client.completions.create(model=name(deployed), prompt=prompt, echo=True, logprobs=2, max_tokens=0)
    (choice,), usage = answer.choices, answer.usage
    lp = choice.logprobs
    assert choice.text == prompt and choice.finish_reason == "length" and lp is not None
    assert lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    ids = model.tokenizer(prompt)["input_ids"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (len(ids), 0)
    assert lp.tokens == [model.tokenizer.decode([i]) for i in ids] and "".join(lp.tokens) == prompt
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(ids))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx(token_logprobs(model, prompt), abs=1e-4)
    for token, logprob, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert top[token] == logprob and 2 <= len(top) <= 3
    hot = client.completions.create(
        model=name(deployed),
        prompt=prompt,
        echo=True,
        logprobs=2,
        max_tokens=0,
        temperature=1.7,
        extra_body={"top_k": 3},
    )
    assert hot.choices[0].logprobs == lp
    plain = client.completions.create(model=name(deployed), prompt=prompt, echo=True, max_tokens=0)
    assert (plain.choices[0].text, plain.choices[0].logprobs) == (prompt, None)


def test_a_harness_scores_continuations_in_one_batched_request(
    deployed: Deployed, client: OpenAI, model: InferenceModel
) -> None:
    """lm-evaluation-harness's loglikelihood request: context + continuation per prompt, several per call, echo,
    logprobs 1, max_tokens 1; it sums token_logprobs[len(context tokens):-1]. That sum must be the model's."""
    context = f"### Instruction: {INSTRUCTION} ### Human: great product ### Assistant:"
    prompts = [context + " positive", context + " negative, not at all", "awful quality"]
    answer = client.completions.create(
        model=name(deployed), prompt=prompts, echo=True, logprobs=1, max_tokens=1, temperature=0
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    context_tokens = len(model.tokenizer(context)["input_ids"])
    for prompt, choice in zip(prompts, answer.choices, strict=True):
        lp, expected = choice.logprobs, token_logprobs(model, prompt)
        assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
        assert len(lp.tokens) == len(expected) + 2 and choice.text.startswith(prompt)  # the first, and one generated
        assert lp.token_logprobs[1:-1] == pytest.approx(expected, abs=1e-4)
        generated, its, top = lp.tokens[-1], lp.token_logprobs[-1], lp.top_logprobs[-1]
        assert max(top, key=top.__getitem__) == generated and its == top[generated]  # greedy
        assert lp.text_offset[-1] == len(prompt)
    for prompt, choice in zip(prompts[:2], answer.choices, strict=False):
        assert choice.logprobs is not None and choice.logprobs.token_logprobs
        continuation = sum(choice.logprobs.token_logprobs[context_tokens:-1])  # type: ignore[arg-type]
        assert continuation == pytest.approx(sum(token_logprobs(model, prompt)[context_tokens - 1 :]), abs=1e-4)


def test_token_id_prompts_are_read_as_sent(deployed: Deployed, client: OpenAI, model: InferenceModel) -> None:
    """lm-evaluation-harness sends its prompts as token ids by default (`tokenized_requests`), which were refused.
    Token ids are read as they are, never put in the prompt format: scored, echoed and continued exactly as the
    same text sent with echo and logprobs (which is read as sent too), and counted as sent."""
    text = "I love it, works well"
    ids = model.tokenizer(text)["input_ids"]
    as_text = client.completions.create(
        model=name(deployed), prompt=[text], echo=True, logprobs=2, max_tokens=4, temperature=0
    )
    as_ids = client.completions.create(
        model=name(deployed), prompt=ids, echo=True, logprobs=2, max_tokens=4, temperature=0
    )
    assert as_ids.choices[0].text == as_text.choices[0].text and as_ids.choices[0].text.startswith(text)
    assert as_ids.choices[0].logprobs == as_text.choices[0].logprobs
    assert as_ids.usage is not None and as_ids.usage.prompt_tokens == len(ids)

    completion = as_text.choices[0].text[len(text) :]
    plain = client.completions.create(model=name(deployed), prompt=[ids, ids], max_tokens=4, temperature=0)
    assert [c.text for c in plain.choices] == [completion, completion]  # no template, no echo
    streamed = client.completions.create(model=name(deployed), prompt=ids, max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion


def test_bad_token_id_prompts_are_refused_by_name(deployed: Deployed, model: InferenceModel) -> None:
    vocabulary = model.model.config.vocab_size
    for prompt, extra, param, said in [
        ([5, vocabulary, 7], {}, "prompt", f"token id {vocabulary} (prompt 0, position 1)"),
        ([[5, 6], [-1]], {}, "prompt", "token id -1 (prompt 1, position 0)"),
        (["great", 5], {}, "prompt", "not a mix"),
        ([True, 5], {}, "prompt", "token ids (integers)"),
        ([[5], []], {}, "prompt.1", "empty"),
        ([5, 6], {"echo": True, "stream": True}, "stream", "token-id prompt is echoed only unstreamed"),
    ]:
        body = {"model": name(deployed), "prompt": prompt, "max_tokens": 2, **extra}
        answer = httpx.post(f"{deployed.url}/v1/completions", json=body, headers=deployed.headers, timeout=60)
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["param"] == param and said in error["message"], (prompt, answer.text)
