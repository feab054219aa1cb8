"""Security of a real `tuneloom serve`: headers, CSRF, JSON body limits, key revocation, paths.

Each test is what an attacker would try against a running server (both databases): framing or
sniffing the console, a forged cross-origin request riding on cookies, a body big enough to tie up
the server, a key that keeps working after revocation, upload names and ids with `../`, and a
symlink planted in the data dir to read the machine's files through the API.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import _database_args, api_key, run_cli, sentiment_lines
from tests.server_helpers import ready_dataset_version

from tuneloom.server.security import CONTENT_SECURITY_POLICY

SERVER_ARGS = ["--max-json-kb", "64"]  # uploads keep the fixture's 1 MB limit
JSON_LIMIT = "65,536-byte"
EXPECTED_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
EVIL = "https://evil.example"
STORED_UPLOAD = re.compile(r"^[a-z0-9]{16}(\.[a-z0-9]{1,10})?$")  # uploads/<id>.<ext>, nothing else


@pytest.fixture(scope="module")
def admin(server: tuple[str, Path]) -> dict[str, str]:
    url, data_dir = server
    headers = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=headers).status_code == 201
    return headers


def assert_secure(response: httpx.Response) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, response.headers.get(name))
    assert "set-cookie" not in response.headers, response.request.url


def test_security_headers_on_the_shell_assets_api_and_errors(server: tuple[str, Path], admin: dict[str, str]) -> None:
    url, _ = server
    answers = {
        "shell": httpx.get(f"{url}/"),
        "script": httpx.get(f"{url}/static/app.js"),
        "api": httpx.get(f"{url}/api/apps", headers=admin),
        "no key": httpx.get(f"{url}/api/apps"),
        "not found": httpx.get(f"{url}/api/apps/nope", headers=admin),
        "invalid": httpx.post(f"{url}/api/apps", json={"id": "Not A Slug"}, headers=admin),
        "openai": httpx.post(f"{url}/v1/completions", json={}, headers=admin),
    }
    expected = {"shell": 200, "script": 200, "api": 200, "no key": 401, "not found": 404, "invalid": 422, "openai": 400}
    assert {name: r.status_code for name, r in answers.items()} == expected
    for response in answers.values():
        assert_secure(response)
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY


def test_cross_origin_requests_with_cookies_but_no_key_are_refused(
    server: tuple[str, Path], admin: dict[str, str]
) -> None:
    """CSRF: credentials a browser would attach by itself (cookies) are worth nothing; no CORS is granted."""
    url, _ = server
    forged = {"Origin": EVIL, "Cookie": "session=stolen; tuneloom=1", "Content-Type": "application/json"}
    for method, path in (("POST", "/api/apps"), ("GET", "/api/apps/shop/datasets"), ("GET", "/v1/models")):
        response = httpx.request(method, f"{url}{path}", headers=forged, content=b'{"id": "forged"}')
        assert response.status_code == 401, (path, response.text)
        assert "access-control-allow-origin" not in response.headers
        assert_secure(response)
    # The preflight a browser sends before a keyed cross-origin request is not granted either.
    preflight = httpx.options(
        f"{url}/api/apps",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert not any(name.startswith("access-control-allow") for name in preflight.headers), preflight.headers
    # Even a real key sent from another origin gets an answer the browser will not let that origin read.
    keyed = httpx.get(f"{url}/api/apps", headers={**admin, "Origin": EVIL})
    assert keyed.status_code == 200 and "access-control-allow-origin" not in keyed.headers
    assert "forged" not in {a["id"] for a in keyed.json()}


def test_json_bodies_over_the_limit_are_413_naming_it_and_uploads_keep_their_own(
    server: tuple[str, Path], admin: dict[str, str]
) -> None:
    url, _ = server
    big = b'{"id": "big", "name": "' + b"x" * 70_000 + b'"}'
    declared = httpx.post(f"{url}/api/apps", content=big, headers={**admin, "Content-Type": "application/json"})
    assert declared.status_code == 413 and JSON_LIMIT in declared.json()["detail"], declared.text
    assert_secure(declared)
    chunked = httpx.post(f"{url}/api/apps", content=iter([big[:40_000], big[40_000:]]), headers=admin)
    assert chunked.status_code == 413 and JSON_LIMIT in chunked.text, chunked.text
    chat = {"model": "shop/m", "messages": [{"role": "user", "content": "y" * 70_000}]}
    openai = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=admin)
    assert openai.status_code == 413 and JSON_LIMIT in openai.json()["error"]["message"], openai.text
    assert httpx.get(f"{url}/healthz").status_code == 200
    # An upload of 200 KB (over the JSON limit, under the 1 MB upload limit) is accepted.
    lines = "\n".join(sentiment_lines(repeat=80)) + "\n"
    assert 100_000 < len(lines) < 1_000_000
    datasets = f"{url}/api/apps/shop/datasets"
    assert httpx.post(datasets, json={"id": "bulk"}, headers=admin).status_code == 201
    uploaded = httpx.post(f"{datasets}/bulk/uploads", content=lines.encode(), headers=admin, timeout=60)
    assert uploaded.status_code == 201, uploaded.text


def test_a_revoked_key_gets_401_on_its_very_next_request(server: tuple[str, Path], admin: dict[str, str]) -> None:
    url, data_dir = server
    key = api_key(data_dir, "--app", "shop")
    headers = {"Authorization": f"Key {key}"}
    assert httpx.get(f"{url}/api/apps/shop/datasets", headers=headers).status_code == 200
    key_id = key.split("_")[1]
    database = ["--data-dir", str(data_dir), *_database_args(data_dir)]
    revoked = run_cli("keys", "revoke", key_id, *database)
    assert revoked.returncode == 0 and "revoked" in revoked.stderr, revoked.stderr
    after = httpx.get(f"{url}/api/apps/shop/datasets", headers=headers)
    assert after.status_code == 401 and "revoked" in after.json()["detail"]
    assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401
    assert httpx.get(f"{url}/api/apps", headers=admin).status_code == 200  # other keys are unaffected
    listed = run_cli("keys", "list", "--app", "shop", *database)
    assert listed.returncode == 0 and re.search(rf"{key_id}\s+app:shop\s+.*revoked", listed.stdout), listed.stdout


def test_upload_names_never_become_paths(server: tuple[str, Path], admin: dict[str, str]) -> None:
    url, data_dir = server
    datasets = f"{url}/api/apps/shop/datasets"
    assert httpx.post(datasets, json={"id": "names"}, headers=admin).status_code == 201
    outside = data_dir.parent / "escaped.txt"
    body = ("\n".join(sentiment_lines(repeat=1)) + "\n").encode()
    names = ["../escaped.txt", "../../../../../../tmp/escaped.txt", "/tmp/escaped.txt", "..\\..\\escaped.txt", ".."]
    for name in names:
        response = httpx.post(f"{datasets}/names/uploads", params={"filename": name}, content=body, headers=admin)
        assert response.status_code == 201, (name, response.text)
        assert response.json()["source_file"] == name  # shown as given: it is display text only
    assert not outside.exists() and not Path("/tmp/escaped.txt").exists()
    stored = sorted(p.name for p in (data_dir / "uploads").iterdir())
    assert stored and all(STORED_UPLOAD.match(name) for name in stored), stored


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/apps/shop/datasets", {"id": "../../etc"}),
        ("POST", "/api/apps/shop/datasets", {"id": "a/b"}),
        ("POST", "/api/apps/shop/datasets", {"id": ".."}),
        ("POST", "/api/apps/shop/models", {"id": "../m"}),
        ("POST", "/api/apps", {"id": "x/../../y"}),
        ("GET", "/api/apps/shop/datasets/..%2F..%2Fsecrets", None),
        ("GET", "/api/apps/shop/datasets/%2E%2E", None),
        ("GET", "/api/apps/shop/models/..%2Fm/versions", None),
        ("GET", "/api/apps/shop/models/m/versions/..%2F..%2Ftuneloom.db", None),
        ("GET", "/api/apps/..%2Fshop/datasets", None),
    ],
)
def test_ids_with_dots_or_slashes_are_refused(
    server: tuple[str, Path], admin: dict[str, str], method: str, path: str, body: dict[str, str] | None
) -> None:
    url, _ = server
    response = httpx.request(method, f"{url}{path}", json=body, headers=admin)
    assert response.status_code in (404, 422), response.text
    if response.status_code == 422:
        assert "is not valid" in response.text or "id" in response.text


def test_a_symlink_planted_in_the_data_dir_is_not_followed_out_of_it(
    server: tuple[str, Path], admin: dict[str, str]
) -> None:
    """A dataset version's snapshot replaced by a link to /etc/passwd: training refuses it, reads nothing."""
    url, data_dir = server
    version_id = ready_dataset_version(url, admin, "shop", dataset_id="planted")
    snapshot = data_dir / "dataset-versions" / f"{version_id}.jsonl"
    assert snapshot.is_file()
    snapshot.unlink()
    os.symlink("/etc/passwd", snapshot)
    models = f"{url}/api/apps/shop/models"
    assert httpx.post(models, json={"id": "planted"}, headers=admin).status_code == 201
    body = {"dataset_version_id": version_id, "template": "tiny-random"}
    queued = httpx.post(f"{models}/planted/versions", json=body, headers=admin, timeout=60)
    assert queued.status_code == 201, queued.text
    version_url = f"{models}/planted/versions/{queued.json()['id']}"
    deadline = time.monotonic() + 60
    status = httpx.get(version_url, headers=admin).json()["status"]
    while status["name"] in ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING") and time.monotonic() < deadline:
        time.sleep(0.3)
        status = httpx.get(version_url, headers=admin).json()["status"]
    assert status["name"] == "MODEL_TRAINING_FAILED", status
    assert "leaves the data dir" in str(status["message"]), status
    logs = httpx.get(f"{version_url}/logs", headers=admin).text
    assert "root:" not in logs and "root:" not in str(status)
    assert Path("/etc/passwd").is_file() and snapshot.is_symlink()  # nothing outside was touched
    # Deleting the dataset removes the planted link itself, not what it points to.
    assert httpx.delete(f"{url}/api/apps/shop/datasets/planted", headers=admin).status_code == 204
    assert not snapshot.is_symlink() and Path("/etc/passwd").is_file()
