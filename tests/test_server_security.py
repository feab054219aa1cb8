"""Security of a real `tuneloom serve`: headers, CSRF, limits, key revocation, paths, XSS in the console.

Each test is what an attacker would try against a running server: framing or sniffing the console,
a forged cross-origin request riding on cookies, a body big enough to tie up the server, more
generations than one key may run, a key that keeps working after revocation, upload names and ids
with `../`, a symlink planted in the data dir to read the machine's files through the API, and
markup in user text. The server runs with a 64 KB JSON limit, one generation per key and a
max_tokens cap of 1000, so each limit is reached cheaply. The tests around a trained tiny-random
version run on SQLite only (none of it depends on the database; training is the expensive part).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from tests.conftest import DATABASE_URL_FILE, INSTRUCTION, api_key, database_args, run_cli, sentiment_lines
from tests.server_helpers import Deployed, deploy, ready_dataset_version, server_database
from tests.test_web_e2e import KEY_STORAGE, watch_errors

from tuneloom.server.security import CONTENT_SECURITY_POLICY
from tuneloom.store import telemetry

SERVER_ARGS = ["--max-json-kb", "64", "--max-concurrent-generations-per-key", "1", "--max-tokens-limit", "1000"]
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
PROMPT = f"### Instruction: {INSTRUCTION} ### Human: I love it ### Assistant:"
LIMIT_NAMED = "--max-concurrent-generations-per-key"


@pytest.fixture(scope="module")
def admin(server: tuple[str, Path]) -> dict[str, str]:
    url, data_dir = server
    headers = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=headers).status_code == 201
    return headers


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    """A trained version in app "served" (SQLite only: the tests that need one skip on PostgreSQL)."""
    if (server[1] / DATABASE_URL_FILE).is_file():
        pytest.skip("generation limits, planted model files and the console's escaping do not depend on the database")
    return deploy(*server, app_id="served")


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
    # tuneloom's error shape, as for a 422 or a 409: a code to branch on, the limit named and as a number
    assert declared.status_code == 413, declared.text
    assert declared.json() == {
        "code": "REQUEST_TOO_LARGE",
        "message": f"request body larger than the {JSON_LIMIT} limit for JSON bodies (--max-json-kb)",
        "details": {"limit": 65_536},
    }
    assert_secure(declared)
    chunked = httpx.post(f"{url}/api/apps", content=iter([big[:40_000], big[40_000:]]), headers=admin)
    assert chunked.status_code == 413 and chunked.json() == declared.json(), chunked.text
    chat = {"model": "shop/m", "messages": [{"role": "user", "content": "y" * 70_000}]}
    openai = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=admin)
    assert openai.status_code == 413, openai.text  # in OpenAI's shape, as every /v1 error
    message = declared.json()["message"]
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": "request_too_large"}
    assert openai.json() == {"error": error}
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
    database = ["--data-dir", str(data_dir), *database_args(data_dir)]
    revoked = run_cli("keys", "revoke", key_id, *database)
    assert revoked.returncode == 0 and "revoked" in revoked.stderr, revoked.stderr
    after = httpx.get(f"{url}/api/apps/shop/datasets", headers=headers)
    assert after.status_code == 401 and "revoked" in after.json()["message"]
    assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401
    assert httpx.get(f"{url}/api/apps", headers=admin).status_code == 200  # other keys are unaffected
    if not database_args(data_dir):  # the listing reads the same rows on PostgreSQL: one backend is enough
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


def _ended_on_a_stop(lines: Iterator[str]) -> bool:
    """Whether a held /generate stream ended early on a stop string or EOS (not on its max_tokens)."""
    done = [json.loads(line[len("data:") :]) for line in lines if '"finish_reason"' in line]
    return bool(done) and done[-1]["finish_reason"] == "stop"


def test_one_key_cannot_run_more_generations_than_its_limit(deployed: Deployed, admin: dict[str, str]) -> None:
    """While the key's one slot streams, /predict, /generate and the OpenAI routes get 429; other keys do not."""
    d = deployed
    other = admin  # another key that may use the app
    # Near-uniform sampling over the vocabulary keeps the held stream going, but not surely: about one in three
    # such streams draws the section stop or EOS within 1,000 tokens, a few within 100. A hold that ended
    # before its refusals were checked proves nothing either way, so it is taken again.
    sampled = {"max_tokens": 1000, "temperature": 5.0}
    openai = {"model": f"{d.app_id}/{d.model_id}", "prompt": PROMPT, "max_tokens": 5}
    predict = {"inputs": ["hi"], "inference_params": {"max_tokens": 2}}
    asks = {
        "predict": (f"{d.model_url}/predict", predict),
        "generate": (f"{d.model_url}/generate", {"input": "hi"}),
        "completions": (f"{d.url}/v1/completions", openai),
    }
    for _attempt in range(4):
        with (
            ThreadPoolExecutor(3) as pool,
            httpx.stream(
                "POST",
                f"{d.model_url}/generate",
                json={"input": PROMPT, "inference_params": sampled},
                headers=d.headers,
            ) as stream,
        ):
            lines = (line for line in stream.iter_lines() if line.startswith("data:"))
            assert next(lines)  # generating now
            sent = {
                name: pool.submit(httpx.post, url, json=body, headers=d.headers) for name, (url, body) in asks.items()
            }
            refused = {name: future.result() for name, future in sent.items()}
            if any(r.status_code != 429 for r in refused.values()) and _ended_on_a_stop(lines):
                time.sleep(0.5)  # its slot is freed as its response ends
                continue
            assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 429), refused
            body = refused["predict"].json()
            assert body["code"] == "TOO_MANY_GENERATIONS" and body["details"] == {"limit": 1}, body
            assert LIMIT_NAMED in body["message"] and "1 generations" in body["message"]
            assert refused["generate"].json()["code"] == "TOO_MANY_GENERATIONS"
            assert refused["predict"].headers["retry-after"] == "1"
            assert refused["completions"].json()["error"]["code"] == "rate_limit_exceeded"
            assert LIMIT_NAMED in refused["completions"].json()["error"]["message"]
            # Another key is not refused: it waits for the model (one generation per model) and gets its answer.
            other_answer = pool.submit(httpx.post, f"{d.model_url}/predict", json=predict, headers=other, timeout=60)
            time.sleep(0.5)
            assert not other_answer.done() or other_answer.result().status_code == 200
            break
    else:
        pytest.fail("four held streams in a row ended before their refusals were checked")
    # Leaving the stream stops its generation and frees the slot.
    assert other_answer.result().status_code == 200
    deadline = time.monotonic() + 30
    answer = httpx.post(f"{d.model_url}/predict", json=predict, headers=d.headers, timeout=60)
    while answer.status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = httpx.post(f"{d.model_url}/predict", json=predict, headers=d.headers, timeout=60)
    assert answer.status_code == 200, answer.text


