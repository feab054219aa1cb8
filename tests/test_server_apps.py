"""The server as a real process on a loopback port: health, keys, and app scoping."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key(data_dir: Path, *extra: str) -> str:
    result = run_cli("keys", "create", "--data-dir", str(data_dir), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("server")
    port = _free_port()
    cmd = [sys.executable, "-m", "tuneloom.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not start")
    yield url, data_dir
    proc.terminate()
    proc.wait(timeout=30)


def test_health_needs_no_key_and_everything_else_does(server: tuple[str, Path]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{url}/api/apps").status_code == 401
    assert httpx.get(f"{url}/api/apps", headers={"Authorization": "Key tl_nope_nope"}).status_code == 401


def test_admin_creates_apps_and_scoped_keys_see_only_their_own(server: tuple[str, Path]) -> None:
    url, data_dir = server
    admin = {"Authorization": f"Key {_key(data_dir)}"}
    for app_id in ("alpha", "beta"):
        created = httpx.post(f"{url}/api/apps", json={"id": app_id, "name": app_id.title()}, headers=admin)
        assert created.status_code == 201, created.text
    assert httpx.post(f"{url}/api/apps", json={"id": "alpha"}, headers=admin).status_code == 409
    bad = httpx.post(f"{url}/api/apps", json={"id": "../etc"}, headers=admin)
    assert bad.status_code == 422 and "not valid" in bad.json()["message"]

    scoped = {"Authorization": f"Bearer {_key(data_dir, '--app', 'alpha')}"}
    assert [a["id"] for a in httpx.get(f"{url}/api/apps", headers=scoped).json()] == ["alpha"]
    assert httpx.get(f"{url}/api/apps/alpha", headers=scoped).json()["name"] == "Alpha"
    assert httpx.get(f"{url}/api/apps/beta", headers=scoped).status_code == 404
    assert httpx.delete(f"{url}/api/apps/beta", headers=scoped).status_code == 404
    assert httpx.post(f"{url}/api/apps", json={"id": "gamma"}, headers=scoped).status_code == 403

    assert httpx.delete(f"{url}/api/apps/beta", headers=admin).status_code == 204
    assert httpx.get(f"{url}/api/apps/beta", headers=admin).status_code == 404
    assert {a["id"] for a in httpx.get(f"{url}/api/apps", headers=admin).json()} >= {"alpha"}
