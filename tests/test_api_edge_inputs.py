"""Odd but plausible requests against a real `tuneloom serve`: each is a 4xx naming what is wrong, never a 500.

Found by probing every route: `NaN`/`Infinity` literals (Python's `json.dumps` writes them), numbers past
what the database's integer columns hold, more input numbers than one SQL statement can bind, a body
that is not JSON or was sent as a form, chat's `max_completion_tokens` and /predict's `max_new_tokens`
refused under another name, blank inputs generated from, `stop: ""` dropped on /v1, union fields named
`stop.str`, and chat content of a shape not accepted refused with the error of one shape pydantic tried.
None of it needs a trained model: each request is refused before one is looked up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import sentiment_lines
from tests.server_helpers import server_database

from tuneloom.store.db import MAX_INTEGER
from tuneloom.store.keys import create_key, load_pepper

SERVER_ARGS = ["--workers", "0"]  # nothing here trains: no worker slot, no forkserver importing torch beside the tests

APP = "edge"
DATASET = "rows"
PAST_INTEGER = [MAX_INTEGER + 1, 2**63, 2**70]  # PostgreSQL's int4, SQLite's int8, and beyond both


@pytest.fixture(scope="module")
def admin(server: tuple[str, Path]) -> dict[str, str]:
    """An admin key, app "edge" and its dataset "rows" holding the 48 sentiment examples (inputs 1-48)."""
    url, data_dir = server
    db = server_database(data_dir)
    try:
        headers = {"Authorization": f"Key {create_key(db, None, load_pepper(data_dir))[0]}"}
    finally:
        db.dispose()
    assert httpx.post(f"{url}/api/apps", json={"id": APP}, headers=headers).status_code == 201
    datasets = f"{url}/api/apps/{APP}/datasets"
    assert httpx.post(datasets, json={"id": DATASET}, headers=headers).status_code == 201
    rows = ("\n".join(sentiment_lines(repeat=3)) + "\n").encode()
    assert httpx.post(f"{datasets}/{DATASET}/uploads", content=rows, headers=headers).status_code == 201
    return headers


def post_raw(url: str, headers: dict[str, str], body: str, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(url, content=body.encode(), headers={**headers, "Content-Type": content_type})


def strict_json(response: httpx.Response) -> Any:
    """The body parsed as strict JSON (no NaN or Infinity), which every client can read."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in {response.text[:200]}")

    return json.loads(response.text, parse_constant=refuse)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(
    ("path", "field", "rest"),
    [
        ("/api/apps", "name", ""),
        (f"/api/apps/{APP}/datasets", "id", ""),
        (f"/api/apps/{APP}/datasets/{DATASET}/inputs/delete", "seqs", ""),
        (f"/api/apps/{APP}/models/m/predict", "inputs", ""),
        (f"/api/apps/{APP}/settings/validate", "trainer_config", '"template": "tiny-random", '),
    ],
    ids=["app", "dataset", "inputs-delete", "predict", "settings"],
)
def test_non_finite_numbers_in_a_body_are_422_naming_the_field(
    server: tuple[str, Path], admin: dict[str, str], literal: str, path: str, field: str, rest: str
) -> None:
    """The error echoes each input; a NaN echoed back made the error response itself fail, as a 500."""
    response = post_raw(f"{server[0]}{path}", admin, "{" + rest + f'"{field}": {literal}' + "}")
    assert response.status_code == 422, response.text
    body = strict_json(response)
    assert body["details"]["key"] == field and body["message"].startswith(f"{field}: "), body


@pytest.mark.parametrize("number", PAST_INTEGER)
def test_numbers_past_the_databases_integers_are_422_naming_the_field(
    server: tuple[str, Path], admin: dict[str, str], number: int
) -> None:
    """Cursors and input numbers are compared with integer columns: past them was a 500 (a database error)."""
    url = f"{server[0]}/api/apps/{APP}"
    version = f"{url}/models/m/versions/v"  # the query is checked before the version is looked up
    answers = [
        ("after", httpx.get(f"{url}/datasets/{DATASET}/inputs", params={"after": number}, headers=admin)),
        ("after", httpx.get(f"{version}/logs", params={"after": number}, headers=admin)),
        ("after_step", httpx.get(f"{version}/metrics", params={"after_step": -number - 1}, headers=admin)),
        ("seqs.0", httpx.post(f"{url}/datasets/{DATASET}/inputs/delete", json={"seqs": [number]}, headers=admin)),
    ]
    for field, response in answers:
        assert response.status_code == 422, (field, response.text)
        body = response.json()
        assert body["details"]["key"] == field, body
        assert f"{MAX_INTEGER}" in body["message"] or f"{-MAX_INTEGER - 1}" in body["message"], body
    largest = httpx.get(f"{url}/datasets/{DATASET}/inputs", params={"after": MAX_INTEGER}, headers=admin)
    assert largest.status_code == 200 and largest.json()["items"] == [], largest.text