def test_max_tokens_above_the_servers_limit_is_refused_naming_it(deployed: Deployed) -> None:
    d = deployed
    over = httpx.post(
        f"{d.model_url}/predict", json={"inputs": ["hi"], "inference_params": {"max_tokens": 1001}}, headers=d.headers
    )
    assert over.status_code == 422, over.text
    body = over.json()
    assert body["details"]["key"] == "inference_params.max_tokens" and "limit of 1000" in body["message"]
    stream = httpx.post(
        f"{d.model_url}/generate", json={"input": "hi", "inference_params": {"max_new_tokens": 2000}}, headers=d.headers
    )
    assert stream.status_code == 422 and "limit of 1000" in stream.text
    chat = {"model": f"{d.app_id}/{d.model_id}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1001}
    openai = httpx.post(f"{d.url}/v1/chat/completions", json=chat, headers=d.headers)
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "max_tokens", openai.text
    assert "limit of 1000" in openai.json()["error"]["message"]
    at_limit = {"inputs": ["hi"], "inference_params": {"max_tokens": 3, "temperature": 0}}
    assert httpx.post(f"{d.model_url}/predict", json=at_limit, headers=d.headers, timeout=60).status_code == 200


@pytest.mark.parametrize("route", ["predict", "generate"])
def test_max_new_tokens_above_the_servers_limit_is_refused_under_its_own_name(
    server: tuple[str, Path], admin: dict[str, str], route: str
) -> None:
    """The cap is checked before the model is looked up; it named 'inference_params.max_tokens', never sent."""
    question = {"inputs": ["hi"]} if route == "predict" else {"input": "hi"}
    body = {**question, "inference_params": {"max_new_tokens": 1001}}
    over = httpx.post(f"{server[0]}/api/apps/shop/models/m/{route}", json=body, headers=admin)
    assert over.status_code == 422, over.text
    assert over.json()["details"]["key"] == "inference_params.max_new_tokens" and "limit of 1000" in over.text


def test_a_symlinked_held_out_file_is_not_read_through(deployed: Deployed, tmp_path: Path) -> None:
    """The evaluation page reads held_out.json from the version folder: a link out of the data dir is refused."""
    d = deployed
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps([{"prompt": "TOP SECRET prompt", "completion": "x"}]), encoding="utf-8")
    held_out = d.version_dir / "held_out.json"
    original = held_out.read_bytes()
    held_out.unlink()
    os.symlink(secret, held_out)
    try:
        url = f"{d.model_url}/versions/{d.version_id}/evaluation"
        response = httpx.get(url, headers=d.headers, timeout=60)
        assert response.status_code == 400 and response.json()["code"] == "UNSAFE_PATH", response.text
        assert "TOP SECRET" not in response.text
    finally:
        held_out.unlink()
        held_out.write_bytes(original)


