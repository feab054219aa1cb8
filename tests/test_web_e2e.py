"""The web console end to end in real headless Chromium against a real `tuneloom serve` with its worker.

The flow a user goes through: sign in with a key, create an app, a dataset, upload a file with two
broken rows and see them reported, snapshot a version, add a model from `tiny-random`, train it and
watch it reach MODEL_TRAINED with its loss chart drawn, generate (streamed and several inputs at
once, and a stream stopped half way), train a second version with other settings and compare the two.
Every page is photographed (`test-artifacts/screenshots/<test>/`), every request must stay on the
server's origin (no CDN), and each page's weight on a cold load is printed.

The console reads and writes only through the API, so the flow runs on SQLite alone (`server_on_sqlite`);
the API's storage runs on both databases in its own modules. The whole flow takes well under a minute
(two tiny-random runs).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, Page, Route, expect
from tests.conftest import INSTRUCTION, api_key, sentiment_lines
from tests.hostile.corpus import get
from tests.server_helpers import server_on_sqlite  # noqa: F401  (the module's `server`)
from tests.web_support import KEY_STORAGE, PHONE_VIEWPORT, NetworkLog, Screenshots, cold_load, watch_errors

BROKEN = [
    (4, "### Instruction: no answer section here ### Human: hello"),
    (21, "### Human: where is the rest ### Assistant:"),
]
TRAIN_TIMEOUT_MS = 180_000
PROMPT = f"### Instruction: {INSTRUCTION} ### Human: I love it ### Assistant:"


def upload_file(folder: Path) -> Path:
    """48 valid examples and the two broken ones above (4%: within the default 5% tolerance)."""
    lines = sentiment_lines()
    for line_number, text in BROKEN:
        lines.insert(line_number - 1, text)
    path = folder / "reviews.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def set_trainer_config(page: Page, **overrides: Any) -> None:
    """Edit the trainer_config JSON editor: the template's defaults with `overrides` on top."""
    editor = page.get_by_test_id("setting-trainer_config")
    expect(editor).not_to_have_value("")
    config = json.loads(editor.input_value() or "{}")
    config.update(overrides)
    editor.fill(json.dumps(config, indent=2))


def wait_trained(page: Page) -> None:
    status = page.get_by_test_id("status-name")
    expect(status).to_have_text(re.compile(r"MODEL_TRAINED$|FAILED|INVALID|CANCELLED"), timeout=TRAIN_TIMEOUT_MS)
    expect(status).to_have_text("MODEL_TRAINED")
    expect(page.get_by_test_id("status-code")).to_contain_text("21100")


def new_model_form(page: Page, *, model_id: str | None, **trainer_config: Any) -> None:
    """Fill the "Add model" form (Text Generator, dataset and its version, tiny-random) and press Train."""
    if model_id is not None:
        page.get_by_test_id("type-text-to-text").click()
        page.get_by_label("Model id", exact=True).fill(model_id)
    expect(page.get_by_test_id("dataset-version")).not_to_have_value("")
    if page.get_by_test_id("template").is_enabled():
        page.get_by_test_id("template").select_option("tiny-random")
    expect(page.get_by_test_id("template-info")).to_contain_text("tiny")
    # Editing before the chosen template's defaults arrive would be overwritten; the editors say so.
    expect(page.get_by_test_id("settings-status")).to_have_text("Settings are the template's defaults.")
    set_trainer_config(page, **trainer_config)
    expect(page.get_by_test_id("setting-trainer_config-error")).to_be_empty()