def test_more_input_numbers_than_one_statement_binds_are_deleted(
    server: tuple[str, Path], admin: dict[str, str]
) -> None:
    """PostgreSQL binds at most 65,535 parameters a statement: more was a 503 "database unavailable"."""
    inputs = f"{server[0]}/api/apps/{APP}/datasets/{DATASET}/inputs"
    total = httpx.get(inputs, headers=admin).json()["total"]
    assert total > 0
    response = httpx.post(f"{inputs}/delete", json={"seqs": list(range(70_000))}, headers=admin, timeout=60)
    assert response.status_code == 200 and response.json() == {"deleted": total}, response.text
    assert httpx.get(inputs, headers=admin).json()["total"] == 0


@pytest.mark.parametrize("path", ["/api/apps", "/v1/completions"])
def test_a_body_that_is_not_json_or_not_an_object_says_so(
    server: tuple[str, Path], admin: dict[str, str], path: str
) -> None:
    """Not "1: JSON decode error" (a field named "1"), nor a dictionary that cannot be extracted from."""
    url = f"{server[0]}{path}"
    cases = {
        '{"id": "x",': "not valid JSON",
        '{"a": 1}{"b": 2}': "not valid JSON (Extra data at character 8)",
        "[1, 2]": "must be a JSON object, got an array",
    }
    for body, expected in cases.items():
        answer = post_raw(url, admin, body)
        assert answer.status_code in (400, 422) and expected in answer.text, (body, answer.text)
        named = answer.json()["error"]["param"] if path.startswith("/v1/") else answer.json()["details"]["key"]
        assert named is None, answer.text  # the body as a whole, not a field
    as_form = post_raw(url, admin, '{"id": "x"}', content_type="application/x-www-form-urlencoded")
    assert as_form.status_code in (400, 422), as_form.text
    assert "Content-Type: application/json" in as_form.text and "x-www-form-urlencoded" in as_form.text


@pytest.mark.parametrize("value", [0, -1, 10**30])
def test_max_completion_tokens_is_refused_under_its_own_name(
    server: tuple[str, Path], admin: dict[str, str], value: int
) -> None:
    """0 was ignored (a full-length answer) and -1 was refused as 'max_tokens', a field the client never sent."""
    body = {"model": f"{APP}/m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": value}
    response = httpx.post(f"{server[0]}/v1/chat/completions", json=body, headers=admin)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "max_completion_tokens" and "'max_completion_tokens'" in error["message"], error


