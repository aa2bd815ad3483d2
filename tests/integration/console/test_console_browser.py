"""The web console in a real headless browser (Debian's chromium, Playwright) against live servers on loopback.

What the page shows is checked against what the API routes answer: the model list against /api/tags, loading and
unloading against /api/ps, the heatmap against cosines of /api/embed's vectors, the PCA against numpy's, BGE-M3's
sparse weights and ColBERT score against /api/encode, the rerank order against /v1/rerank, the Live view's counts
against the requests sent and /metrics, and the Code view's snippets by running them. With EMBED_API_KEY, no data
request succeeds until the key is typed. Every test ends with no console error, no uncaught exception and no CSP
violation in the browser; each view is saved as a screenshot (tests/artefacts/console).
"""

from __future__ import annotations

import re

import httpx
import pytest

from embedding_server.api.console import CSP
from tests.integration.console.conftest import BERT, DEFAULT, M3, PHONE, RERANKER
from tests.integration.console.pages import clean, models, show, watch_csp
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # a live server process and a browser: left out of make test-fast


def test_browser_root_opens_the_console_under_its_csp(console_server, open_page):
    watched = open_page(f"{console_server}/")
    page = watched.page
    assert page.url == f"{console_server}/ui"
    page.wait_for_selector("#models-table tbody tr")
    assert page.title() == "embedding-server console"
    assert watched.navigation.url == f"{console_server}/ui"
    assert watched.navigation.headers["content-security-policy"] == CSP
    assert watched.navigation.request.redirected_from.url == f"{console_server}/"
    assert page.evaluate("document.querySelectorAll('script:not([src]), style').length") == 0
    # API clients still get Ollama's banner
    assert httpx.get(f"{console_server}/").text == "Ollama is running"
    # everything the page loaded came from this server
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(console_server) for url in loaded), loaded
    watch_csp(watched)
    page.wait_for_selector("#models-table tbody tr")
    clean(watched)


def test_models_view_lists_the_folder_and_loads_and_unloads(console_server, open_page):
    watched = open_page(f"{console_server}/ui#models")
    page = watched.page
    page.wait_for_selector("#models-table tbody tr")
    shown = set(page.eval_on_selector_all("#models-table tbody tr", "rows => rows.map(r => r.dataset.model)"))
    tags = models(console_server, "/api/tags")
    assert shown == tags == {DEFAULT, BERT, M3, RERANKER}
    kinds = dict(page.eval_on_selector_all("#models-table tbody tr",
                                           "rows => rows.map(r => [r.dataset.model, r.cells[1].textContent])"))
    assert kinds[RERANKER] == "reranker" and kinds[BERT] == kinds[M3] == kinds[DEFAULT] == "embedding"
    m3_outputs = page.text_content(f"#models-table tr[data-model='{M3}'] td:nth-of-type(6)")
    assert all(o in m3_outputs for o in ("dense", "sparse", "colbert"))
    assert "4.00 GB limit" in page.text_content("#memory")
    assert page.get_attribute("#memory [role=meter]", "aria-valuemax") == str(4096 * 2**20)

    assert BERT not in models(console_server, "/api/ps")
    page.select_option("#keep-alive", "30m")
    page.click(f"button[data-action=load][data-model='{BERT}']")
    wait_until(lambda: BERT in models(console_server, "/api/ps"), 60, what=f"{BERT} in /api/ps")
    page.wait_for_selector(f"#models-table tr[data-model='{BERT}'][data-state=loaded]")
    expires = page.text_content(f"#models-table tr[data-model='{BERT}'] td:nth-of-type(9)")
    assert re.fullmatch(r"in (29|30) min \d+ s", expires), expires  # keep_alive 30m, as chosen
    watched.screenshot("models")

    page.click(f"button[data-action=unload][data-model='{BERT}']")
    wait_until(lambda: BERT not in models(console_server, "/api/ps"), 60, what=f"{BERT} gone from /api/ps")
    page.wait_for_selector(f"#models-table tr[data-model='{BERT}'][data-state=available]")
    assert page.is_disabled(f"button[data-action=unload][data-model='{BERT}']")
    clean(watched)


def test_live_view_counts_the_requests_sent(console_server, open_page):
    watched = open_page(f"{console_server}/ui#live")
    page = watched.page
    page.wait_for_selector("#live-cards .card")

    def shown(route: str) -> int:  # no row yet: the route has had no request
        row = page.query_selector(f"#routes-table tr[data-route='{route}']")
        return int(row.get_attribute("data-requests") or 0) if row else 0

    def counted(route: str) -> int:
        metrics = httpx.get(f"{console_server}/metrics").text
        return int(sum(float(v) for v in re.findall(rf'embed_http_requests_total{{route="{route}",status="\d+"}} (\S+)',
                                                    metrics)))

    before, before_metrics = shown("/api/embed"), counted("/api/embed")
    with httpx.Client(base_url=console_server, timeout=60) as client:
        for _ in range(12):
            assert client.post("/api/embed", json={"model": BERT, "input": ["one", "two", "three"]}).status_code == 200
    assert counted("/api/embed") - before_metrics == 12
    # the page refreshes itself every few seconds: wait for it to show the twelve
    page.wait_for_function("n => { const r = document.querySelector(\"#routes-table tr[data-route='/api/embed']\");"
                           " return r && +r.dataset.requests >= n; }", arg=before + 12, timeout=60_000)
    assert shown("/api/embed") == before + 12
    p50 = float(page.text_content("#routes-table tr[data-route='/api/embed'] td:nth-of-type(3)"))
    p95 = float(page.text_content("#routes-table tr[data-route='/api/embed'] td:nth-of-type(4)"))
    assert 0 < p50 <= p95
    # the inputs/s chart saw them: some point of the window is above zero
    page.wait_for_function("() => document.querySelector(\"#live-cards [data-metric='inputs'] polyline\") !== null")
    assert not page.query_selector("#routes-table tr[data-route^='/ui']")  # the console's own polling left out
    watched.screenshot("live")
    clean(watched)


def test_keyboard_only_and_a_phone_screen(console_server, open_page):
    watched = open_page(f"{console_server}/ui")
    page = watched.page
    page.wait_for_selector("#models-table tbody tr")
    # Tab from the top: the skip link, then the tabs; arrows move between views
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.focus("#tab-models")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#view-live:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "tab-live" and page.url.endswith("#live")
    page.keyboard.press("End")
    page.wait_for_selector("#view-code:not([hidden])")
    page.keyboard.press("Home")
    page.wait_for_selector("#view-models:not([hidden])")
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#view-code:not([hidden])")
    # the playground from the keyboard: pick the model, type, Ctrl+Enter
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#view-playground:not([hidden])")
    page.focus("#play-model")
    page.select_option("#play-model", BERT)
    page.focus("#play-texts")
    page.keyboard.press("Control+a")
    page.keyboard.type("the quick brown fox\nembedding models")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#heatmap td")
    assert len(page.query_selector_all("#heatmap td")) == 4
    # every interactive element has a name a screen reader can say
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, select, input, textarea')]
        .filter(e => e.offsetParent !== null)
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []

    # a phone: no view is wider than the screen
    page.set_viewport_size(PHONE)
    for view in ("models", "live", "playground", "code"):
        show(watched, view)
        if view == "live":
            page.wait_for_selector("#live-cards .card")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (view, width)
        if view == "models":
            page.wait_for_selector("#models-table tbody tr")
            watched.screenshot("phone-models")
        if view == "playground":
            watched.screenshot("phone-playground")
    clean(watched)