def test_whole_flow_in_chromium(
    server: tuple[str, Path],
    chromium: Browser,
    browser_page: Page,
    screenshots: Screenshots,
    network: NetworkLog,
    tmp_path: Path,
) -> None:
    url, data_dir = server
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    page = browser_page
    errors = watch_errors(page)
    started = time.monotonic()
    key = api_key(data_dir)

    # Sign in.
    page.goto(url)
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    screenshots.take(page, "01-sign-in")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_role("heading", name="Apps")).to_be_visible()

    # Create an app; it opens on its datasets.
    page.get_by_label("App id", exact=True).fill("shop")
    page.get_by_test_id("create-app").click()
    expect(page).to_have_url(re.compile(r"#/apps/shop/datasets$"))
    expect(page.get_by_test_id("nav-datasets")).to_be_visible()
    page.get_by_label("Dataset id", exact=True).fill("reviews")
    page.get_by_test_id("create-dataset").click()
    expect(page).to_have_url(re.compile(r"#/apps/shop/datasets/reviews$"))

    # Upload a file with two broken rows: both reported, with their line numbers and reasons.
    page.get_by_test_id("upload-input").set_input_files(upload_file(tmp_path))
    report = page.get_by_test_id("upload-report")
    expect(report).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("valid-count")).to_contain_text("48")
    expect(page.get_by_test_id("invalid-count")).to_contain_text("2")
    expect(page.get_by_test_id("tolerance-verdict")).to_contain_text("Within tolerance")
    invalid_rows = page.get_by_test_id("invalid-rows").locator("tbody tr")
    expect(invalid_rows).to_have_count(2)
    for row, (line_number, _) in zip(invalid_rows.all(), BROKEN, strict=True):
        expect(row.locator("td").first).to_have_text(str(line_number))
    expect(invalid_rows.nth(0)).to_contain_text("Assistant")
    expect(page.get_by_test_id("preview").get_by_test_id("example").first).to_be_visible()
    screenshots.take(page, "02-dataset-upload-report")

    # Snapshot a dataset version.
    page.get_by_test_id("create-version").click()
    versions = page.get_by_test_id("versions-table").locator("tbody tr")
    expect(versions).to_have_count(1, timeout=30_000)
    expect(versions.first).to_contain_text("READY")
    screenshots.take(page, "03-dataset-version")

    # Models → Add model → Text Generator from tiny-random, a short run.
    page.get_by_test_id("nav-models").click()
    expect(page.get_by_test_id("add-model")).to_be_visible()
    screenshots.take(page, "04-models-empty")
    page.get_by_test_id("add-model").click()
    new_model_form(
        page, model_id="sentiment-gen", num_train_epochs=3, per_device_train_batch_size=8, learning_rate=0.05
    )
    screenshots.take(page, "05-new-model")
    page.get_by_test_id("train").click()
    expect(page).to_have_url(re.compile(r"#/apps/shop/models/sentiment-gen/versions/[a-z0-9]+$"), timeout=30_000)
    first_version = page.url.rsplit("/", 1)[-1]
    screenshots.take(page, "06-version-training")

    # Watch it train: MODEL_TRAINED, a loss chart with a drawn path of several points, metrics.
    wait_trained(page)
    train_path = page.get_by_test_id("loss-chart").locator('path[data-series="train loss"]')
    expect(train_path).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+){2,}"))
    expect(page.get_by_test_id("metrics")).to_contain_text("train")
    screenshots.take(page, "07-version-trained")

    # Download it as one GGUF file for llama.cpp: a plain browser download of the zip the server built.
    page.get_by_label("Format", exact=True).select_option("gguf-q8_0")
    with page.expect_download(timeout=60_000) as started_download:
        page.get_by_test_id("export-download").click()
    download = started_download.value
    assert download.suggested_filename == f"sentiment-gen-{first_version}-gguf-q8_0.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    expect(page.get_by_test_id("export-sha256")).to_have_text(hashlib.sha256(saved.read_bytes()).hexdigest())
    with zipfile.ZipFile(saved) as packed:
        names = {name.split("/", 1)[1] for name in packed.namelist()}
    assert {"model.gguf", "Modelfile", "README.md"} <= names
    screenshots.take(page, "07-version-downloaded")

    # Generate from the version page: one input streams piece by piece.
    page.get_by_test_id("generate-link").click()
    expect(page).to_have_url(re.compile(r"#/apps/shop/generate\?"))
    expect(page.get_by_test_id("gen-version")).to_have_value(first_version)
    page.get_by_label("Inputs", exact=True).fill(PROMPT)
    page.get_by_label("max_tokens", exact=True).fill("24")
    page.get_by_test_id("generate").click()
    output = page.get_by_test_id("gen-output")
    expect(output).to_have_attribute("data-done", "true", timeout=60_000)
    assert int(output.get_attribute("data-pieces") or 0) >= 2, "the output did not arrive in pieces"
    assert output.inner_text().strip(), "no text was generated"
    expect(page.get_by_test_id("gen-status")).to_contain_text(f"version {first_version}")
    screenshots.take(page, "08-generate-streamed")

    # Several inputs at once, from the keyboard (Ctrl+Enter in the inputs): one row each.
    page.get_by_label("Inputs", exact=True).fill("great product, works well\nawful quality\nreally nice")
    page.get_by_label("Inputs", exact=True).press("Control+Enter")
    expect(page.get_by_test_id("gen-results").locator("tbody tr")).to_have_count(3, timeout=60_000)
    screenshots.take(page, "09-generate-several")

    # Two parameters out of range: the server's own message names both, and both fields are marked.
    page.get_by_label("temperature", exact=True).fill("9")
    page.get_by_label("max_tokens", exact=True).fill("0")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("gen-error")).to_contain_text("'temperature' must be between 0 and 5")
    expect(page.get_by_test_id("gen-error")).to_contain_text("'max_tokens' must be between 1 and 4096")
    for name in ("temperature", "max_tokens"):
        expect(page.get_by_label(name, exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("max_tokens", exact=True)).to_be_focused()  # the first the server names
    page.get_by_label("temperature", exact=True).fill("0")
    page.get_by_label("max_tokens", exact=True).fill("24")
    # An input blank to the server (U+001F is whitespace to Python): its line named, the box marked.
    page.get_by_label("Inputs", exact=True).fill("great product\n\n\x1f\nawful quality")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("gen-error")).to_contain_text("'inputs.1' is empty or only whitespace")
    expect(page.get_by_test_id("gen-error")).to_contain_text("(line 3 of Inputs)")
    expect(page.get_by_label("Inputs", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("temperature", exact=True)).not_to_have_attribute("aria-invalid", "true")

    # A long stream stopped half way with the Stop button.
    page.get_by_label("Inputs", exact=True).fill(PROMPT)
    page.get_by_label("max_tokens", exact=True).fill("1000")  # with its prompt, tiny-random's whole context
    page.get_by_test_id("generate").click()
    expect(output).to_have_attribute("data-pieces", re.compile(r"^([3-9]|\d\d+)$"), timeout=60_000)
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("gen-status")).to_have_text("Stopped.")
    expect(output).to_have_attribute("data-done", "stopped")
    expect(page.get_by_test_id("generate")).to_be_enabled()

    # A second version with other settings, from the model's page.
    page.goto(f"{url}/#/apps/shop/models/sentiment-gen")
    expect(page.get_by_test_id("model-versions-table").locator("tbody tr")).to_have_count(1)
    screenshots.take(page, "10-model")
    expect(page.get_by_test_id("train-new-version")).to_be_visible()
    # ... trained again from the first version's weights (its template fixed), with other settings.
    page.goto(f"{url}/#/apps/shop/models/sentiment-gen/versions/{first_version}")
    page.get_by_test_id("train-again").click()
    expect(page.get_by_test_id("resume-note")).to_contain_text(first_version)
    expect(page.get_by_test_id("template")).to_be_disabled()
    new_model_form(page, model_id=None, num_train_epochs=2, per_device_train_batch_size=8, learning_rate=0.02)
    page.get_by_test_id("train").click()
    expect(page).to_have_url(re.compile(r"/versions/(?!" + first_version + r")[a-z0-9]+$"), timeout=30_000)
    second_version = page.url.rsplit("/", 1)[-1]
    wait_trained(page)

    # Compare the two: settings that differ are highlighted, metrics, both curves, a prompt each.
    page.get_by_test_id("compare-link").click()
    expect(page).to_have_url(re.compile(r"#/apps/shop/compare"))
    expect(page.get_by_test_id(f"pick-{first_version}")).to_be_checked()
    expect(page.get_by_test_id(f"pick-{second_version}")).to_be_checked()
    settings = page.get_by_test_id("compare-settings")
    for key in ("trainer_config.learning_rate", "trainer_config.num_train_epochs"):
        row = settings.locator("tr.differs", has=page.locator("th", has_text=re.compile(f"^{re.escape(key)}$")))
        expect(row).to_have_count(1)
        expect(row.locator("td.diff")).to_have_count(2)
    same = settings.locator("tr", has=page.locator("th", has_text=re.compile(r"^template$")))
    expect(same.locator("td.diff")).to_have_count(0)
    page.get_by_test_id("only-diffs").check()
    expect(settings.locator("tbody tr:not(.differs)")).to_have_count(0)
    expect(page.get_by_test_id("compare-metrics")).to_contain_text("train loss")
    curves = page.get_by_test_id("compare-chart").locator("path[data-series]")
    expect(curves).to_have_count(4)  # train and eval loss of each version
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("max_tokens", exact=True).fill("12")
    page.get_by_test_id("compare-generate").click()
    for version in (first_version, second_version):
        box = page.get_by_test_id(f"compare-output-{version}")
        expect(box).to_have_attribute("data-done", "true", timeout=60_000)
        expect(box.locator("pre")).not_to_be_empty()
    screenshots.take(page, "11-compare")

    page.set_viewport_size(PHONE_VIEWPORT)  # type: ignore[arg-type]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    screenshots.take(page, "12-compare-phone")
    page.goto(f"{url}/#/apps/shop/generate")
    expect(page.get_by_test_id("generate")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    screenshots.take(page, "13-generate-phone")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{url}/#/apps")
    expect(page.get_by_role("link", name="shop", exact=True).first).to_be_visible()
    screenshots.take(page, "14-apps")
    page.goto(f"{url}/#/apps/shop/datasets")
    expect(page.get_by_role("link", name="reviews", exact=True).first).to_be_visible()
    screenshots.take(page, "15-datasets")
    flow_s = time.monotonic() - started

    # Every page again on a cold load (a fresh context: nothing cached): its weight, and no other origin.
    pages = {
        "sign-in": "",
        "apps": "#/apps",
        "datasets": "#/apps/shop/datasets",
        "dataset": "#/apps/shop/datasets/reviews",
        "models": "#/apps/shop/models",
        "new model": "#/apps/shop/models/new",
        "model": "#/apps/shop/models/sentiment-gen",
        "version": f"#/apps/shop/models/sentiment-gen/versions/{first_version}",
        "generate": "#/apps/shop/generate",
        "compare": f"#/apps/shop/compare?versions=sentiment-gen/{first_version},sentiment-gen/{second_version}",
    }
    print(f"\nthe flow took {flow_s:.0f} s; page weights on a cold load (response bodies as transferred, bytes):")
    loads = []
    for name, fragment in pages.items():
        storage = {KEY_STORAGE: key} if fragment else None
        load, origins = cold_load(chromium, f"{url}/{fragment}", session_storage=storage)
        assert origins == {origin}, f"{name} asked another origin: {origins}"
        loads.append((load.bytes, name, load))
        print(f"  {name:<10} {load.bytes:>8} bytes in {load.responses} responses")
    heaviest_bytes, heaviest_name, _ = max(loads)
    print(f"largest page: {heaviest_name} — {heaviest_bytes} bytes")
    assert heaviest_bytes < 512 * 1024, "a page of the console weighs more than 512 KiB"

    assert network.origins() == {origin}, f"requests left the server's origin: {network.origins()}"
    assert not errors, "\n".join(errors)


def test_without_a_key_nothing_of_any_app_is_shown(
    server: tuple[str, Path],
    browser_page: Page,
    screenshots: Screenshots,
    network: NetworkLog,
) -> None:
    url, data_dir = server
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    secret = "secret-app-1234"
    assert httpx.post(f"{url}/api/apps", json={"id": secret}, headers=admin).status_code == 201

    # The HTML itself carries no app data, and the API refuses a request without a key.
    html = httpx.get(url).text
    assert secret not in html and "shop" not in html
    assert httpx.get(f"{url}/api/apps").status_code == 401
    assert httpx.get(f"{url}/api/apps/{secret}").status_code == 401

    page = browser_page
    errors = watch_errors(page, expected_statuses=(401,))
    for fragment in ("", "#/apps", f"#/apps/{secret}/datasets", f"#/apps/{secret}/generate"):
        load = network.weigh(page, f"{url}/{fragment}")
        expect(page.get_by_label("API key", exact=True)).to_be_visible()
        expect(page.get_by_test_id("sign-in")).to_be_visible()
        assert secret not in page.content()
        assert page.locator("#sidebar").is_hidden()
        print(f"sign-in page at '{fragment or '/'}': {load.bytes} bytes")
    screenshots.take(page, "01-no-key")

    # A wrong key is refused and still shows nothing.
    page.get_by_label("API key", exact=True).fill("tl_not_a_real_key")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("sign-in-error")).to_be_visible()
    assert secret not in page.content()
    screenshots.take(page, "02-wrong-key")

    api_answers = [r for r in network.responses if urlsplit(r.url).path.startswith("/api/")]
    assert all(r.status == 401 for r in api_answers), [(r.url, r.status) for r in api_answers]
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    assert network.origins() == {origin}
    assert not errors, "\n".join(errors)