XSS = {
    "app": "<img src=x onerror=\"window.__xss='app'\">App",
    "dataset": "<script>window.__xss='dataset'</script>Data",
    "prompt": "<script>window.__xss='line'</script>",
    "completion": "<img src=x onerror=\"window.__xss='completion'\">",
    "invalid": "<svg onload=\"window.__xss='invalid'\"></svg>",
    "log": "<img src=x onerror=\"window.__xss='log'\"><script>window.__xss='log2'</script>",
}


def test_user_text_with_markup_shows_as_text_and_never_runs(
    deployed: Deployed,
    admin: dict[str, str],
    browser_page: Page,
    tmp_path: Path,
) -> None:
    """An app name, a dataset name, an uploaded line (valid and refused) and a log line, all carrying markup."""
    d = deployed
    key = admin["Authorization"].removeprefix("Key ")
    assert httpx.post(f"{d.url}/api/apps", json={"id": "xss", "name": XSS["app"]}, headers=admin).status_code == 201
    datasets = f"{d.url}/api/apps/xss/datasets"
    assert httpx.post(datasets, json={"id": "evil", "name": XSS["dataset"]}, headers=admin).status_code == 201
    telemetry.append_logs(server_database(d.data_dir), d.version_id, [("info", XSS["log"])])
    lines = sentiment_lines(repeat=2)
    lines[0] = f"### Instruction: {XSS['prompt']} ### Human: hi ### Assistant: {XSS['completion']}"
    lines.insert(1, f"### Human: {XSS['invalid']} and no answer")
    upload = tmp_path / "evil.txt"
    upload.write_text("\n".join(lines) + "\n", encoding="utf-8")

    page = browser_page
    errors = watch_errors(page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
    page.goto(f"{d.url}/#/apps")
    expect(page.get_by_text(XSS["app"], exact=True)).to_be_visible()
    page.goto(f"{d.url}/#/apps/xss/datasets")
    expect(page.get_by_text(XSS["dataset"], exact=True).first).to_be_visible()
    page.goto(f"{d.url}/#/apps/xss/datasets/evil")
    page.get_by_test_id("upload-input").set_input_files(upload)
    expect(page.get_by_test_id("invalid-rows")).to_contain_text(XSS["invalid"], timeout=30_000)
    expect(page.get_by_test_id("preview")).to_contain_text(XSS["prompt"])
    expect(page.get_by_test_id("preview")).to_contain_text(XSS["completion"])
    page.goto(f"{d.url}/#/apps/{d.app_id}/models/{d.model_id}/versions/{d.version_id}")
    expect(page.get_by_test_id("logs")).to_contain_text(XSS["log"])
    time.sleep(0.3)  # an injected onerror would fire on the failed image load by now
    assert page.evaluate("window.__xss") is None
    assert page.locator("main [onerror], main [onload], main script").count() == 0
    assert not dialogs and not errors, (dialogs, errors)
