"""A model's and a dataset's versions, listed a page at a time through the API and the SDK.

A real `tuneloom serve` without a worker, on SQLite and PostgreSQL; the 120 versions of each list
are made through the store (a queued run, a snapshot), not by training. Before paging, one
response carried every version, however many hundreds a model had been trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.conftest import api_key
from tests.server_helpers import enqueue, ready_dataset_version, server_database

from tuneloom import Client
from tuneloom.store import dataset_versions
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database

SERVER_ARGS = ["--workers", "0"]  # the queued runs stay queued
APP, MODEL, DATASET = "paged", "retrained", "reviews"
MADE = 120


@dataclass(frozen=True)
class Lists:
    url: str
    key: str
    db: Database
    made: dict[str, list[str]]  # "models/…" and "datasets/…" → version ids, oldest first
    add: dict[str, Callable[[], str]]  # one more version of that list

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}


@pytest.fixture(scope="module")
def lists(server: tuple[str, Path]) -> Iterator[Lists]:
    url, data_dir = server
    key = api_key(data_dir)
    headers = {"Authorization": f"Key {key}"}
    assert httpx.post(f"{url}/api/apps", json={"id": APP}, headers=headers).status_code == 201
    trained_on = ready_dataset_version(url, headers, APP, DATASET)
    assert httpx.post(f"{url}/api/apps/{APP}/models", json={"id": MODEL}, headers=headers).status_code == 201
    db, artifacts = server_database(data_dir), Artifacts(data_dir)

    def snapshot() -> str:  # READY, so that it can be deleted
        return dataset_versions.build_version(db, artifacts, dataset_versions.create_version(db, APP, DATASET).id).id

    add = {f"models/{MODEL}": lambda: enqueue(db, APP, MODEL, trained_on).id, f"datasets/{DATASET}": snapshot}
    made = {path: [make() for _ in range(MADE)] for path, make in add.items()}
    made[f"datasets/{DATASET}"].insert(0, trained_on)
    yield Lists(url, key, db, made, add)
    db.dispose()


def next_link(answer: httpx.Response, url: str) -> str | None:
    link = answer.links.get("next", {}).get("url")
    return None if link is None else f"{url}{link}"


@pytest.mark.parametrize("path", [f"models/{MODEL}", f"datasets/{DATASET}"])
def test_pages_follow_the_link_header_newest_first_nothing_missing_or_repeated(lists: Lists, path: str) -> None:
    versions = f"{lists.url}/api/apps/{APP}/{path}/versions"
    first = httpx.get(versions, params={"limit": 50}, headers=lists.headers)
    assert first.status_code == 200 and isinstance(first.json(), list), first.text  # still the JSON array it was
    seen = [v["id"] for v in first.json()]
    assert seen == lists.made[path][::-1][:50]

    # Meanwhile a version is added (newer than all: the first page's) and the first page's last one deleted.
    added = lists.add[path]()
    link = next_link(first, lists.url)
    assert link is not None and "limit=50" in link and "before=" in link, first.headers
    assert httpx.delete(f"{versions}/{seen[-1]}", headers=lists.headers).status_code == 204
    pages = [first]
    while link is not None:
        pages.append(httpx.get(link, headers=lists.headers))
        assert pages[-1].status_code == 200, pages[-1].text
        seen += [v["id"] for v in pages[-1].json()]
        link = next_link(pages[-1], lists.url)
    assert [len(p.json()) for p in pages] == [50, 50, len(lists.made[path]) - 100]
    assert seen == lists.made[path][::-1]  # each once, in order: the deletion shifted nothing
    again = httpx.get(versions, params={"limit": 2}, headers=lists.headers).json()
    assert [v["id"] for v in again] == [added, lists.made[path][-1]]
    lists.made[path].remove(seen[49])
    lists.made[path].append(added)


def test_the_default_page_is_fifty_and_a_bad_limit_or_cursor_is_a_422_naming_it(lists: Lists) -> None:
    versions = f"{lists.url}/api/apps/{APP}/models/{MODEL}/versions"
    assert len(httpx.get(versions, headers=lists.headers).json()) == 50
    last = httpx.get(versions, params={"limit": 500}, headers=lists.headers)
    assert len(last.json()) == len(lists.made[f"models/{MODEL}"]) and "link" not in last.headers
    for params, key in [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"before": "yesterday"}, "before"),
        ({"before": "12.NOT-AN-ID"}, "before"),
        ({"before": "9" * 30 + ".abc"}, "before"),
    ]:
        answer = httpx.get(versions, params=params, headers=lists.headers)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["details"]["key"] == key and key in answer.json()["message"], answer.json()


def test_the_sdk_reads_every_page_or_the_newest_few(lists: Lists) -> None:
    with Client(lists.url, api_key=lists.key) as client:
        app = client.get_app(APP)
        model, dataset = app.get_model(MODEL), app.get_dataset(DATASET)
        assert [v.id for v in model.list_versions(page_size=50)] == lists.made[f"models/{MODEL}"][::-1]
        assert [v.id for v in dataset.list_versions(page_size=50)] == lists.made[f"datasets/{DATASET}"][::-1]
        assert [v.id for v in model.list_versions(limit=70, page_size=50)] == lists.made[f"models/{MODEL}"][::-1][:70]
        assert [v.id for v in model.list_versions(3)] == lists.made[f"models/{MODEL}"][::-1][:3]