def app_made(server: tuple[str, Path], app_id: str) -> tuple[str, str]:
    """The server's URL and an admin key, with app `app_id` made."""
    url, data_dir = server
    key = api_key(data_dir)
    response = httpx.post(f"{url}/api/apps", json={"id": app_id}, headers={"Authorization": f"Key {key}"})
    assert response.status_code == 201, response.text
    return url, key


# Through the browser: what each file must make the dataset page show (a message, or its report).
WEB_FILES = {
    "noise.bin": "looks binary",
    "zip-renamed.csv": "is a zip archive",
    "over-limit.txt": "1,048,576-byte limit",
    "script-bidi.txt": None,
    "crlf.txt": None,
}


def test_uploader_shows_each_hostile_files_verdict_and_keeps_its_text_as_text(
    server: tuple[str, Path],
    browser_page: Page,
    tmp_path: Path,
) -> None:
    """A few files of tests/hostile/ through the dataset page: its message or its report, and no script runs."""
    url, key = app_made(server, "hostile")
    headers = {"Authorization": f"Key {key}"}
    assert httpx.post(f"{url}/api/apps/hostile/datasets", json={"id": "web"}, headers=headers).status_code == 201
    page = browser_page
    errors = watch_errors(page, expected_statuses=(413, 422))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
    page.goto(f"{url}/#/apps/hostile/datasets/web")
    expect(page).to_have_title("Dataset web · tuneloom")

    for name, refusal in WEB_FILES.items():
        hostile = get(name)
        page.get_by_test_id("upload-input").set_input_files(hostile.write(tmp_path))
        if refusal is not None:
            box = page.get_by_test_id("upload-error")
            expect(box).to_contain_text(refusal, timeout=30_000)
            if hostile.verdict.refused:
                expect(box).to_contain_text(f"'{name}'")
            continue
        expect(page.get_by_test_id("upload-report").get_by_role("heading")).to_contain_text(name, timeout=30_000)
        expect(page.get_by_test_id("upload-error")).to_have_count(0)
        valid, invalid = hostile.verdict.rows or (0, 0)
        expect(page.get_by_test_id("valid-count")).to_have_text(str(valid))
        expect(page.get_by_test_id("invalid-count")).to_have_text(str(invalid))
        if name == "script-bidi.txt":  # `<script>`, bidi overrides, escape sequences: shown as text, never run
            excerpt = page.get_by_test_id("invalid-rows").locator("tbody tr").first
            expect(excerpt).to_contain_text("<script>document.title='pwned'</script>")
            expect(excerpt).to_contain_text("\\u202e")  # the override is escaped: the row reads as written
            expect(page.get_by_test_id("preview")).to_contain_text("<img src=x onerror=alert(1)>")

    assert page.locator("#main script, #main img").count() == 0
    expect(page).to_have_title("Dataset web · tuneloom")  # the data's `document.title='pwned'` never ran
    assert not dialogs, dialogs
    assert not errors, "\n".join(errors)


