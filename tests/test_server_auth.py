"""Every API route refuses a missing or wrong key (401) and another app's key (403/404), on a real server.

The routes come from the server's own /openapi.json, so a route added later is checked without
editing this file. Path parameters are filled with the ids of objects that exist in the owner's
app, and a control request with the owner's key afterwards shows those ids resolve (and that none
of the refused requests deleted anything): a 404 for the other app therefore proves scoping, not a
missing object.
"""

from __future__ import annotations

import importlib.util
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import api_key, database_args, run_cli, sentiment_lines

OWNER, OTHER = "owner-app", "other-app"
METHODS = ("get", "post", "put", "patch", "delete")
# Routes whose permission is not a key but a download link's signed token (`server.exports`).
KEYLESS = {"/api/downloads/{token}"}
# Plausible values for required query parameters, by name.
QUERY_VALUES = {"template": "tiny-random"}
# What a POST body names when it points at the owner's objects without a path (the OpenAI routes).
V1_BODY = {"model": f"{OWNER}/gen", "max_tokens": 1}
V1_INPUT = {  # each route's own input: a field of the other route's would be refused as unrecognized
    "/v1/completions": {"prompt": "hi"},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
}


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # the OpenAPI path, e.g. /api/apps/{app_id}/datasets/{dataset_id}
    query: tuple[str, ...]  # required query parameter names

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.template}"


@dataclass(frozen=True)
class World:
    url: str
    owner: dict[str, str]
    other: dict[str, str]
    ids: dict[str, str]
    routes: list[Route]


def _routes(openapi: dict[str, Any]) -> list[Route]:
    found = []
    for path, operations in openapi["paths"].items():
        if not path.startswith(("/api/", "/v1/")) or path in KEYLESS:
            continue
        for method in METHODS:
            if method in operations:
                params = operations[method].get("parameters", [])
                query = tuple(p["name"] for p in params if p["in"] == "query" and p.get("required"))
                found.append(Route(method, path, query))
    return found


