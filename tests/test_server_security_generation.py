"""Security around a trained model on a real server: generation limits, planted symlinks, XSS in the console.

One tiny-random version is trained through the API (SQLite only: none of this depends on the
database, and training is the expensive part). The server runs with one generation per key and a
max_tokens cap of 1000, so the limits can be reached by a single held stream.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from tests.conftest import INSTRUCTION, api_key, sentiment_lines
from tests.server_helpers import Deployed, deploy, server_database
from tests.test_web_e2e import KEY_STORAGE, watch_errors
from tests.web_support import browser_page, chromium  # noqa: F401 (fixtures)

from tuneloom.store import telemetry

pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
SERVER_ARGS = ["--max-concurrent-generations-per-key", "1", "--max-tokens-limit", "1000"]
PROMPT = f"### Instruction: {INSTRUCTION} ### Human: I love it ### Assistant:"
LIMIT_NAMED = "--max-concurrent-generations-per-key"


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    return deploy(*server)


def test_one_key_cannot_run_more_generations_than_its_limit(deployed: Deployed) -> None:
    """While the key's one slot streams, /predict, /generate and the OpenAI routes get 429; other keys do not."""
    d = deployed
    other = {"Authorization": f"Key {api_key(d.data_dir, '--app', d.app_id)}"}  # another key of the same app
    sampled = {"max_tokens": 1000, "temperature": 1.0}
    openai = {"model": f"{d.app_id}/{d.model_id}", "prompt": PROMPT, "max_tokens": 5}
    predict = {"inputs": ["hi"], "inference_params": {"max_tokens": 2}}
    with (
        ThreadPoolExecutor(1) as pool,
        httpx.stream(
            "POST", f"{d.model_url}/generate", json={"input": PROMPT, "inference_params": sampled}, headers=d.headers
        ) as stream,
    ):
        lines = (line for line in stream.iter_lines() if line.startswith("data:"))
        assert next(lines)  # generating now
        refused = {
            "predict": httpx.post(f"{d.model_url}/predict", json=predict, headers=d.headers),
            "generate": httpx.post(f"{d.model_url}/generate", json={"input": "hi"}, headers=d.headers),
            "completions": httpx.post(f"{d.url}/v1/completions", json=openai, headers=d.headers),
        }
        assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 429), refused
        assert LIMIT_NAMED in refused["predict"].json()["detail"] and "1 generations" in refused["predict"].text
        assert refused["completions"].json()["error"]["code"] == "rate_limit_exceeded"
        assert LIMIT_NAMED in refused["completions"].json()["error"]["message"]
        assert next(lines)  # the held stream is still generating
        # Another key is not refused: it waits for the model (one generation per model) and gets its answer.
        other_answer = pool.submit(httpx.post, f"{d.model_url}/predict", json=predict, headers=other, timeout=60)
        time.sleep(0.5)
        assert not other_answer.done() or other_answer.result().status_code == 200
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
    browser_page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An app name, a dataset name, an uploaded line (valid and refused) and a log line, all carrying markup."""
    d = deployed
    key = api_key(d.data_dir)
    admin = {"Authorization": f"Key {key}"}
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
