"""The web console where users trip: repeated actions, refusals, long names, the keyboard, stale pages.

Real headless Chromium against a real `tuneloom serve` (SQLite: none of this depends on the database).
Runs that must stay unfinished are claimed by the test itself through the store
(`tests/server_helpers.unfinished_version`); the server runs no worker (nothing here trains).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, Route, expect
from tests.conftest import api_key, sentiment_lines
from tests.server_helpers import WORKER_ID, ready_dataset_version, server_database, unfinished_version
from tests.web_support import PHONE_VIEWPORT, signed_in, watch_errors

from tuneloom.store import jobs
from tuneloom.store.models import TrainingStatus

pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
SERVER_ARGS = ["--workers", "0"]  # nothing here trains: no worker slot, no forkserver importing torch beside the tests

KEEP_WORKING = "Models already trained on it keep working."  # the dataset version delete's confirm says so
LONG_ID = "a-dataset-id-of-the-longest-kind-sixty-four-characters-no-spaces"  # 64, the limit
DROP_FILE = """([name, text]) => {
  const files = new DataTransfer();
  files.items.add(new File([text], name, { type: "text/plain" }));
  const zone = document.querySelector('[data-testid="drop-zone"]');
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
}"""


@dataclass(frozen=True)
class Edges:
    """App "edges" with a READY dataset version and a model not trained yet, and an admin key."""

    url: str
    data_dir: Path
    key: str
    dataset_version_id: str
    app_id: str = "edges"
    model_id: str = "router"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}


@pytest.fixture(scope="module")
def edges(server: tuple[str, Path]) -> Edges:
    url, data_dir = server
    key = api_key(data_dir)
    headers = {"Authorization": f"Key {key}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "edges"}, headers=headers).status_code == 201
    dataset_version_id = ready_dataset_version(url, headers, "edges")
    assert httpx.post(f"{url}/api/apps/edges/models", json={"id": "router"}, headers=headers).status_code == 201
    return Edges(url, data_dir, key, dataset_version_id)


def answer_confirms(page: Page, *answers: bool) -> list[str]:
    """Answer the page's next confirm()s with `answers` (True: OK), any later one "Cancel"; returns the questions."""
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if len(asked) <= len(answers) and answers[len(asked) - 1]:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    return asked


def page_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def test_dataset_page_takes_one_upload_at_a_time_wraps_long_names_and_keeps_keyboard_focus(
    edges: Edges, browser_page: Page, tmp_path: Path
) -> None:
    url, headers = edges.url, edges.headers
    datasets = f"{url}/api/apps/edges/datasets"
    assert httpx.post(datasets, json={"id": LONG_ID}, headers=headers).status_code == 201
    page = browser_page
    errors = watch_errors(page, expected_statuses=(413, 409))
    signed_in(page, edges.key)
    page.goto(f"{url}/#/apps/edges/datasets/{LONG_ID}")
    expect(page.get_by_test_id("create-version")).to_be_visible()

    # "Skip to content" from the keyboard focuses the page, not a route named "main".
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    assert page.url.endswith(f"#/apps/edges/datasets/{LONG_ID}")

    # Nothing uploaded yet: "Create version" says so and how to upload, and makes no FAILURE version.
    page.get_by_test_id("create-version").click()
    expect(page.get_by_test_id("create-version-error")).to_contain_text(f"dataset '{LONG_ID}' has no inputs")
    expect(page.get_by_test_id("create-version-error")).to_contain_text("upload a file to it first")

    # While a file uploads, a second drop adds nothing: every upload appends its rows to the dataset.
    held: list[Route] = []
    page.route(re.compile(r"/uploads\?"), lambda route: held.append(route))
    name = "reviews-" + "x" * 200 + ".txt"  # a long file name, unbroken
    text = "\n".join(sentiment_lines()) + "\n"
    (tmp_path / name).write_text(text, encoding="utf-8")
    page.get_by_test_id("upload-input").set_input_files(tmp_path / name)
    expect(page.get_by_test_id("upload-input")).to_be_disabled()
    page.evaluate(DROP_FILE, [name, text])
    expect(page.locator("#toast")).to_contain_text("is still uploading")
    assert len(held) == 1
    held[0].continue_()
    page.unroute(re.compile(r"/uploads\?"))
    expect(page.get_by_test_id("valid-count")).to_have_text("48")
    expect(page.get_by_test_id("upload-input")).to_be_enabled()
    total = httpx.get(f"{datasets}/{LONG_ID}/inputs?limit=1", headers=headers).json()["total"]
    assert total == 48, f"the second drop was uploaded too: {total} inputs"

    # Long ids and file names wrap instead of widening the page, on a laptop and on a phone.
    assert page_width(page) <= 1280
    page.set_viewport_size(PHONE_VIEWPORT)  # type: ignore[arg-type]
    assert page_width(page) <= PHONE_VIEWPORT["width"]
    page.set_viewport_size({"width": 1280, "height": 800})

    # A refused file is named in the message (the report below is still the earlier file's).
    (tmp_path / "huge.txt").write_text(text * 800, encoding="utf-8")  # over the test server's 1 MiB
    page.get_by_test_id("upload-input").set_input_files(tmp_path / "huge.txt")
    expect(page.get_by_test_id("upload-error")).to_contain_text("'huge.txt' was not uploaded: upload larger than")

    # A button pressed from the keyboard keeps the focus once its request is done.
    page.get_by_test_id("create-version").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("versions-table").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("create-version")).to_be_focused()
    assert not errors, "\n".join(errors)


