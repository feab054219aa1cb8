"""Lifecycle edges a real client reaches over the API: deleting what a run trains on or from, deleting a
model while it trains, and what happens to an upload's raw file — against a real server and worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
from tests.conftest import DATABASE_URL_FILE, api_key, sentiment_lines
from tests.process_helpers import ended, state, trained, wait_for
from tests.server_helpers import server_database

from tuneloom.store import dataset_versions
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.recovery import remove_partial_files

Api = tuple[str, dict[str, str], Path]  # app URL, headers, data dir


@pytest.fixture(scope="module")
def api(server: tuple[str, Path]) -> Api:
    url, data_dir = server
    headers = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "life"}, headers=headers).status_code == 201
    return f"{url}/api/apps/life", headers, data_dir


def dataset_version(api: Api, dataset: str) -> str:
    app, headers, _ = api
    assert httpx.post(f"{app}/datasets", json={"id": dataset}, headers=headers).status_code == 201
    body = ("\n".join(sentiment_lines(1)) + "\n").encode()
    assert httpx.post(f"{app}/datasets/{dataset}/uploads", content=body, headers=headers).status_code == 201
    version = httpx.post(f"{app}/datasets/{dataset}/versions", headers=headers, timeout=60).json()
    assert version["state"] == "READY", version
    return str(version["id"])


def model(api: Api, model_id: str) -> str:
    app, headers, _ = api
    assert httpx.post(f"{app}/models", json={"id": model_id}, headers=headers).status_code == 201
    return f"{app}/models/{model_id}"


def queue(api: Api, model_url: str, data: str, steps: int, **body: str) -> str:
    request = {"dataset_version_id": data, "template": "tiny-random", "trainer_config": {"max_steps": steps}, **body}
    answer = httpx.post(f"{model_url}/versions", json=request, headers=api[1], timeout=60)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def training(api: Api, version_url: str) -> None:
    """Wait until the run has trained a step (its worker has heartbeaten progress)."""
    wait_for(lambda: (state(version_url, api[1])["progress"] or {}).get("step"), "the run to train a step")


def test_deleting_a_model_while_it_trains_stops_the_run_and_the_queue_goes_on(api: Api) -> None:
    _, headers, data_dir = api
    data = dataset_version(api, "busy")
    doomed = model(api, "doomed")
    run = queue(api, doomed, data, steps=5000)
    training(api, f"{doomed}/versions/{run}")
    assert httpx.delete(doomed, headers=headers).status_code == 204
    assert httpx.get(f"{doomed}/versions/{run}", headers=headers).status_code == 404

    # the worker's next heartbeat finds its run gone: it must stop it and take the next job, not die
    survivor = model(api, "survivor")
    trained(survivor, headers, queue(api, survivor, data, steps=2))
    assert not (data_dir / "checkpoints" / run).exists() and not (data_dir / "model-versions" / run).exists()


def test_what_a_waiting_run_needs_cannot_be_deleted_until_it_is_cancelled(api: Api) -> None:
    _, headers, _ = api
    data = dataset_version(api, "needed")
    chain = model(api, "chain")
    first = trained(chain, headers, queue(api, chain, data, steps=2))
    blocker = queue(api, model(api, "blocker"), data, steps=5000)  # holds the worker: the next run waits
    blocker_url = f"{api[0]}/models/blocker/versions/{blocker}"
    training(api, blocker_url)
    follow_up = queue(api, chain, data, steps=2, resume_from_model=first)

    starting_point = httpx.delete(f"{chain}/versions/{first}", headers=headers)
    assert starting_point.status_code == 409 and follow_up in starting_point.json()["message"]
    in_use = httpx.delete(f"{api[0]}/datasets/needed", headers=headers)
    assert in_use.status_code == 409 and blocker in in_use.json()["message"]
    follow = state(f"{chain}/versions/{follow_up}", headers)
    assert (follow["resume_from_model"], follow["dataset_version_id"]) == (first, data)

    for url in (f"{chain}/versions/{follow_up}", blocker_url):
        assert httpx.post(f"{url}/cancel", headers=headers).status_code == 200
        assert ended(url, headers)["status"]["name"] == "MODEL_TRAINING_CANCELLED"
    assert httpx.delete(f"{chain}/versions/{first}", headers=headers).status_code == 204
    assert httpx.delete(f"{api[0]}/datasets/needed", headers=headers).status_code == 204


def test_a_dataset_version_in_use_is_refused_and_once_deleted_its_trained_models_keep_working(api: Api) -> None:
    app, headers, data_dir = api
    data = dataset_version(api, "versioned")
    kept = httpx.post(f"{app}/datasets/versioned/versions", headers=headers, timeout=60).json()["id"]
    made = model(api, "made-from-it")
    first = trained(made, headers, queue(api, made, data, steps=2))
    waiting = httpx.post(f"{made}/versions", json={**GPU_RUN, "dataset_version_id": data}, headers=headers)
    assert waiting.status_code == 201, waiting.text  # no CPU worker takes it: it stays queued
    run = waiting.json()["id"]

    version_url = f"{app}/datasets/versioned/versions/{data}"
    in_use = httpx.delete(version_url, headers=headers)
    assert in_use.status_code == 409 and run in in_use.json()["message"], in_use.text
    assert in_use.json()["details"]["model_version_id"] == run
    assert httpx.post(f"{made}/versions/{run}/cancel", headers=headers).status_code == 200

    snapshot = data_dir / "dataset-versions" / f"{data}.jsonl"
    assert snapshot.is_file()
    assert httpx.delete(version_url, headers=headers).status_code == 204
    assert not snapshot.exists() and (data_dir / "dataset-versions" / f"{kept}.jsonl").is_file()
    assert httpx.get(version_url, headers=headers).status_code == 404
    again = httpx.delete(version_url, headers=headers)
    assert again.status_code == 404 and data in again.json()["message"]
    left = httpx.get(f"{app}/datasets/versioned/versions", headers=headers).json()
    assert [v["id"] for v in left] == [kept]

    # the trained version holds its own weights: it still answers, and says its data is gone
    assert (state(f"{made}/versions/{first}", headers)["dataset_version_id"], first) == (None, first)
    body = {"inputs": ["great product"], "version": first, "inference_params": {"max_tokens": 2}}
    answer = httpx.post(f"{made}/predict", json=body, headers=headers, timeout=120)
    assert answer.status_code == 200 and len(answer.json()["outputs"]) == 1, answer.text


def test_a_dataset_version_still_building_or_of_another_dataset_cannot_be_deleted(api: Api) -> None:
    app, headers, data_dir = api
    other = dataset_version(api, "elsewhere")
    db = server_database(data_dir)
    try:
        building = dataset_versions.create_version(db, "life", "elsewhere").id  # PENDING: nothing builds it here
    finally:
        db.engine.dispose()
    versions = f"{app}/datasets/elsewhere/versions"
    refused = httpx.delete(f"{versions}/{building}", headers=headers)
    assert refused.status_code == 409 and "still being built (PENDING)" in refused.json()["message"], refused.text
    assert httpx.get(f"{versions}/{building}", headers=headers).json()["state"] == "PENDING"

    assert httpx.post(f"{app}/datasets", json={"id": "neighbour"}, headers=headers).status_code == 201
    wrong_dataset = httpx.delete(f"{app}/datasets/neighbour/versions/{other}", headers=headers)
    assert wrong_dataset.status_code == 404 and other in wrong_dataset.json()["message"]
    assert httpx.get(f"{versions}/{other}", headers=headers).json()["state"] == "READY"
    assert httpx.delete(f"{app}/datasets/nowhere/versions/{other}", headers=headers).status_code == 404


RACES = 14  # pairs of requests fired at once
GPU_RUN = {"template": "tiny-random", "trainer_config": {"bf16": True}}  # no CPU worker takes it: it stays queued


def race(
    queue_run: Callable[[], httpx.Response], delete: Callable[[], httpx.Response], delay: float
) -> tuple[httpx.Response, httpx.Response]:
    """Fire both requests at once (the delete `delay` seconds later); their answers."""
    start = threading.Barrier(2)

    def at_once(request: Callable[[], httpx.Response], delay: float) -> httpx.Response:
        start.wait()
        time.sleep(delay)
        return request()

    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(at_once, queue_run, 0.0), pool.submit(at_once, delete, delay)]
        return answers[0].result(), answers[1].result()


def postgresql_only(data_dir: Path) -> None:
    if not (data_dir / DATABASE_URL_FILE).is_file():
        pytest.skip("SQLite runs one write transaction at a time (BEGIN IMMEDIATE): nothing to race")


@pytest.mark.parametrize("deleting", ["dataset", "version"])
def test_queueing_a_run_while_its_data_is_deleted_never_lets_both_succeed(api: Api, deleting: str) -> None:
    """Either the delete is a 409 (the run was queued first) or the run is refused (the data went first).

    The check that no unfinished run uses the dataset and the insert of a run were not serialised: on
    PostgreSQL both could commit, leaving a queued run whose dataset version was gone (or the insert
    failed on the foreign key, a 500). A version's delete locks its dataset's row without deleting it,
    so the run must read the version again once it holds that lock (it read it before waiting).
    """
    app, headers, data_dir = api
    postgresql_only(data_dir)
    target = model(api, f"racer-{deleting}")
    delay, step = 0.0, 0.004  # the delete's lag, steered to where the train request's transaction runs
    for attempt in range(RACES):
        dataset = f"race-{deleting}-{attempt}"
        data = dataset_version(api, dataset)
        doomed = f"{app}/datasets/{dataset}" + (f"/versions/{data}" if deleting == "version" else "")
        queued, deleted = race(
            partial(httpx.post, f"{target}/versions", json={**GPU_RUN, "dataset_version_id": data}, headers=headers),
            partial(httpx.delete, doomed, headers=headers),
            delay,
        )
        codes = (queued.status_code, deleted.status_code)
        assert codes in ((201, 409), (404, 204)), (codes, queued.text)
        if codes[0] == 201:
            run = f"{target}/versions/{queued.json()['id']}"
            assert state(run, headers)["dataset_version_id"] == data
            assert httpx.post(f"{run}/cancel", headers=headers).status_code == 200
        step = max(0.001, step * 0.8)
        delay = max(0.0, delay + (step if codes[0] == 404 else -step))  # the delete went first: start it later


def test_an_upload_is_kept_under_its_id_until_its_dataset_or_app_is_deleted(api: Api) -> None:
    app, headers, data_dir = api
    body = ("\n".join(sentiment_lines(1)) + "\n").encode()
    kept: list[Path] = []
    for dataset, name in (("raw", None), ("raw-csv", "rows.TXT")):
        assert httpx.post(f"{app}/datasets", json={"id": dataset}, headers=headers).status_code == 201
        params = {"filename": name} if name else {}
        answer = httpx.post(f"{app}/datasets/{dataset}/uploads", content=body, params=params, headers=headers)
        assert answer.status_code == 201, answer.text
        kept.append(data_dir / "uploads" / (answer.json()["upload_id"] + (".txt" if name else "")))
    remove_partial_files(Artifacts(data_dir), grace_s=0)  # what a restart tidies: a complete upload is not partial
    assert all(path.is_file() for path in kept), sorted(p.name for p in (data_dir / "uploads").iterdir())

    assert httpx.delete(f"{app}/datasets/raw", headers=headers).status_code == 204
    assert not kept[0].exists() and kept[1].exists()
    url = app.rsplit("/api/", 1)[0]
    assert httpx.post(f"{url}/api/apps", json={"id": "gone"}, headers=headers).status_code == 201
    assert httpx.post(f"{url}/api/apps/gone/datasets", json={"id": "d"}, headers=headers).status_code == 201
    answer = httpx.post(f"{url}/api/apps/gone/datasets/d/uploads", content=body, headers=headers)
    raw = data_dir / "uploads" / answer.json()["upload_id"]
    assert raw.is_file()
    assert httpx.delete(f"{url}/api/apps/gone", headers=headers).status_code == 204
    assert not raw.exists()


class HungUp(Exception):
    """Raised by an upload's body half-way, as a closed browser tab ends its upload."""


