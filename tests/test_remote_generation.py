"""`serve --backend remote`: an API server that sends every generation to the nodes that advertise
themselves in its database (`serve --advertise-url`), with real processes on loopback ports.

The API server runs on a data dir of its own that never receives the model version, so every
answer it gives must have come from a node.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import BACKENDS, _free_port, run_cli
from tests.process_helpers import Processes, prepare_model, queue, running_processes, trained
from tests.test_store_support import make_db_fixture

from tuneloom.errors import ConflictError, SettingsError, TuneloomError, error_from_dict
from tuneloom.generate.params import InferenceParams
from tuneloom.server.remote_inference import GenerationNodeUnavailable, RemoteInference
from tuneloom.store import nodes
from tuneloom.store.db import Database
from tuneloom.store.keys import PEPPER_FILE

db = make_db_fixture()
GREEDY = {"max_tokens": 6, "temperature": 0}


@pytest.fixture(params=BACKENDS)
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    with running_processes(tmp_path, request.param) as started:
        yield started


def start_node(procs: Processes, *args: str) -> tuple[Any, str]:
    port = _free_port()
    return procs.serve("--advertise-url", f"http://127.0.0.1:{port}/", *args, port=port)


def start_api_server(procs: Processes, *, own_data_dir: bool) -> str:
    """`--backend remote`, on the nodes' data dir or on one of its own (sharing the database and key pepper only)."""
    front_dir = None
    if own_data_dir:
        front_dir = procs.data_dir.parent / "api-server"
        (front_dir / PEPPER_FILE).parent.mkdir(parents=True)
        shutil.copy(procs.data_dir / PEPPER_FILE, front_dir / PEPPER_FILE)
    _, url = procs.serve("--backend", "remote", "--workers", "0", data_dir=front_dir)
    return url