def test_template_defaults_never_overwrite_a_later_choice_or_typing(
    server: tuple[str, Path],
    browser_page: Page,
) -> None:
    """The editors stay read-only until the chosen template's defaults arrive, and a slower answer
    for the template chosen before never replaces them (CI once typed into an editor mid-load)."""
    url, key = app_made(server, "order")
    page = browser_page
    errors = watch_errors(page)
    held: list[Route] = []
    page.route(re.compile(r"/api/template-params\?template=smollm2"), lambda route: held.append(route))
    page.context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
    page.goto(f"{url}/#/apps/order/models/new")
    page.get_by_test_id("type-text-to-text").click()
    editor = page.get_by_test_id("setting-trainer_config")
    expect(page.get_by_test_id("settings-status")).to_have_text("Loading the template's defaults…")
    expect(editor).not_to_be_editable()
    assert len(held) == 1, "the first template's defaults were not asked for"

    page.get_by_test_id("template").select_option("tiny-random")
    expect(page.get_by_test_id("settings-status")).to_have_text("Settings are the template's defaults.")
    expect(editor).to_be_editable()
    tiny = json.loads(editor.input_value())
    assert tiny["learning_rate"] == 0.01, tiny

    with page.expect_response(re.compile(r"/api/template-params\?template=smollm2")):
        held[0].continue_()
    page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 100))")  # let the late answer be handled
    assert json.loads(editor.input_value()) == tiny
    expect(page.get_by_test_id("settings-status")).to_have_text("Settings are the template's defaults.")
    expect(editor).to_be_editable()
    assert not errors, "\n".join(errors)


