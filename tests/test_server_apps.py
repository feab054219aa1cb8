"""The server as a real process on a loopback port: health, keys, and app scoping."""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.conftest import api_key

SERVER_ARGS = ["--workers", "0"]  # nothing here trains: no worker slot, no forkserver importing torch beside the tests


def test_health_needs_no_key_and_everything_else_does(server: tuple[str, Path]) -> None:
    url, _ = server
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok"
    assert health["backend"] == "transformers"  # `serve --backend auto` on a machine without vLLM and a GPU
    assert httpx.get(f"{url}/api/apps").status_code == 401
    assert httpx.get(f"{url}/api/apps", headers={"Authorization": "Key tl_nope_nope"}).status_code == 401


def test_admin_creates_apps_and_scoped_keys_see_only_their_own(server: tuple[str, Path]) -> None:
    url, data_dir = server
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    for app_id in ("alpha", "beta"):
        created = httpx.post(f"{url}/api/apps", json={"id": app_id, "name": app_id.title()}, headers=admin)
        assert created.status_code == 201, created.text
    assert httpx.post(f"{url}/api/apps", json={"id": "alpha"}, headers=admin).status_code == 409
    bad = httpx.post(f"{url}/api/apps", json={"id": "../etc"}, headers=admin)
    assert bad.status_code == 422 and "not valid" in bad.json()["message"]

    scoped = {"Authorization": f"Bearer {api_key(data_dir, '--app', 'alpha')}"}
    assert [a["id"] for a in httpx.get(f"{url}/api/apps", headers=scoped).json()] == ["alpha"]
    assert httpx.get(f"{url}/api/apps/alpha", headers=scoped).json()["name"] == "Alpha"
    assert httpx.get(f"{url}/api/apps/beta", headers=scoped).status_code == 404
    assert httpx.delete(f"{url}/api/apps/beta", headers=scoped).status_code == 404
    assert httpx.post(f"{url}/api/apps", json={"id": "gamma"}, headers=scoped).status_code == 403

    assert httpx.delete(f"{url}/api/apps/beta", headers=admin).status_code == 204
    assert httpx.get(f"{url}/api/apps/beta", headers=admin).status_code == 404
    for children in ("datasets", "models"):  # a deleted or mistyped app has no empty lists: it is not there
        listing = httpx.get(f"{url}/api/apps/beta/{children}", headers=admin)
        assert listing.status_code == 404 and "app 'beta'" in listing.json()["message"], listing.text
    assert {a["id"] for a in httpx.get(f"{url}/api/apps", headers=admin).json()} >= {"alpha"}


def test_every_refusal_has_the_same_error_shape(server: tuple[str, Path]) -> None:
    """Schema errors, unknown routes and wrong methods answer {code, message} like tuneloom's own errors."""
    url, data_dir = server
    headers = {"Authorization": f"Key {api_key(data_dir)}"}
    invalid = httpx.post(f"{url}/api/apps", json={"name": "x" * 300, "colour": "red"}, headers=headers)
    body = invalid.json()
    assert invalid.status_code == 422 and body["code"] == "INVALID_REQUEST", body
    assert "name: String should have at most 200 characters" in body["message"], body
    assert "colour: Extra inputs are not permitted" in body["message"], body
    assert body["details"]["key"] == "name" and len(body["details"]["errors"]) == 2, body
    unknown = httpx.get(f"{url}/api/nothing-here", headers=headers)
    assert unknown.status_code == 404 and unknown.json() == {"code": "NOT_FOUND", "message": "Not Found"}
    wrong_method = httpx.put(f"{url}/api/apps", headers=headers)
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "METHOD_NOT_ALLOWED"


def test_a_lookup_under_a_missing_app_names_the_app_and_every_404_its_key(server: tuple[str, Path]) -> None:
    """`model 'router' not found in app 'nosuchapp'` sent users looking for the model; version 404s named no key."""
    url, data_dir = server
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    for app_id in ("keyed", "elsewhere"):
        assert httpx.post(f"{url}/api/apps", json={"id": app_id}, headers=admin).status_code == 201
    assert httpx.post(f"{url}/api/apps/keyed/models", json={"id": "router"}, headers=admin).status_code == 201
    assert httpx.post(f"{url}/api/apps/keyed/datasets", json={"id": "tickets"}, headers=admin).status_code == 201
    scoped = {"Authorization": f"Key {api_key(data_dir, '--app', 'keyed')}"}
    children = ["models/router", "models/router/versions/nope", "datasets/tickets", "datasets/tickets/versions/nope"]
    for child in children:
        missing = httpx.get(f"{url}/api/apps/nosuchapp/{child}", headers=admin)
        expected = {"code": "NOT_FOUND", "message": "app 'nosuchapp' not found", "details": {"key": "app_id"}}
        assert missing.status_code == 404 and missing.json() == expected, (child, missing.text)
        hidden = httpx.get(f"{url}/api/apps/elsewhere/{child}", headers=scoped)  # exists, not for this key
        alike = {**expected, "message": "app 'elsewhere' not found"}  # no hint that it exists
        assert hidden.status_code == 404 and hidden.json() == alike, (child, hidden.text)
    keys = {"models/nope": "model_id", "datasets/nope": "dataset_id"}
    keys |= {"models/router/versions/nope": "version_id", "datasets/tickets/versions/nope": "version_id"}
    for child, key in keys.items():
        answer = httpx.get(f"{url}/api/apps/keyed/{child}", headers=scoped)
        assert answer.status_code == 404 and answer.json()["details"] == {"key": key}, (child, answer.text)
    train = {"dataset_version_id": "nope", "template": "tiny-random"}
    queued = httpx.post(f"{url}/api/apps/keyed/models/router/versions", json=train, headers=scoped)
    assert queued.status_code == 404 and queued.json()["details"] == {"key": "dataset_version_id"}, queued.text
