"""Models and training runs over HTTP against a real server and its real worker, with the tiny-random template."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import api_key, database_args, run_cli, sentiment_lines
from tests.process_helpers import FINAL

Api = tuple[str, dict[str, str], str]  # models URL, headers, READY dataset version id


@pytest.fixture(scope="module")
def api(server: tuple[str, Path]) -> Api:
    url, data_dir = server
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=admin).status_code == 201
    headers = {"Authorization": f"Bearer {api_key(data_dir, '--app', 'shop')}"}
    datasets = f"{url}/api/apps/shop/datasets"
    assert httpx.post(datasets, json={"id": "reviews"}, headers=headers).status_code == 201
    body = ("\n".join(sentiment_lines(3)) + "\n").encode()
    assert httpx.post(f"{datasets}/reviews/uploads", content=body, headers=headers).status_code == 201
    version = httpx.post(f"{datasets}/reviews/versions", headers=headers).json()
    assert version["state"] == "READY"
    return f"{url}/api/apps/shop/models", headers, version["id"]


def create_model(api: Api, model_id: str) -> str:
    models, headers, _ = api
    created = httpx.post(models, json={"id": model_id, "model_type_id": "text-to-text"}, headers=headers)
    assert created.status_code == 201, created.text
    return f"{models}/{model_id}"


def train(api: Api, model_url: str, **body: Any) -> dict[str, Any]:
    _, headers, dataset_version = api
    request = {"dataset_version_id": dataset_version, "template": "tiny-random", **body}
    answer = httpx.post(f"{model_url}/versions", json=request, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def wait_final(api: Api, version_url: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(version_url, headers=api[1]).json()
        if state["status"]["name"] in FINAL:
            return dict(state)
        time.sleep(0.5)
    pytest.fail(f"{version_url} did not finish: {state}")


def test_train_watch_and_inspect_a_run(api: Api) -> None:
    model = create_model(api, "sentiment")
    _, headers, dataset_version = api
    params = httpx.get(f"{model}/params", params={"template": "tiny-random"}, headers=headers).json()
    assert params["template"] == "tiny-random" and params["invalid_data_tolerance_percent"] == 5.0
    assert params["peft_config"]["r"] == 8 and "num_train_epochs" in params["trainer_config"]

    queued = train(api, model, trainer_config={"num_train_epochs": 2}, invalid_data_tolerance_percent=2)
    assert queued["status"]["name"] in {"MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING"}
    assert queued["settings"]["trainer_config"]["num_train_epochs"] == 2
    assert queued["settings"]["invalid_data_tolerance_percent"] == 2
    version_url = f"{model}/versions/{queued['id']}"
    sent: list[tuple[str, Any]] = []
    with httpx.stream("GET", f"{version_url}/events", headers=headers, timeout=180) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                sent.append((line.removeprefix("event: "), None))
            elif line.startswith("data: "):
                sent[-1] = (sent[-1][0], json.loads(line.removeprefix("data: ")))
    events = [event for event, _ in sent]
    assert events[-1] == "status" and "metric" in events and "log" in events

    done = wait_final(api, version_url)
    assert (done["status"]["name"], done["status"]["code"]) == ("MODEL_TRAINED", 21100)
    assert done["progress"]["step"] == done["progress"]["total_steps"] > 0 and done["progress"]["percent"] == 100
    assert done["metrics"]["steps"] == done["progress"]["step"] and done["metrics"]["eval_loss"] > 0
    assert done["dataset_version_id"] == dataset_version and done["attempts"] == 1
    points = httpx.get(f"{version_url}/metrics", headers=headers).json()
    assert [p["step"] for p in points if p["loss"] is not None] == list(range(1, done["progress"]["step"] + 1))
    assert any(p["eval_loss"] is not None for p in points)
    later = httpx.get(f"{version_url}/metrics", params={"after_step": 3}, headers=headers).json()
    assert later and min(p["step"] for p in later) == 4
    logs = httpx.get(f"{version_url}/logs", headers=headers).json()
    assert logs[0]["message"].startswith("attempt 1 of 3") and "model version saved" in logs[-1]["message"]
    # The stream sends lines and points as /logs and /metrics do (it sent `at` as "2026-… 04:14:31+00:00")
    assert [data for event, data in sent if event == "log"] == logs
    assert [data for event, data in sent if event == "metric"] == points
    assert [line["seq"] for line in logs] == list(range(1, len(logs) + 1))
    reading = next(line["message"] for line in logs if line["message"].startswith("Reading "))
    assert reading.startswith("Reading <data dir>/dataset-versions/"), reading  # not the server's own path
    listed = httpx.get(f"{model}/versions", headers=headers).json()
    assert [v["id"] for v in listed] == [queued["id"]]


def test_invalid_settings_are_refused_before_queueing(api: Api) -> None:
    model = create_model(api, "typos")
    _, headers, dataset_version = api
    cases = [
        ({"trainer_config": {"num_train_epoch": 2}}, "trainer_config.num_train_epoch"),
        ({"peft_config": {"r": -1}}, "peft_config.r"),
        ({"invalid_data_tolerance_percent": 150}, "invalid_data_tolerance_percent"),
        ({"template": "gpt-neo-999"}, "template"),
        ({"model_config": {"trust_remote_code": True}}, "model_config.trust_remote_code"),
        ({"distributed": {"num_processes": 0}}, "distributed.num_processes"),
        # a worker trains on its own machine: a run over two was queued, then failed on the worker
        (
            {"distributed": {"num_processes": 2, "num_machines": 2, "main_process_ip": "10.0.0.1"}},
            "distributed.num_machines",
        ),
    ]
    for body, key in cases:
        request = {"dataset_version_id": dataset_version, "template": "tiny-random", **body}
        answer = httpx.post(f"{model}/versions", json=request, headers=headers)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["details"]["key"] == key, answer.json()
    unknown_data = {"dataset_version_id": "nope", "template": "tiny-random"}
    assert httpx.post(f"{model}/versions", json=unknown_data, headers=headers).status_code == 404
    assert httpx.get(f"{model}/versions", headers=headers).json() == []


def test_a_queued_run_shows_its_place_and_cancel_stops_a_running_one(api: Api) -> None:
    model = create_model(api, "long")
    headers = api[1]
    long_run = {"max_steps": 20000, "per_device_train_batch_size": 2}
    first = train(api, model, trainer_config=long_run)
    second = train(api, model, trainer_config=long_run)
    first_url, second_url = f"{model}/versions/{first['id']}", f"{model}/versions/{second['id']}"
    deadline = time.monotonic() + 120
    while httpx.get(first_url, headers=headers).json()["progress"]["step"] is None:
        assert time.monotonic() < deadline, "the first run never reported a step"
        time.sleep(0.5)
    waiting = httpx.get(second_url, headers=headers).json()
    assert waiting["status"]["code"] == 21103 and waiting["queue_position"] == 1

    cancelled_queued = httpx.post(f"{second_url}/cancel", headers=headers).json()
    assert cancelled_queued["status"]["name"] == "MODEL_TRAINING_CANCELLED"
    asked = time.monotonic()
    httpx.post(f"{first_url}/cancel", headers=headers)
    stopped = wait_final(api, first_url, timeout=30)
    assert stopped["status"]["name"] == "MODEL_TRAINING_CANCELLED" and stopped["status"]["code"] == 21120
    assert time.monotonic() - asked < 15
    assert stopped["progress"]["step"] < stopped["progress"]["total_steps"]
    assert httpx.delete(first_url, headers=headers).status_code == 204
    assert httpx.get(first_url, headers=headers).status_code == 404


def test_training_again_from_an_earlier_version(api: Api, server: tuple[str, Path]) -> None:
    model = create_model(api, "twice")
    first = wait_final(api, f"{model}/versions/{train(api, model)['id']}")
    assert first["status"]["name"] == "MODEL_TRAINED"
    mismatch = httpx.post(
        f"{model}/versions",
        json={"dataset_version_id": api[2], "template": "smollm2-135m-instruct-lora", "resume_from_model": first["id"]},
        headers=api[1],
    )
    assert mismatch.status_code == 422 and mismatch.json()["details"]["key"] == "template"
    again = wait_final(api, f"{model}/versions/{train(api, model, resume_from_model=first['id'])['id']}")
    assert again["status"]["name"] == "MODEL_TRAINED" and again["resume_from_model"] == first["id"]
    manifest = json.loads((server[1] / "model-versions" / again["id"] / "tuneloom.json").read_text())
    assert manifest["started_from"].endswith(first["id"])
    # the second run starts where the first ended, so it begins below the first run's starting loss
    curve = lambda v: httpx.get(f"{model}/versions/{v}/metrics", headers=api[1]).json()  # noqa: E731
    assert curve(again["id"])[0]["loss"] < curve(first["id"])[0]["loss"]


def test_runs_that_cannot_train_end_with_the_hosted_status_codes(api: Api, server: tuple[str, Path]) -> None:
    """A GPU-only run waits (with why) for a worker that has a GPU; the CPU run behind it is not held up."""
    model = create_model(api, "refused")
    gptq = train(api, model, template="llama-2-7b-chat-gptq-lora")
    too_long = train(api, model, tokenizer_config={"model_max_length": 16})
    ended = wait_final(api, f"{model}/versions/{too_long['id']}")
    assert (ended["status"]["name"], ended["status"]["code"]) == (
        "MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED",
        21119,
    ), ended["status"]
    assert "model_max_length" in ended["status"]["message"] or "tolerance" in ended["status"]["message"]
    waiting = httpx.get(f"{model}/versions/{gptq['id']}", headers=api[1]).json()
    assert (waiting["status"]["name"], waiting["queue_position"]) == ("MODEL_QUEUED_FOR_TRAINING", 1)
    assert waiting["status"]["message"].startswith(
        "waiting for a worker with a CUDA GPU (quantization_config needs one) and at least 3,338 MiB of GPU memory"
    ), waiting["status"]
    assert "(live workers: 1, CPU only, " in waiting["status"]["message"]
    listed = run_cli("workers", "--data-dir", str(server[1]), *database_args(server[1]))
    assert listed.returncode == 0, listed.stderr
    assert f"queued {gptq['id']} (llama-2-7b-chat-gptq-lora): waiting for a worker with a CUDA GPU" in listed.stdout
    assert "CPU only" in listed.stdout and "live" in listed.stdout  # the server's own worker slot
    cancelled = httpx.post(f"{model}/versions/{gptq['id']}/cancel", headers=api[1]).json()
    assert cancelled["status"]["name"] == "MODEL_TRAINING_CANCELLED"
