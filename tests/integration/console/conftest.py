"""Fixtures for the web console in a real headless browser: Debian's ``chromium`` driven by Playwright for Python
(``chromium.launch(executable_path=...)``: Playwright's own browser download is not used), against live servers on
loopback with the tiny models (BERT, BGE-M3-shaped with its sparse and ColBERT heads, a cross-encoder) and the
embedded all-MiniLM-L6-v2 as default model.

Each page records the browser's console errors, uncaught exceptions and every response it got; a test ends with
``page_errors`` empty unless it says otherwise. Screenshots of each view go to ``tests/artefacts/console`` (or
``$EMBED_TEST_ARTEFACTS/console``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.checkpoints import make_tiny_bert, make_tiny_cross_encoder
from tests.support.server import running_server

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ARTEFACTS = Path(os.environ.get("EMBED_TEST_ARTEFACTS") or Path(__file__).resolve().parents[2] / "artefacts") / "console"
API_KEY = "sk-console-test-key"
DEFAULT = "all-minilm-l6-v2"
M3 = "tiny-bge-m3"
BERT = "tiny-bert"
RERANKER = "tiny-reranker"
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (Debian's package); the tests skip, saying why, without it or without Playwright. Per module:
    Playwright's sync API keeps an event loop of its own, closed before other modules' tests run theirs."""
    executable = _chromium()
    if executable is None:
        reason = "no chromium on PATH: install Debian's package (apt-get install chromium; .ci/run does)"
        print(f"SKIPPED console browser tests: {reason}")
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright for Python is not installed (pip install -e '.[test]')"
        print(f"SKIPPED console browser tests: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def console_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console-models")
    make_tiny_bert(root / BERT)
    shutil.copytree(FIXTURES / M3, root / M3)
    make_tiny_cross_encoder(root / RERANKER, "bert")
    return root


@pytest.fixture(scope="module")
def console_server(browser, console_models, tmp_path_factory):
    """A live server over the tiny models with the embedded MiniLM as default model and a memory limit (the Models
    view shows its budget). After ``browser``: without one, no server is started for nothing."""
    log = tmp_path_factory.mktemp("logs") / "console-server.log"
    env = {"EMBED_MEMORY_LIMIT_MB": "4096"}
    with running_server(console_models, env=env, model=DEFAULT, log_path=log) as (base, _proc):
        yield base


@pytest.fixture(scope="module")
def keyed_server(browser, console_models, tmp_path_factory):
    """A live server that demands an API key (EMBED_API_KEY), default model the tiny BERT."""
    log = tmp_path_factory.mktemp("logs") / "console-keyed-server.log"
    with running_server(console_models, env={"EMBED_API_KEY": API_KEY}, model=BERT, log_path=log) as (base, _proc):
        yield base


@dataclass
class Watched:
    """A page and what the browser said while it was open."""

    page: object
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    responses: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    navigation: object = None  # the response the page was opened with (after redirects)

    def screenshot(self, name: str) -> Path:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTEFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def watch(page) -> Watched:
    watched = Watched(page)
    page.on("console", lambda m: watched.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))

    def response(r) -> None:
        url = httpx.URL(r.url)
        watched.responses.append((r.request.method, url.path, r.status))

    page.on("response", response)
    return watched


@pytest.fixture
def open_page(browser):
    """``open_page(url, viewport=VIEWPORT)``: a fresh browser context (its own session storage) and page, watched."""
    contexts = []

    def opener(url: str, viewport: dict | None = None) -> Watched:
        context = browser.new_context(viewport=viewport or VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        watched = watch(page)
        watched.navigation = page.goto(url)
        return watched

    yield opener
    for context in contexts:
        context.close()