@pytest.mark.parametrize("then", ["finish", "recreate-then-finish", "hang-up"])
def test_an_upload_whose_dataset_is_deleted_meanwhile_leaves_nothing_and_is_no_success(api: Api, then: str) -> None:
    """The dataset is deleted while its upload streams in; then the client finishes, finishes after a new
    dataset took the id, or hangs up. Was: a hang-up left its `.part` file (until a restart an hour later or
    `store sweep`) and a ClientDisconnect traceback in the log; a finish after the id was taken again stored
    the deleted dataset's rows in the new dataset, answering 201."""
    app, headers, data_dir = api
    dataset, uploads = f"mid-{then}", data_dir / "uploads"
    assert httpx.post(f"{app}/datasets", json={"id": dataset}, headers=headers).status_code == 201
    before = set(uploads.glob("*"))
    body = ("\n".join(sentiment_lines(1)) + "\n").encode()
    half_sent, go_on = threading.Event(), threading.Event()

    def sent_slowly() -> Iterator[bytes]:
        yield body[:10]
        half_sent.set()
        go_on.wait(30)
        if then == "hang-up":
            raise HungUp
        yield body[10:]

    with ThreadPoolExecutor(1) as pool:
        url = f"{app}/datasets/{dataset}/uploads"
        answer = pool.submit(httpx.post, url, content=sent_slowly(), headers=headers, timeout=60)
        assert half_sent.wait(30)
        wait_for(lambda: set(uploads.glob("*")) - before, "the server to write the upload's part file", timeout=30)
        assert httpx.delete(f"{app}/datasets/{dataset}", headers=headers).status_code == 204
        if then == "recreate-then-finish":
            assert httpx.post(f"{app}/datasets", json={"id": dataset}, headers=headers).status_code == 201
        go_on.set()
        if then == "hang-up":
            with pytest.raises(HungUp):
                answer.result()
        else:
            refused = answer.result()
            assert refused.status_code == (404 if then == "finish" else 409), refused.text
            assert f"dataset '{dataset}'" in refused.json()["message"]
    wait_for(lambda: set(uploads.glob("*")) == before, "the upload's file to go", timeout=10)
    if then == "recreate-then-finish":
        assert httpx.get(f"{app}/datasets/{dataset}/inputs", headers=headers).json()["total"] == 0
    assert "ClientDisconnect" not in (data_dir.parent / f"{data_dir.name}.log").read_text(errors="replace")


