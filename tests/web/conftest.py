"""Web page tests: Debian's chromium, driven headless by Playwright (no browser download), against live servers
(create_app + a real uvicorn on an ephemeral port, tests/server/srvutil.py) over one real model. Skipped, with
the reason, only when chromium or Playwright is missing (`make test` installs both).

Each test gets a fresh browser context (a new browser: its own cookies, so its own owner id and conversations)
and saves a screenshot of each of its pages as tests/web/artifacts/<test>[-<n>].png when it ends.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="parley-web-tests-")
os.environ["PARLEY_HOME"] = _HOME

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))
from srvutil import LiveServer  # noqa: E402
from webutil import API_KEY, CORS_ORIGIN, LONG_CAP, SHORT_CAP, open_page  # noqa: E402

from parley.server import ServerSettings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def pytest_configure(config):
    # gradio's queue calls pandas options that pandas 3 deprecates
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:gradio.queueing")
    config.addinivalue_line("filterwarnings", "ignore:.*no_silent_downcasting:Warning")
    config.addinivalue_line("filterwarnings", "ignore:The copy keyword is deprecated:Warning")


@pytest.fixture(scope="session")
def parley():
    from parley import Parley

    # one thread: steady speed while other processes hold a core of this 2-core machine
    p = Parley(threads=1, kv_size=8192, disk_cache_mb=0)
    yield p
    p.close(save=False)


def _serve(parley, **settings):
    s = LiveServer(parley, ServerSettings(**settings))
    return s


@pytest.fixture(scope="session")
def server(parley):
    s = _serve(parley, max_tokens_cap=SHORT_CAP)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def long_server(parley):
    s = _serve(parley, max_tokens_cap=LONG_CAP)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def keyed_server(parley):
    s = _serve(parley, api_key=API_KEY, max_tokens_cap=SHORT_CAP)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def cors_server(parley):
    """Keyed, and pages from CORS_ORIGIN may call it (--cors-origin)."""
    s = _serve(parley, api_key=API_KEY, max_tokens_cap=SHORT_CAP, cors_origins=(CORS_ORIGIN,))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (`make test` installs Debian's chromium: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (the test extra has it)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


class Pages:
    """Browser contexts for one test; every request any of its pages makes is recorded (`requests`)."""

    def __init__(self, browser, name: str):
        self.browser = browser
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        self.contexts = []
        self.pages = []
        self.requests: list[str] = []

    def new(self, url: str | None = None, **context):
        ctx = self.browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True, **context)
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("request", lambda r: self.requests.append(r.url))
        self.pages.append(page)
        if url is not None:
            open_page(page, url)
        return page

    def shoot(self, page, suffix: str = "") -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}{suffix}.png"
        page.screenshot(path=str(path))      # the viewport: the page's sidebar is fixed, a full page breaks it
        return path

    def close(self) -> None:
        for i, page in enumerate(self.pages):
            if not page.is_closed():
                try:
                    self.shoot(page, f"-{i}" if len(self.pages) > 1 else "")
                except Exception as e:  # a screenshot is an artifact: its failure must not hide the test's
                    print(f"screenshot of page {i} failed: {e}")
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture()
def pages(browser, request):
    p = Pages(browser, request.node.name)
    yield p
    p.close()