def streamed(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The text of a /generate stream and its `done` event."""
    pieces, event, done = [], "message", {}
    with httpx.stream("POST", f"{url}/generate", json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert event != "error", data
                if event == "done":
                    done = data
                else:
                    pieces.append(data["text"])
    return "".join(pieces), done


# PostgreSQL under `make soak` only: the nodes table on PostgreSQL is covered by the in-process tests below.
@pytest.mark.parametrize("procs", ["sqlite", pytest.param("postgresql", marks=pytest.mark.soak)], indirect=True)
def test_an_api_server_with_backend_remote_generates_on_the_nodes(procs: Processes) -> None:
    node, node_url = start_node(procs)  # trains too: one worker slot
    spare, spare_url = start_node(procs, "--workers", "0")
    front = start_api_server(procs, own_data_dir=True)
    health = httpx.get(f"{front}/healthz").json()
    assert health["backend"] == "remote" and health["generation_nodes"] == 2
    listed = run_cli("workers", "--json", "--data-dir", str(procs.data_dir), *procs.extra)
    assert sorted(n["url"] for n in json.loads(listed.stdout)["generation_nodes"]) == sorted((node_url, spare_url))

    on_node, headers, dataset_version = prepare_model(node_url, procs.data_dir)  # the data lives by the nodes
    version = trained(on_node, headers, queue(on_node, headers, dataset_version, steps=4))
    model = on_node.replace(node_url, front)

    body = {"inputs": ["great results", "awful service"], "inference_params": GREEDY}
    through_front = httpx.post(f"{model}/predict", json=body, headers=headers, timeout=120)
    assert through_front.status_code == 200, through_front.text
    direct = httpx.post(f"{on_node}/predict", json=body, headers=headers, timeout=120)
    assert through_front.json() == direct.json()
    assert not (procs.data_dir.parent / "api-server" / "model-versions").exists()  # never fetched, never loaded

    text, done = streamed(model, {"input": "great results", "inference_params": GREEDY}, headers)
    assert text == through_front.json()["outputs"][0]["text"]
    assert done["tokens"] == through_front.json()["outputs"][0]["tokens"] and done["prompt_tokens"] > 0

    chat = {"model": f"shop/m/{version}", "messages": [{"role": "user", "content": "great results"}], "max_tokens": 4}
    answer = httpx.post(f"{front}/v1/chat/completions", json=chat, headers=headers, timeout=120)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] > 0, answer.text
    # log-probabilities (refused on a remote backend before) are the node's, the prompt's too with echo
    scoring = {"model": chat["model"], "prompt": ["great results", "awful"], "echo": True, "logprobs": 2}
    scoring.update(max_tokens=1, temperature=0)
    relayed = httpx.post(f"{front}/v1/completions", json=scoring, headers=headers, timeout=120)
    direct = httpx.post(f"{node_url}/v1/completions", json=scoring, headers=headers, timeout=120)
    assert relayed.status_code == 200 and relayed.json()["choices"] == direct.json()["choices"], relayed.text
    assert relayed.json()["choices"][0]["logprobs"]["token_logprobs"][0] is None
    by_ids = {**scoring, "prompt": [[15, 16, 17], [18, 19]]}  # token-id prompts go to the node as sent
    relayed = httpx.post(f"{front}/v1/completions", json=by_ids, headers=headers, timeout=120)
    direct = httpx.post(f"{node_url}/v1/completions", json=by_ids, headers=headers, timeout=120)
    assert relayed.status_code == 200 and relayed.json()["choices"] == direct.json()["choices"], relayed.text
    assert relayed.json()["usage"]["prompt_tokens"] == 5
    asked = {**chat, "logprobs": True, "top_logprobs": 2, "temperature": 0}
    whole = httpx.post(f"{front}/v1/chat/completions", json=asked, headers=headers, timeout=120).json()
    with httpx.stream("POST", f"{front}/v1/chat/completions", json={**asked, "stream": True}, headers=headers) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    tokens = [
        t
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
        for t in c["choices"][0]["logprobs"]["content"]
    ]
    assert tokens == whole["choices"][0]["logprobs"]["content"] and tokens
    seeded = {**chat, "n": 2, "temperature": 1.0, "seed": 5}  # streamed: a node stream per choice, seed + i each
    whole = httpx.post(f"{front}/v1/chat/completions", json=seeded, headers=headers, timeout=120).json()
    with httpx.stream("POST", f"{front}/v1/chat/completions", json={**seeded, "stream": True}, headers=headers) as r:
        parts = [json.loads(line[6:])["choices"] for line in r.iter_lines() if line.startswith("data: {")]
    texts = ["".join(p[0]["delta"].get("content") or "" for p in parts if p and p[0]["index"] == i) for i in (0, 1)]
    assert texts == [choice["message"]["content"] for choice in whole["choices"]], (parts, whole)

    user_key = headers["Authorization"].removeprefix("Key ")
    internal = {"version_id": version, "inputs": ["x"]}
    for auth in (f"Key {user_key}", "Node wrong-token", ""):
        answer = httpx.post(f"{node_url}/internal/generation/predict", json=internal, headers={"Authorization": auth})
        assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"
    answer = httpx.post(f"{front}/internal/generation/predict", json=internal, headers={"Authorization": "Node x"})
    assert answer.status_code == 404  # the API server is no node

    node.send_signal(signal.SIGKILL)  # its row stays "live" until its lease passes: the spare must answer now
    node.wait()
    again = httpx.post(f"{model}/predict", json=body, headers=headers, timeout=120)
    assert again.status_code == 200 and again.json() == through_front.json(), again.text

    spare.send_signal(signal.SIGKILL)
    spare.wait()
    gone = httpx.post(f"{model}/predict", json=body, headers=headers, timeout=120)
    assert gone.status_code == 503 and gone.json()["code"] == "GENERATION_NODE_UNAVAILABLE", gone.text
    assert "no generation node answered" in gone.json()["message"]


@pytest.mark.parametrize("procs", ["sqlite", pytest.param("postgresql", marks=pytest.mark.soak)], indirect=True)
def test_no_live_node_is_a_503_then_a_nodes_refusal_is_relayed_as_is(procs: Processes) -> None:
    front = start_api_server(procs, own_data_dir=False)
    procs.start("worker", "--workers", "1")
    model, headers, dataset_version = prepare_model(front, procs.data_dir)
    version = trained(model, headers, queue(model, headers, dataset_version, steps=2))
    body = {"inputs": ["great results"] * 2, "inference_params": {"max_tokens": 100}}
    none = httpx.post(f"{model}/predict", json=body, headers=headers, timeout=60)
    assert none.status_code == 503 and none.json()["code"] == "GENERATION_NODE_UNAVAILABLE", none.text
    assert "no generation node is live" in none.json()["message"] and "--advertise-url" in none.json()["message"]
    assert httpx.get(f"{front}/healthz").json()["generation_nodes"] == 0

    start_node(procs, "--workers", "0", "--max-batch-tokens", "64")  # 2 × (prompt + 100) > 64
    refused = httpx.post(f"{model}/predict", json=body, headers=headers, timeout=120)
    assert refused.status_code == 422, refused.text
    error = refused.json()
    assert error["code"] == "INVALID_PARAMS" and error["details"]["key"] == "max_batch_tokens"
    assert error["details"]["limit"] == 64 and "--max-batch-tokens" in error["message"]
    streamed_refusal = httpx.post(
        f"{model}/generate",
        json={"input": "x", "inference_params": body["inference_params"]},
        headers=headers,
        timeout=120,
    )
    assert streamed_refusal.status_code == 422 and streamed_refusal.json()["details"]["key"] == "max_batch_tokens"
    small = httpx.post(f"{model}/predict", json={"inputs": ["x"], "inference_params": GREEDY}, headers=headers)
    assert small.status_code == 200 and small.json()["outputs"][0]["tokens"] > 0, small.text

    evaluated = httpx.get(f"{model}/versions/{version}/evaluation", params={"limit": 1}, headers=headers, timeout=120)
    assert evaluated.status_code == 200, evaluated.text  # generated by the node, counted without a tokenizer here
    (row,) = evaluated.json()["rows"]
    assert row["expected"] and isinstance(row["generated"], str) and evaluated.json()["total"] >= 1


def test_a_relayed_error_keeps_its_class_code_and_key() -> None:
    settings = error_from_dict(SettingsError("too many", key="max_batch_tokens", details={"limit": 64}).to_dict())
    assert isinstance(settings, SettingsError) and settings.key == "max_batch_tokens"
    assert settings.details == {"limit": 64, "key": "max_batch_tokens"} and settings.message == "too many"
    assert type(error_from_dict(ConflictError("not trained").to_dict())) is ConflictError
    unknown = error_from_dict({"code": "SOMETHING_NEW", "message": "m"})
    assert type(unknown) is TuneloomError and unknown.code == "SOMETHING_NEW"
    assert error_from_dict("not json").code == TuneloomError.code


def test_versions_spread_over_the_nodes_and_stay_on_theirs_as_nodes_come_and_go(db: Database) -> None:
    for name in ("a", "b", "c"):
        nodes.advertise(db, name, f"http://{name}.invalid:8000", "transformers", "token", lease_s=30)
    service = RemoteInference(db)
    versions = [f"v{i}" for i in range(60)]

    def first_choices() -> dict[str, str]:
        service._read_at = float("-inf")  # read the live nodes again
        return {v: asyncio.run(service._order(v))[0].id for v in versions}

    before = first_choices()
    assert set(before.values()) == {"a", "b", "c"} and first_choices() == before  # spread, and stable
    nodes.withdraw(db, "b")
    after = first_choices()
    assert all(after[v] == before[v] for v in versions if before[v] != "b")  # only b's versions move
    assert set(after.values()) == {"a", "c"}


OLDER_NODE_PARAMS = {  # what a node of the tuneloom before the repetition penalties reads
    "max_tokens", "temperature", "top_p", "top_k", "num_beams", "do_sample", "return_full_text",
    "system_prompt", "prompt_template", "stop", "seed",
}  # fmt: skip


def test_a_request_without_penalties_still_runs_on_an_older_node(db: Database) -> None:
    """Every relayed request named `repetition_penalty` (null) and the other penalties (0), which an older node
    refuses as unknown: upgrading the API server first made every generation fail. A penalty the request does
    set still goes to the node (whose refusal then names it)."""
    nodes.advertise(db, "old", "http://old-node.invalid", "transformers", "token", lease_s=30)
    received: list[dict[str, Any]] = []

    def older_node(request: httpx.Request) -> httpx.Response:
        params = json.loads(request.content)["inference_params"]
        received.append(params)
        unknown = sorted(set(params) - OLDER_NODE_PARAMS)
        if unknown:
            refusal = SettingsError(f"inference parameter '{unknown[0]}' is unknown.", key=unknown[0])
            return httpx.Response(422, json=refusal.to_dict())
        output = {"prompt": "p", "text": "fine", "tokens": 1, "finish_reason": "stop", "prompt_tokens": 2}
        return httpx.Response(200, json={"outputs": [output]})

    async def predict(params: InferenceParams) -> str:
        client = httpx.AsyncClient(transport=httpx.MockTransport(older_node))
        try:
            (prediction,) = await RemoteInference(db, client).predict("v1", Path("unused"), ["x"], params)
        finally:
            await client.aclose()
        return prediction.generation.text

    assert asyncio.run(predict(InferenceParams(max_tokens=3, temperature=0.5, seed=4))) == "fine"
    assert received[-1] == {
        "max_tokens": 3, "temperature": 0.5, "seed": 4, "top_p": 1.0, "top_k": 0, "num_beams": 1,
        "return_full_text": False, "stop": [],
    }  # fmt: skip
    with pytest.raises(SettingsError) as refused:
        asyncio.run(predict(InferenceParams(frequency_penalty=0.5)))
    assert refused.value.key == "frequency_penalty" and received[-1]["frequency_penalty"] == 0.5


def test_a_slow_node_is_not_asked_twice_and_a_refusing_one_is_skipped(db: Database) -> None:
    """One node accepts connections and never answers; the other refuses them: one timeout, not two."""
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        for name, sock in (("silent", silent), ("refusing", closed)):
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            nodes.advertise(db, name, url, "transformers", "token", lease_s=30)

        async def predict() -> None:
            client = httpx.AsyncClient(timeout=httpx.Timeout(1.0, read=0.5))
            service = RemoteInference(db, client)
            try:
                await service.predict("v1", Path("unused"), ["x"], InferenceParams())
            finally:
                await client.aclose()

        started = time.monotonic()
        with pytest.raises(GenerationNodeUnavailable, match="did not answer in time"):
            asyncio.run(predict())
        assert time.monotonic() - started < 2.0