def test_deleting_an_app_while_a_run_is_queued_in_it_is_never_an_error(api: Api) -> None:
    """The run is queued and deleted with its app, or the app went first and the run is a 404: no 500.

    The app's delete removed its datasets and models in the database's order while a queued run locked
    its model, then its dataset: on PostgreSQL the two could wait on each other until one was killed.
    """
    _, headers, data_dir = api
    postgresql_only(data_dir)
    root = api[0].rsplit("/", 1)[0]
    delay, step = 0.0, 0.004
    for attempt in range(RACES):
        app = f"{root}/doomed-{attempt}"
        assert httpx.post(root, json={"id": f"doomed-{attempt}"}, headers=headers).status_code == 201
        data = dataset_version((app, headers, data_dir), "data")
        target = model((app, headers, data_dir), "m")
        queued, deleted = race(
            partial(httpx.post, f"{target}/versions", json={**GPU_RUN, "dataset_version_id": data}, headers=headers),
            partial(httpx.delete, app, headers=headers),
            delay,
        )
        codes = (queued.status_code, deleted.status_code)
        assert codes in ((201, 204), (404, 204)), (codes, queued.text, deleted.text)
        assert httpx.get(app, headers=headers).status_code == 404
        step = max(0.001, step * 0.8)
        delay = max(0.0, delay + (step if codes[0] == 404 else -step))
