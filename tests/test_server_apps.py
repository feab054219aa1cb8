"""The server as a real process on a loopback port: health, keys, and app scoping."""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.conftest import api_key


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
    assert {a["id"] for a in httpx.get(f"{url}/api/apps", headers=admin).json()} >= {"alpha"}