def test_cancel_says_it_is_cancelling_and_a_run_that_ended_meanwhile_shows_how(
    edges: Edges, browser_page: Page
) -> None:
    db = server_database(edges.data_dir)
    page = browser_page
    errors = watch_errors(page, expected_statuses=(409, 503))
    signed_in(page, edges.key)
    version_page = f"{edges.url}/#/apps/{edges.app_id}/models/{edges.model_id}/versions"
    run = unfinished_version(db, edges.app_id, edges.model_id, edges.dataset_version_id, fail=False)
    page.goto(f"{version_page}/{run}")
    expect(page.get_by_test_id("status-name")).to_have_text("MODEL_TRAINING")

    # A training run stops within a heartbeat: until then the button says so and cannot be pressed again.
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("cancel")).to_have_text("Cancelling…")
    expect(page.get_by_test_id("cancel")).to_be_disabled()
    expect(page.get_by_test_id("progress-text")).to_contain_text("cancel requested")
    jobs.finish(db, run, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled by the user", worker_id=WORKER_ID)
    expect(page.get_by_test_id("status-name")).to_have_text("MODEL_TRAINING_CANCELLED")
    expect(page.get_by_test_id("cancel")).to_be_hidden()

    # A page that missed the end (no live updates) is told how it ended, and shows that.
    page.route(
        re.compile(r"/events(\?|$)"), lambda route: route.fulfill(status=503, json={"message": "a proxy hiccup"})
    )
    run = unfinished_version(db, edges.app_id, edges.model_id, edges.dataset_version_id, fail=False)
    page.goto(f"{version_page}/{run}")
    expect(page.get_by_test_id("status-name")).to_have_text("MODEL_TRAINING")
    jobs.finish(db, run, TrainingStatus.MODEL_TRAINING_FAILED, "ran out of memory (test)", worker_id=WORKER_ID)
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("cancel-error")).to_contain_text("has already ended as MODEL_TRAINING_FAILED")
    expect(page.get_by_test_id("status-name")).to_have_text("MODEL_TRAINING_FAILED")
    expect(page.get_by_test_id("status-message")).to_have_text("ran out of memory (test)")
    expect(page.get_by_test_id("cancel")).to_be_hidden()
    assert not errors, "\n".join(errors)


