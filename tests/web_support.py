"""Browser-test support: Debian's headless Chromium driven by Playwright, screenshots, and page weight.

Playwright's own browser download cannot run here, so the browser is Debian's `chromium` package
(`.ci/run` installs it); without /usr/bin/chromium every browser test is skipped, saying why.

Fixtures (import them into a test module):
- `browser_page`: a Playwright `Page` in a fresh browser context (1280x800, empty cache and storage).
- `screenshots`: `screenshots.take(page, "name")` saves a full-page PNG in the test's `tmp_path/screenshots`
  and copies it to `test-artifacts/screenshots/<test>/name.png` under the repository root (git-ignored),
  a stable path to look at after a run.
- `network`: a `NetworkLog` of every request and response of `browser_page`, to weigh a page load and
  to check that every asset came from the server's own origin.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response

KEY_STORAGE = "tuneloom.apiKey"  # where the console keeps the key (static/api.js)
CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
PHONE_VIEWPORT = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module (contexts keep the tests apart).

    Not per session: Playwright's sync API keeps its event loop marked as running in
    this thread until it stops, so a later module's `asyncio.run` would refuse to start.
    """
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Browser) -> Iterator[Page]:
    """A page in a fresh context: no cookies, no session storage, no cache shared with other tests."""
    context = chromium.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@dataclass
class Screenshots:
    folder: Path  # the test's own output folder
    stable: Path  # test-artifacts/screenshots/<test>
    taken: list[Path] = field(default_factory=list)

    def take(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        """Save a PNG of the page now; returns its stable copy under test-artifacts/."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stable.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        copy = self.stable / path.name
        shutil.copyfile(path, copy)
        self.taken.append(copy)
        return copy


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Screenshots]:
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    stable = ARTIFACTS / test_name
    shutil.rmtree(stable, ignore_errors=True)  # only this run's pictures
    shots = Screenshots(tmp_path / "screenshots", stable)
    yield shots
    if shots.taken:
        print(f"\nscreenshots of {test_name}:")
        for path in shots.taken:
            print(f"  {path.relative_to(REPO_ROOT)}")


@dataclass
class Load:
    """What one page load fetched: `bytes` is the sum of the response bodies as transferred."""

    url: str
    bytes: int
    decoded_bytes: int
    responses: int


@dataclass
class NetworkLog:
    requests: list[Request] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("request", lambda request: self.requests.append(request))
        page.on("response", lambda response: self.responses.append(response))

    def origins(self) -> set[str]:
        """Every scheme://host:port the page asked anything of (data: and blob: URLs have none)."""
        found = set()
        for request in self.requests:
            parts = urlsplit(request.url)
            if parts.scheme in ("http", "https", "ws", "wss"):
                found.add(f"{parts.scheme}://{parts.netloc}")
        return found

    def weigh(self, page: Page, url: str, **goto: Any) -> Load:
        """Load `url` afresh and add up the bodies of its responses once the network is idle.

        Streams (text/event-stream) are left out: they never finish while the page is open.
        """
        first = len(self.responses)
        page.goto(url, **goto)
        page.wait_for_load_state("networkidle")
        transferred = decoded = 0
        counted = 0
        for response in self.responses[first:]:
            if "text/event-stream" in (response.headers.get("content-type") or ""):
                continue
            sizes = response.request.sizes()
            body = len(response.body()) if response.status not in (204, 304) and response.status < 300 else 0
            transferred += max(int(sizes.get("responseBodySize") or 0), 0) or body
            decoded += body
            counted += 1
        load = Load(url, transferred, decoded, counted)
        self.loads.append(load)
        return load

    def heaviest(self) -> Load:
        return max(self.loads, key=lambda load: load.bytes)


def cold_load(browser: Browser, url: str, *, session_storage: dict[str, str] | None = None) -> tuple[Load, set[str]]:
    """Weigh one page load in a fresh context (nothing cached), with `session_storage` set before any script.

    Returns the load and every origin it asked anything of.
    """
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        if session_storage:
            pairs = json.dumps(session_storage)
            context.add_init_script(f"for (const [k, v] of Object.entries({pairs})) sessionStorage.setItem(k, v);")
        page = context.new_page()
        log = NetworkLog()
        log.attach(page)
        return log.weigh(page, url), log.origins()
    finally:
        context.close()


@pytest.fixture
def network(browser_page: Page) -> NetworkLog:
    log = NetworkLog()
    log.attach(browser_page)
    return log


def watch_errors(page: Page, expected_statuses: tuple[int, ...] = (422,)) -> list[str]:
    """JavaScript errors and failed requests, to assert none happened (bar the statuses a step provokes)."""
    errors: list[str] = []
    allowed = tuple(f"the server responded with a status of {status}" for status in expected_statuses)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and not any(text in msg.text for text in allowed):
            errors.append(f"console.{msg.type}: {msg.text}")

    page.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
    page.on("console", on_console)
    return errors


def signed_in(page: Page, key: str) -> None:
    """Every page `page` loads from now on starts signed in with `key` (as the sign-in form leaves it)."""
    page.context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