@pytest.mark.parametrize("value", [0, -1, "x", 5000])
@pytest.mark.parametrize("route", ["predict", "generate"])
def test_max_new_tokens_is_refused_under_its_own_name(
    server: tuple[str, Path], admin: dict[str, str], route: str, value: Any
) -> None:
    """`max_new_tokens` stands for `max_tokens`; refused, it was named 'max_tokens', a key the client never sent."""
    question = {"inputs": ["hi"]} if route == "predict" else {"input": "hi"}
    body = {**question, "inference_params": {"max_new_tokens": value}}
    response = httpx.post(f"{server[0]}/api/apps/{APP}/models/m/{route}", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["details"]["key"] == "max_new_tokens", response.text
    assert "'max_new_tokens'" in response.json()["message"] and "'max_tokens'" not in response.json()["message"]


def test_max_tokens_under_both_names_is_refused_as_one_parameter(
    server: tuple[str, Path], admin: dict[str, str]
) -> None:
    """Both names at once were refused as "'max_new_tokens' is unknown", a name the API documents."""
    body = {"inputs": ["hi"], "inference_params": {"max_tokens": 4, "max_new_tokens": 5}}
    response = httpx.post(f"{server[0]}/api/apps/{APP}/models/m/predict", json=body, headers=admin)
    assert response.status_code == 422 and response.json()["details"]["key"] == "max_new_tokens", response.text
    assert "another name for 'max_tokens'" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"/api/apps/{APP}/models/m/predict", {"inputs": ["ok", "fine", " \n\t"]}, "inputs.2"),
        (f"/api/apps/{APP}/models/m/generate", {"input": ""}, "input"),
        ("/v1/completions", {"prompt": "  "}, "prompt"),
        ("/v1/completions", {"prompt": ["ok", ""]}, "prompt.1"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                          {"role": "user", "content": [{"type": "text", "text": " "}]}]},
            "messages.2.content",
        ),
    ],
    ids=["predict", "generate", "completion", "completion-list", "chat-parts"],
)  # fmt: skip
def test_an_empty_input_is_refused_naming_it(
    server: tuple[str, Path], admin: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    """A blank input was generated from the bare prompt template: an answer to nothing, given as if to the input."""
    openai = path.startswith("/v1/")
    response = httpx.post(f"{server[0]}{path}", json={"model": f"{APP}/m", **body} if openai else body, headers=admin)
    if openai:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field and "empty" in response.json()["error"]["message"]
    else:
        assert response.status_code == 422, response.text
        assert response.json()["details"]["key"] == field and f"'{field}' is empty" in response.json()["message"]


@pytest.mark.parametrize("path", ["completions", "chat/completions"])
def test_an_empty_stop_string_is_refused_on_v1_as_on_predict(
    server: tuple[str, Path], admin: dict[str, str], path: str
) -> None:
    """/v1 dropped `stop: ""` and generated on past where the client meant it to stop; /predict refuses it."""
    predict = {"inputs": ["hi"], "inference_params": {"stop": ""}}
    refused = httpx.post(f"{server[0]}/api/apps/{APP}/models/m/predict", json=predict, headers=admin)
    assert refused.status_code == 422 and refused.json()["details"]["key"] == "stop", refused.text
    question = {"prompt": "hi"} if path == "completions" else {"messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{server[0]}/v1/{path}", json={"model": f"{APP}/m", "stop": "", **question}, headers=admin)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["message"]) == ("stop", refused.json()["message"]), error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi", "stop": 5}, "stop"),
        ({"prompt": "hi", "stop": [1]}, "stop"),
        ({"prompt": 5}, "prompt"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ],
)
def test_a_field_of_several_shapes_is_named_as_sent(
    server: tuple[str, Path], admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    """pydantic locates a union's error by the member it tried: the client read `stop.str` or `stop.list[str]`."""
    path = "chat/completions" if "messages" in body else "completions"
    response = httpx.post(f"{server[0]}/v1/{path}", json={"model": f"{APP}/m", **body}, headers=admin)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: "), error


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([{"type": "image_url", "image_url": {"url": "x"}}], "part 0 is of type 'image_url'"),
        (5, "got a number"),
        ([{"type": "text"}], 'part 0 has no "text" string'),
        (None, "a user message needs content"),
        ({"type": "text", "text": "hi"}, "got an object"),
    ],
    ids=["image", "number", "text-missing", "null", "object"],
)
def test_chat_content_of_a_shape_not_accepted_says_which_are(
    server: tuple[str, Path], admin: dict[str, str], content: Any, problem: str
) -> None:
    """content is a string or text parts: pydantic's error named its first shape ("Input should be a valid string")
    or said "only text content parts … got 'text'" of a text part without its text."""
    messages = [{"role": "assistant", "content": None}, {"role": "user", "content": content}]  # an answer may be null
    response = httpx.post(f"{server[0]}/v1/chat/completions", json={"model": f"{APP}/m", "messages": messages},
                          headers=admin)  # fmt: skip
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == ("messages.1.content", "invalid_request_error"), error
    assert error["message"].startswith(f"messages.1.content: {problem}; "), error["message"]
    assert 'a string, or a list of {"type": "text", "text": "…"} parts' in error["message"]
    assert "images and other parts are not supported" in error["message"]


def test_a_refused_input_is_echoed_abridged(server: tuple[str, Path], admin: dict[str, str]) -> None:
    """Each error repeats its input: a 200,000-character name, or 5,000 bad numbers, came back whole."""
    long_id = httpx.post(f"{server[0]}/api/apps", json={"id": "long", "name": "é" * 200_000}, headers=admin)
    assert long_id.status_code == 422 and len(long_id.content) < 2_000, len(long_id.content)
    assert long_id.json()["details"]["errors"][0]["input"].endswith("… (200,000 characters)")
    delete = f"{server[0]}/api/apps/{APP}/datasets/{DATASET}/inputs/delete"
    many = httpx.post(delete, json={"seqs": [2**40] * 5_000}, headers=admin)
    assert many.status_code == 422 and len(many.content) < 10_000, len(many.content)
    body = many.json()
    assert body["details"]["key"] == "seqs.0" and body["details"]["error_count"] == 5_000
    assert len(body["details"]["errors"]) == 20 and body["message"].endswith("; and 4,980 more"), body["message"]