def _create(url: str, path: str, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    answer = httpx.post(f"{url}{path}", headers=headers, timeout=30, **kwargs)
    assert answer.status_code == 201, f"{path}: {answer.status_code} {answer.text}"
    result: dict[str, Any] = answer.json()
    return result


@pytest.fixture(scope="module")
def world(server: tuple[str, Path]) -> World:
    """Two apps; the owner's holds a dataset with a version, and (once models exist) a model with a version."""
    url, data_dir = server
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    for app_id in (OWNER, OTHER):
        _create(url, "/api/apps", admin, json={"id": app_id})
    owner = {"Authorization": f"Key {api_key(data_dir, '--app', OWNER)}"}
    other = {"Authorization": f"Key {api_key(data_dir, '--app', OTHER)}"}
    base = f"/api/apps/{OWNER}"
    _create(url, f"{base}/datasets", owner, json={"id": "tickets"})
    _create(url, f"{base}/datasets/tickets/uploads", owner, content="\n".join(sentiment_lines(1)).encode())
    dataset_version = _create(url, f"{base}/datasets/tickets/versions", owner)["id"]
    ids = {"app_id": OWNER, "dataset_id": "tickets", "dataset_version_id": dataset_version}
    routes = _routes(httpx.get(f"{url}/openapi.json").json())
    if any("/models" in r.template for r in routes):
        ids["model_id"] = _create(url, f"{base}/models", owner, json={"id": "gen"})["id"]
        body = {"dataset_version_id": dataset_version, "template": "tiny-random", "trainer_config": {"max_steps": 1}}
        ids["model_version_id"] = _create(url, f"{base}/models/gen/versions", owner, json=body)["id"]
        ids["model"] = f"{OWNER}/gen"  # the OpenAI routes' name for it
    return World(url, owner, other, ids, routes)


def _fill(route: Route, ids: dict[str, str]) -> str:
    """The route's path with real ids of the owner's objects (a version under /models/ is a model version)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "version_id":
            name = "model_version_id" if "/models/" in route.template else "dataset_version_id"
        if name not in ids:
            raise AssertionError(f"{route}: no existing object for '{{{name}}}'; add one to the world fixture")
        return ids[name]

    return re.sub(r"\{(\w+)\}", value, route.template)


def _send(world: World, route: Route, headers: dict[str, str]) -> httpx.Response:
    """One request as a client would send it; streamed, so an event stream is judged by its status alone."""
    kwargs: dict[str, Any] = {"params": {name: QUERY_VALUES.get(name, "x") for name in route.query}}
    if route.method in ("post", "put", "patch"):
        if route.template.endswith("/uploads"):
            kwargs["content"] = b"### Human: hi ### Assistant: hello\n"
        else:
            v1 = route.template.startswith("/v1/")
            kwargs["json"] = {**V1_BODY, **V1_INPUT.get(route.template, {})} if v1 else {}
    request = httpx.Request(route.method.upper(), f"{world.url}{_fill(route, world.ids)}", headers=headers, **kwargs)
    with httpx.Client(timeout=60) as client:
        response = client.send(request, stream=True)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            response.close()
        else:
            response.read()
        return response


def test_health_needs_no_key(server: tuple[str, Path]) -> None:
    assert httpx.get(f"{server[0]}/healthz").status_code == 200


def test_a_download_route_answers_a_valid_link_only_key_or_no_key(world: World) -> None:
    assert set(httpx.get(f"{world.url}/openapi.json").json()["paths"]) >= KEYLESS
    unsigned = f"{OWNER}.gen.{world.ids['model_version_id']}.adapter.4102444800.{'0' * 64}"
    for headers in ({}, world.owner):
        answer = httpx.get(f"{world.url}/api/downloads/{unsigned}", headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (403, "INVALID_LINK")


def test_the_route_list_comes_from_openapi_and_covers_every_area(world: World) -> None:
    templates = {r.template for r in world.routes}
    assert "/api/apps/{app_id}/datasets/{dataset_id}/uploads" in templates
    if importlib.util.find_spec("tuneloom.server.routes.models"):
        assert "/api/apps/{app_id}/models/{model_id}/versions" in templates
        assert "/api/templates" in templates
    if importlib.util.find_spec("tuneloom.server.routes.predict"):
        assert "/api/apps/{app_id}/models/{model_id}/predict" in templates
        assert "/api/apps/{app_id}/models/{model_id}/generate" in templates
    if importlib.util.find_spec("tuneloom.server.routes.openai_compat"):
        assert {"/v1/models", "/v1/completions", "/v1/chat/completions"} <= templates


@pytest.mark.parametrize(
    "authorization", [None, "Key tl_wrong_key", "Bearer tl_wrong_key", "Basic dXNlcjpwYXNz", "Key"]
)
def test_every_route_refuses_a_missing_or_wrong_key(world: World, authorization: str | None) -> None:
    """A 401 in the API's own error shape: tuneloom's {code, message} under /api, OpenAI's {error} under /v1."""
    headers = {} if authorization is None else {"Authorization": authorization}
    answers = {str(route): _send(world, route, headers) for route in world.routes}
    assert answers and all(a.status_code == 401 for a in answers.values()), answers
    for route, answer in answers.items():
        body = answer.json()
        if " /v1/" in route:
            assert body["error"]["code"] == "invalid_api_key" and "key" in body["error"]["message"], (route, body)
        else:
            assert body["code"] == "UNAUTHORIZED" and "key" in body["message"], (route, body)


def test_keys_made_by_the_cli_open_what_they_name_on_the_running_server(world: World, server: tuple[str, Path]) -> None:
    """`tuneloom keys create` run beside a live server (on its database): the server takes the key at once."""
    data_dir = server[1]

    def created(*scope: str) -> dict[str, str]:
        made = run_cli("keys", "create", "--data-dir", str(data_dir), *database_args(data_dir), *scope)
        assert made.returncode == 0, made.stderr
        assert "It is shown once" in made.stderr
        return {"Authorization": f"Key {made.stdout.strip().splitlines()[-1]}"}

    owner, admin = created("--app", OWNER), created()
    assert httpx.get(f"{world.url}/api/apps/{OWNER}/datasets", headers=owner).status_code == 200
    assert httpx.get(f"{world.url}/api/apps/{OTHER}/datasets", headers=owner).status_code in (403, 404)
    listed = httpx.get(f"{world.url}/api/apps", headers=admin)
    assert listed.status_code == 200 and {OWNER, OTHER} <= {app["id"] for app in listed.json()}


def test_another_apps_key_reaches_nothing_of_the_owner(world: World) -> None:
    """Under /api/apps/{app_id}: 403 or 404. Elsewhere a 2xx is a list of the key's own things only."""
    wrong = {}
    for route in world.routes:
        answer = _send(world, route, world.other)
        if answer.is_success and "{app_id}" not in route.template and route.method == "get":
            if OWNER in answer.text:
                wrong[str(route)] = f"{answer.status_code}, mentions {OWNER}: {answer.text[:200]}"
        elif answer.status_code not in (403, 404):
            wrong[str(route)] = f"{answer.status_code}: {answer.text[:200]}"
    assert not wrong, wrong


def test_the_owner_reaches_every_object_the_checks_used(world: World) -> None:
    """The control: the ids above exist (so the refusals were about scope), and nothing refused deleted them."""
    if "model_version_id" in world.ids:  # /v1/models/{model} names it once it is trained
        wait_until_trained(world)
    missing = {}
    for route in world.routes:
        if route.method == "get":
            answer = _send(world, route, world.owner)
            if not answer.is_success:
                missing[str(route)] = f"{answer.status_code}: {answer.text[:200]}"
    assert not missing, missing


def wait_until_trained(world: World, timeout_s: float = 120) -> None:
    """The world's one-step model version (started by the fixture, trained meanwhile) MODEL_TRAINED."""
    url = f"{world.url}/api/apps/{OWNER}/models/gen/versions/{world.ids['model_version_id']}"
    deadline = time.monotonic() + timeout_s
    while (status := httpx.get(url, headers=world.owner, timeout=30).json()["status"]["name"]) != "MODEL_TRAINED":
        assert status in ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING") and time.monotonic() < deadline, status
        time.sleep(0.2)