def test_a_dataset_version_a_run_trains_on_is_refused_naming_the_run_then_run_and_version_are_deleted(
    edges: Edges, browser_page: Page
) -> None:
    db = server_database(edges.data_dir)
    data = ready_dataset_version(edges.url, edges.headers, edges.app_id, "in-use")
    run = unfinished_version(db, edges.app_id, edges.model_id, data, fail=False)  # held MODEL_TRAINING by the test
    page = browser_page
    errors = watch_errors(page, expected_statuses=(409,))
    asked = answer_confirms(page, True, True, True, True)
    signed_in(page, edges.key)
    page.goto(f"{edges.url}/#/apps/{edges.app_id}/datasets/in-use")
    page.get_by_role("button", name=f"Delete version {data}").click()
    expect(page.get_by_test_id("delete-version-error")).to_contain_text(f"run '{run}' (MODEL_TRAINING) trains on")
    expect(page.get_by_test_id(f"delete-version-{data}")).to_be_enabled()
    assert asked == [f"Delete version '{data}' of dataset 'in-use' and its snapshot? {KEEP_WORKING}"]

    # the run's own page refuses too while it trains; once it ended, its delete goes back to the model's list
    page.goto(f"{edges.url}/#/apps/{edges.app_id}/models/{edges.model_id}/versions/{run}")
    page.get_by_test_id("delete-version").click()
    expect(page.get_by_test_id("delete-version-error")).to_contain_text("is training; cancel it before deleting it")
    jobs.finish(db, run, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled by the user", worker_id=WORKER_ID)
    expect(page.get_by_test_id("status-name")).to_have_text("MODEL_TRAINING_CANCELLED")
    page.get_by_test_id("delete-version").click()
    expect(page).to_have_url(re.compile(rf"#/apps/{edges.app_id}/models/{edges.model_id}$"))
    expect(page.get_by_test_id("delete-model")).to_be_visible()  # the model's page, its versions listed below
    expect(page.locator('[data-testid^="model-versions-table"]')).to_be_visible()
    expect(page.get_by_role("link", name=run)).to_have_count(0)
    assert asked[-1] == f"Delete version '{run}' of model '{edges.model_id}' with its trained weights and checkpoints?"

    page.goto(f"{edges.url}/#/apps/{edges.app_id}/datasets/in-use")
    page.get_by_test_id(f"delete-version-{data}").click()
    expect(page.get_by_test_id("versions-table-empty")).to_be_visible()
    expect(page.get_by_test_id("delete-version-error")).to_have_count(0)
    versions = f"{edges.url}/api/apps/{edges.app_id}/datasets/in-use/versions"
    assert httpx.get(f"{versions}/{data}", headers=edges.headers).status_code == 404
    assert not (edges.data_dir / "dataset-versions" / f"{data}.jsonl").exists()
    assert not errors, "\n".join(errors)


def test_deleting_a_dataset_asks_first_and_goes_back_to_the_datasets(edges: Edges, browser_page: Page) -> None:
    ready_dataset_version(edges.url, edges.headers, edges.app_id, "mistake")
    page = browser_page
    errors = watch_errors(page)
    signed_in(page, edges.key)
    page.goto(f"{edges.url}/#/apps/{edges.app_id}/datasets/mistake")
    dataset = f"{edges.url}/api/apps/{edges.app_id}/datasets/mistake"

    asked = answer_confirms(page, False, True)
    page.get_by_test_id("delete-dataset").click()  # "Cancel" in the dialog: nothing goes
    assert httpx.get(dataset, headers=edges.headers).status_code == 200
    expect(page.get_by_test_id("delete-dataset")).to_be_enabled()
    page.get_by_test_id("delete-dataset").click()
    expect(page).to_have_url(re.compile(rf"#/apps/{edges.app_id}/datasets$"))
    expect(page.get_by_test_id("datasets-table")).to_be_visible()
    expect(page.get_by_role("link", name="mistake", exact=True)).to_have_count(0)
    assert asked == ["Delete dataset 'mistake' with its inputs, uploaded files and all its versions?"] * 2
    assert httpx.get(dataset, headers=edges.headers).status_code == 404
    assert not errors, "\n".join(errors)
