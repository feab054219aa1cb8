"""The OpenAI-compatible routes driven by the official `openai` package, unchanged, against a real server.

Every answer is checked against tuneloom's own /predict for the same version and parameters: the
compatibility layer must translate, never change what the model says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from tests.conftest import api_key
from tests.server_helpers import Deployed, deploy

INPUT = "I love it"


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    return deploy(*server)


@pytest.fixture(scope="module")
def client(deployed: Deployed) -> OpenAI:
    return OpenAI(base_url=f"{deployed.url}/v1", api_key=deployed.key, max_retries=0, timeout=120)


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
    system = "Answer in one word."
    expected = predicted(deployed, INPUT, max_tokens=10, system_prompt=system)
    messages: list[Any] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "an earlier turn"},
        {"role": "assistant", "content": "ignored"},
        {"role": "user", "content": INPUT},
    ]
    answer = client.chat.completions.create(model=name(deployed), messages=messages, max_tokens=10, temperature=0)
    assert answer.object == "chat.completion"
    message = answer.choices[0].message
    assert (message.role, message.content, answer.choices[0].finish_reason) == ("assistant", expected["text"], "length")
    assert answer.usage is not None and answer.usage.completion_tokens == expected["tokens"]
    stream = client.chat.completions.create(
        model=name(deployed), messages=messages, max_tokens=10, temperature=0, stream=True
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected["text"]
    assert chunks[-1].choices[0].finish_reason == "length"


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
        client.completions.create(model=name(deployed), prompt=INPUT, n=2, stream=True)
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
    ("presence_penalty", {"presence_penalty": 0.5}),
    ("frequency_penalty", {"frequency_penalty": -1}),
    ("logit_bias", {"logit_bias": {"50256": -100}}),
    ("seed", {"seed": 7}),  # sampling (temperature 1): not reproducible here
    ("tools", {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}),
    ("tool_choice", {"tool_choice": "required"}),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("modalities", {"modalities": ["text", "audio"]}),
    ("top_k", {"extra_body": {"top_k": 5}}),  # not OpenAI's: refused as OpenAI refuses it
]


def test_fields_that_would_change_the_answer_are_refused_by_name(deployed: Deployed, client: OpenAI) -> None:
    """Each was answered 200 as if it had been applied: penalties, logit_bias, tools, JSON mode, seed, top_k."""
    for param, fields in REFUSED:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=name(deployed), messages=MESSAGES, max_tokens=2, **fields)
        assert caught.value.param == param, caught.value.message
        assert "not supported" in caught.value.message or "unrecognized" in caught.value.message
    for param, value in (("suffix", "end."), ("best_of", 3), ("prompt", [[1, 2, 3]])):
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
