"""The web console at the sizes real users reach: 50,000 inputs, sixty versions of a model, a run
with 20,000 loss points and 20,000 log lines, a generation of 2,000 tokens.

Real headless Chromium against a real `tuneloom serve` started without a worker: every run here is
made and fed by the test through the store, as a worker would (`tuneloom.store.telemetry`), so a
long run takes a second to fake instead of hours to train. Each test would have failed before the
console read bounded pages of what it shows: it fetched every loss point and replayed every log
line (20,000 of each took minutes, a layout per line), listed sixty versions with no way to find
one, and let a long generation grow the page below the fold.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Request, expect
from tests.conftest import api_key, sentiment_lines
from tests.server_helpers import WORKER_ID, enqueue, ready_dataset_version, server_database, unfinished_version
from tests.web_support import signed_in, watch_errors

from tuneloom.store import jobs, registry, telemetry
from tuneloom.store.db import Database
from tuneloom.store.models import TrainingStatus

pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
SERVER_ARGS = ["--workers", "0", "--max-upload-mb", "16"]  # the test plays the worker

APP = "scale"
INPUTS = 50_000
VERSIONS = 60
STEPS = 20_000
LINES = 20_000
CHART_POINTS = 1000  # static/chart.js: points per series the console reads for a chart
MAX_LOG_LINES = 1000  # static/pages/run_live.js: log lines kept on the page
SPIKE_STEP, LAST_LOSS = 7_777, 0.123456
TEXTS = "nodes => nodes.map((n) => n.textContent)"  # an SVG <text> has no innerText
STREAMED = 2_000  # tokens of one generation
MEASURE_BOX = """o => ({text: o.textContent, nodes: o.childNodes.length, height: o.clientHeight, tall: o.scrollHeight,
  scrolled: o.scrollHeight - o.scrollTop - o.clientHeight})"""


@dataclass(frozen=True)
class Scale:
    url: str
    key: str
    db: Database
    versions: list[str]  # of model "many", oldest first
    long_run: str  # of model "long": MODEL_TRAINING, held by the test

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}


@pytest.fixture(scope="module")
def scale(server: tuple[str, Path]) -> Iterator[Scale]:
    url, data_dir = server
    key = api_key(data_dir)
    headers = {"Authorization": f"Key {key}"}
    db = server_database(data_dir)
    assert httpx.post(f"{url}/api/apps", json={"id": APP}, headers=headers).status_code == 201
    datasets = f"{url}/api/apps/{APP}/datasets"
    assert httpx.post(datasets, json={"id": "huge"}, headers=headers).status_code == 201
    lines = sentiment_lines(1)
    text = "\n".join(lines[n % len(lines)].replace("(0)", f"({n})") for n in range(INPUTS)) + "\n"
    uploaded = httpx.post(f"{datasets}/huge/uploads", content=text.encode(), headers=headers, timeout=60)
    assert uploaded.json()["valid_rows"] == INPUTS, uploaded.text
    dataset_version = ready_dataset_version(url, headers, APP, "small")
    for model in ("many", "long"):
        assert httpx.post(f"{url}/api/apps/{APP}/models", json={"id": model}, headers=headers).status_code == 201
    versions = [trained_version(db, "many", dataset_version) for _ in range(VERSIONS)]
    long_run = unfinished_version(db, APP, "long", dataset_version, fail=False)
    feed_long_run(db, long_run)
    yield Scale(url, key, db, versions, long_run)
    db.dispose()


def trained_version(db: Database, model: str, dataset_version: str) -> str:
    """A MODEL_TRAINED version made as a worker would end one (no weights: nothing here generates from it)."""
    job = enqueue(db, APP, model, dataset_version)
    claimed = jobs.claim_next(db, WORKER_ID, lease_seconds=3600)
    assert claimed is not None and claimed.id == job.id
    jobs.finish(db, job.id, TrainingStatus.MODEL_TRAINED, artifact_path=f"model-versions/{job.id}", worker_id=WORKER_ID)
    return job.id


def loss_at(step: int) -> float:
    if step == SPIKE_STEP:
        return 9.0
    return LAST_LOSS if step == STEPS else 0.3 + 2.5 * math.exp(-step / 4000) + 0.05 * math.sin(step)


def feed_long_run(db: Database, run: str) -> None:
    points = [{"step": s, "loss": loss_at(s)} for s in range(1, STEPS + 1)]
    for point in points[499::500]:
        point["eval_loss"] = point["loss"] + 0.1
    telemetry.add_metrics(db, run, points)
    telemetry.append_logs(db, run, [("info", f"line {n} of the long run") for n in range(1, LINES + 1)])
    jobs.heartbeat(db, run, WORKER_ID, 3600, step=STEPS, total_steps=2 * STEPS, eta_s=3600)


def api_requests(page: Page) -> list[Request]:
    requests: list[Request] = []
    page.on("request", lambda request: "/api/" in request.url and requests.append(request))
    return requests


def test_the_inputs_preview_pages_through_fifty_thousand_five_at_a_time(scale: Scale, browser_page: Page) -> None:
    page = browser_page
    errors = watch_errors(page)
    requests = api_requests(page)
    signed_in(page, scale.key)
    page.goto(f"{scale.url}/#/apps/{APP}/datasets/huge")
    expect(page.get_by_test_id("preview-range")).to_have_text("Examples 1–5 of 50,000.")
    expect(page.get_by_test_id("example")).to_have_count(5)
    expect(page.get_by_test_id("preview-previous")).to_be_disabled()

    page.get_by_test_id("preview-next").click()
    page.get_by_test_id("preview-next").click()
    expect(page.get_by_test_id("preview-range")).to_have_text("Examples 11–15 of 50,000.")
    expect(page.get_by_test_id("example").first).to_have_attribute("aria-label", "Example from line 11")
    expect(page.get_by_test_id("example").first).to_contain_text("(10)")  # the file's 11th line

    # From the keyboard: Previous back to the first page, where it is disabled and the focus moves on.
    page.get_by_test_id("preview-previous").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("preview-range")).to_have_text("Examples 6–10 of 50,000.")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("preview-range")).to_have_text("Examples 1–5 of 50,000.")
    expect(page.get_by_test_id("preview-next")).to_be_focused()
    inputs = [r.url for r in requests if "/inputs" in r.url]
    assert len(inputs) == 5 and all("limit=5" in u for u in inputs), inputs
    assert not errors, "\n".join(errors)


def test_sixty_versions_are_newest_first_and_found_by_a_filter_on_every_page(scale: Scale, browser_page: Page) -> None:
    page = browser_page
    errors = watch_errors(page)
    requests = api_requests(page)
    signed_in(page, scale.key)
    newest_first, wanted = scale.versions[::-1], scale.versions[17]

    page.goto(f"{scale.url}/#/apps/{APP}/models/many")
    rows = page.get_by_test_id("model-versions-table").locator("tbody tr")
    expect(rows).to_have_count(VERSIONS)
    assert rows.locator("td:first-child").all_inner_texts() == newest_first
    pages = [r.url for r in requests if re.search(r"/models/many/versions(\?|$)", r.url)]
    assert len(pages) == 2 and "before=" in pages[1], pages  # the API's pages of 50, the second by its Link
    page.get_by_label("Filter versions", exact=True).fill(wanted)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(wanted)
    expect(page.get_by_test_id("versions-count")).to_have_text(f"1 of {VERSIONS} versions match.")

    # Generate: the picker lists them newest first, and the filter picks the only match.
    page.goto(f"{scale.url}/#/apps/{APP}/generate?model=many")
    picker = page.get_by_test_id("gen-version")
    expect(picker).to_be_enabled()
    assert picker.locator("option").evaluate_all("os => os.map(o => o.value)") == ["", *newest_first]
    page.get_by_label("Filter versions", exact=True).fill(wanted)
    expect(picker).to_have_value(wanted)
    assert picker.locator("option").evaluate_all("os => os.filter(o => !o.hidden).map(o => o.value)") == ["", wanted]
    expect(page.locator("#gen-version-help")).to_contain_text(f"1 of {VERSIONS} versions match: {wanted} is picked")

    # Compare: the sixty checkboxes stay a screenful, and the filter finds one (the picked ones stay).
    page.goto(f"{scale.url}/#/apps/{APP}/compare")
    expect(page.get_by_test_id("compare-hint")).to_have_text("2 versions picked.")
    box = page.locator("fieldset").bounding_box()
    assert box is not None and box["height"] < 600, box
    page.get_by_label("Filter versions", exact=True).fill(wanted)
    expect(page.locator(".pick-list li:visible")).to_have_count(3)
    page.get_by_test_id(f"pick-{wanted}").check()
    expect(page.get_by_test_id("compare-hint")).to_have_text(
        f"3 versions picked. Showing 3 of {VERSIONS + 1} versions."
    )
    assert not errors, "\n".join(errors)


def test_compare_eight_versions_one_legend_entry_each_and_tables_that_scroll_in_place(
    scale: Scale, browser_page: Page
) -> None:
    eight = scale.versions[:8]
    for n, version in enumerate(eight):
        points = [
            {"step": s, "loss": 2.0 / (s + n), **({"eval_loss": 2.2 / (s + n)} if s % 10 == 0 else {})}
            for s in range(1, 51)
        ]
        telemetry.add_metrics(scale.db, version, points)
    page = browser_page
    errors = watch_errors(page)
    signed_in(page, scale.key)
    page.goto(f"{scale.url}/#/apps/{APP}/compare?versions={','.join(f'many/{v}' for v in eight)}")
    expect(page.get_by_test_id("compare-hint")).to_have_text("8 versions picked.")
    chart = page.get_by_test_id("compare-chart")
    expect(chart.locator("path[data-series]")).to_have_count(16)  # train and eval loss of each
    expect(chart.locator(".legend li")).to_have_count(8)  # one entry per version: its colour
    expect(chart.locator(".legend li").first).to_have_text(f"many · {eight[-1][:8]}")  # newest first

    # Nine columns scroll inside their table, not the page, and the setting names stay in view.
    wrap = page.locator(".cmp-wrap", has=page.get_by_test_id("compare-settings"))
    assert wrap.evaluate("w => w.scrollWidth > w.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    wrap.evaluate("w => { w.scrollLeft = w.scrollWidth; }")
    name, table = wrap.locator('th[scope="row"]').first.bounding_box(), wrap.bounding_box()
    assert name is not None and table is not None and abs(name["x"] - table["x"]) < 2, (name, table)
    assert not errors, "\n".join(errors)


def test_a_long_run_opens_on_a_downsampled_curve_and_the_log_tail_then_streams_what_follows(
    scale: Scale, browser_page: Page
) -> None:
    page = browser_page
    errors = watch_errors(page)
    requests = api_requests(page)
    signed_in(page, scale.key)
    page.goto(f"{scale.url}/#/apps/{APP}/models/long/versions/{scale.long_run}")

    # The curve: at most CHART_POINTS points drawn, the spike kept, the last point exact.
    train = page.get_by_test_id("loss-chart").locator('path[data-series="train loss"]')
    expect(train).to_have_attribute("d", re.compile(r"^M"))
    assert len(re.findall(r"[ML]", train.get_attribute("d") or "")) <= CHART_POINTS
    label = page.get_by_test_id("loss-chart").locator("svg").get_attribute("aria-label") or ""
    assert f"last {LAST_LOSS:.4g} at step {STEPS}" in label, label
    y_axis = page.get_by_test_id("loss-chart").locator('.axis text[text-anchor="end"]').evaluate_all(TEXTS)
    assert max(float(t) for t in y_axis) >= 8, f"the spike to 9.0 at step {SPIKE_STEP} was smoothed away: {y_axis}"

    # The log: its last MAX_LOG_LINES lines, read at once, said to be the tail of 20,000.
    logs = page.get_by_test_id("logs")
    expect(logs.locator("span").last).to_contain_text(f"INFO line {LINES} of the long run")
    expect(logs.locator("span")).to_have_count(MAX_LOG_LINES)
    expect(page.get_by_test_id("logs-note")).to_have_text("The last 1,000 of 20,000 lines.")
    events = next(r.url for r in requests if "/events" in r.url)
    assert f"after_seq={LINES}" in events and "after_point=" in events, events
    for request in (r for r in requests if "/events" not in r.url):  # a stream that goes on has no whole body
        response = request.response()
        assert response is not None and len(response.body()) < 300_000, f"{request.url} sent too much"

    # Live: new lines and points are appended, the page keeps MAX_LOG_LINES, an open "Settings" stays open.
    page.get_by_test_id("settings-details").locator("summary").click()
    telemetry.append_logs(scale.db, scale.long_run, [("info", f"live line {n}") for n in range(1, 31)])
    telemetry.add_metrics(scale.db, scale.long_run, [{"step": STEPS + 1, "loss": 0.5}])
    jobs.heartbeat(scale.db, scale.long_run, WORKER_ID, 3600, step=STEPS + 1, total_steps=2 * STEPS)
    expect(logs.locator("span").last).to_contain_text("INFO live line 30")
    expect(page.get_by_test_id("progress-text")).to_contain_text(f"step {STEPS + 1} of {2 * STEPS}")
    expect(logs.locator("span")).to_have_count(MAX_LOG_LINES)
    expect(page.get_by_test_id("logs-note")).to_have_text("The last 1,000 of 20,030 lines.")
    expect(page.get_by_test_id("settings-details")).to_have_attribute("open", "")
    expect(page.get_by_test_id("loss-chart").locator("svg")).to_have_attribute(
        "aria-label", re.compile(f"at step {STEPS + 1}")
    )

    # The whole log is one download away.
    with page.expect_download() as download:
        page.get_by_test_id("download-logs").click()
    text = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert (
        len(text) == LINES + 30
        and text[0].endswith("INFO line 1 of the long run")
        and text[-1].endswith("live line 30")
    )
    assert not errors, "\n".join(errors)


def test_a_run_resumed_from_its_checkpoint_shows_its_resumed_curve_live_and_after_a_reload(
    scale: Scale, browser_page: Page
) -> None:
    """A retried run resumes from its last checkpoint (step 20 here) and logs steps 21… again. The
    stream followed the curve by step, so it sent none of them until the run passed its old last
    step (30), and the chart stood still showing training no model kept."""
    dataset_version = registry.get_model_version_by_id(scale.db, scale.long_run).dataset_version_id
    assert dataset_version is not None
    run = unfinished_version(scale.db, APP, "long", dataset_version, fail=False)
    telemetry.add_metrics(scale.db, run, [{"step": s, "loss": 3.0} for s in range(1, 31)])
    page = browser_page
    errors = watch_errors(page)
    requests = api_requests(page)
    signed_in(page, scale.key)
    with page.expect_request(lambda request: "/events" in request.url):  # live from here on
        page.goto(f"{scale.url}/#/apps/{APP}/models/long/versions/{run}")
    chart = page.get_by_test_id("loss-chart").locator("svg")
    expect(chart).to_have_attribute("aria-label", re.compile("train loss: 30 points, last 3 at step 30"))

    telemetry.add_metrics(scale.db, run, [{"step": s, "loss": 1.5} for s in range(21, 25)])  # attempt 2
    expect(chart).to_have_attribute("aria-label", re.compile("train loss: 24 points, last 1.5 at step 24"))
    telemetry.add_metrics(scale.db, run, [{"step": 25, "loss": 1.25}])
    expect(chart).to_have_attribute("aria-label", re.compile("train loss: 25 points, last 1.25 at step 25"))
    events = [r.url for r in requests if "/events" in r.url]
    assert len(events) == 1 and "after_point=" in events[0], events  # one stream followed it all

    page.reload()  # read afresh: the abandoned tail (steps 25-30 of attempt 1) is not drawn either
    expect(chart).to_have_attribute("aria-label", re.compile("train loss: 25 points, last 1.25 at step 25"))
    assert not errors, "\n".join(errors)


def test_events_start_after_what_the_client_has_and_max_points_is_checked(scale: Scale) -> None:
    version = f"{scale.url}/api/apps/{APP}/models/long/versions/{scale.long_run}"
    last_seq = telemetry.list_logs(scale.db, scale.long_run, limit=1, tail=True)[0].seq
    last_step = telemetry.list_metrics(scale.db, scale.long_run, after_step=STEPS - 1)[-1].step
    params = {"after_step": last_step - 1, "after_seq": last_seq - 2}
    sent: list[tuple[str, dict[str, object]]] = []
    with httpx.stream("GET", f"{version}/events", params=params, headers=scale.headers, timeout=30) as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                sent.append((event, json.loads(line.removeprefix("data: "))))
                if event == "status":
                    break  # a run that goes on never ends its stream: the first round is enough
    assert [data["step"] for event, data in sent if event == "metric"] == [last_step - 1, last_step]
    assert [data["seq"] for event, data in sent if event == "log"] == [last_seq - 1, last_seq]

    refused = httpx.get(f"{version}/metrics", params={"max_points": 1}, headers=scale.headers)
    assert refused.status_code == 422 and "max_points" in refused.json()["message"], refused.text
    refused = httpx.get(f"{version}/events", params={"after_point": -1}, headers=scale.headers)
    assert refused.status_code == 422 and refused.json()["details"]["key"] == "after_point", refused.text


def test_a_stream_of_two_thousand_tokens_scrolls_inside_its_box_following_the_end(
    scale: Scale, browser_page: Page
) -> None:
    """tiny-random's context is 1,024 tokens, so the 2,000 pieces come from a fulfilled route (the
    real stream is driven in test_web_e2e.py); what is checked is how the page shows them."""
    pieces = [f"word{n} " + ("\n" if n % 12 == 11 else "") for n in range(STREAMED)]
    events = "".join(f"data: {json.dumps({'text': p})}\n\n" for p in pieces)
    done = {"finish_reason": "length", "tokens": STREAMED, "model_version_id": scale.versions[-1]}
    body = events + f"event: done\ndata: {json.dumps(done)}\n\n"
    page = browser_page
    errors = watch_errors(page)
    signed_in(page, scale.key)
    page.route(
        re.compile(r"/models/many/generate$"),
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    page.goto(f"{scale.url}/#/apps/{APP}/generate?model=many")
    expect(page.get_by_test_id("gen-version")).to_be_enabled()
    page.get_by_label("Inputs", exact=True).fill("tell me everything")
    page.get_by_test_id("generate").click()
    output = page.get_by_test_id("gen-output")
    expect(output).to_have_attribute("data-done", "true")
    expect(output).to_have_attribute("data-pieces", str(STREAMED))
    shown = output.evaluate(MEASURE_BOX)
    assert shown["text"] == "".join(pieces)
    assert shown["nodes"] == 1, "each piece became a DOM node of its own"
    assert shown["height"] <= 0.6 * 800 + 1 < shown["tall"], shown  # bounded: it scrolls inside
    assert shown["scrolled"] < 2, f"the box does not show the end of the text: {shown}"
    assert not errors, "\n".join(errors)