def test_each_refused_setting_shows_under_its_own_editor(server: tuple[str, Path], browser_page: Page) -> None:
    """Two settings wrong at once, one of them twice: the server names all three, and each editor shows
    its own messages, one line each."""
    url, key = app_made(server, "refusals")
    page = browser_page
    errors = watch_errors(page)
    page.context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
    page.goto(f"{url}/#/apps/refusals/models/new")
    page.get_by_test_id("type-text-to-text").click()
    page.get_by_test_id("template").select_option("tiny-random")
    expect(page.get_by_test_id("settings-status")).to_have_text("Settings are the template's defaults.")

    set_trainer_config(page, learning_rte=0.1, num_train_epochs=-1)
    peft = page.get_by_test_id("setting-peft_config")
    peft.fill(json.dumps({**json.loads(peft.input_value()), "r": "eight"}))
    trainer_error = page.get_by_test_id("setting-trainer_config-error")
    expect(trainer_error).to_contain_text("trainer_config.learning_rte is not a TrainingArguments setting")
    expect(trainer_error).to_contain_text("Did you mean 'learning_rate'?")
    expect(trainer_error.locator(".field-error-line")).to_have_count(2)
    expect(trainer_error).to_contain_text("trainer_config.num_train_epochs must be greater than 0")
    expect(trainer_error).not_to_contain_text("peft_config")
    expect(page.get_by_test_id("setting-peft_config-error")).to_have_text(
        'peft_config.r must be a whole number (got "eight")'
    )
    for name in ("trainer_config", "peft_config"):
        expect(page.get_by_test_id(f"setting-{name}")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("setting-model_config")).not_to_have_attribute("aria-invalid", "true")
    assert not errors, "\n".join(errors)
