"""The web console in a real headless browser (Debian's chromium, Playwright) against live servers on loopback.

What the page shows is checked against what the API routes answer: the model list against /api/tags, loading and
unloading against /api/ps, the heatmap against cosines of /api/embed's vectors, the PCA against numpy's, BGE-M3's
sparse weights and ColBERT score against /api/encode, the rerank order against /v1/rerank, the Live view's counts
against the requests sent and /metrics, and the Code view's snippets by running them. With EMBED_API_KEY, no data
request succeeds until the key is typed. Every test ends with no console error, no uncaught exception and no CSP
violation in the browser; each view is saved as a screenshot (tests/artefacts/console).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from embedding_server.api.console import CSP
from tests.integration.console.conftest import API_KEY, BERT, DEFAULT, M3, PHONE, RERANKER, Watched
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # a live server process and a browser: left out of make test-fast

TEXTS = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Embedding models map sentences to vectors.",
         "Vector search ranks documents by cosine similarity.", "The stock market fell sharply on Monday."]
QUERY = "what do embedding models map"
DOCS = ["embedding models map sentences to dense vectors", "the quick brown fox", "air gapped networks",
        "vector search engines rank documents by cosine similarity", "ollama and openai clients send json"]
DATA_PATHS = re.compile(r"^/(ui/api/|api/|v1/|v2/|embed|rerank|tokenize|similarity|info)")


def clean(watched: Watched) -> None:
    """No console error, uncaught exception or CSP violation in the browser."""
    violations = watched.page.evaluate("window.__cspViolations || []")
    assert watched.errors == [] and violations == [], (watched.errors, violations)


def watch_csp(watched: Watched) -> None:
    """Record CSP violations from here on (an init script: CDP injects it, the page's CSP does not apply to it)."""
    script = ("window.__cspViolations = []; document.addEventListener('securitypolicyviolation', "
              "e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));")
    watched.page.add_init_script(script)
    watched.page.reload()


def show(watched: Watched, view: str) -> None:
    watched.page.click(f"#tab-{view}")
    watched.page.wait_for_selector(f"#view-{view}:not([hidden])")


def models(base: str, route: str, **kw) -> set[str]:
    r = httpx.get(f"{base}{route}", timeout=60, **kw)
    assert r.status_code == 200, r.text
    return {m["name"].removesuffix(":latest") for m in r.json()["models"]}


def run_playground(watched: Watched, model: str, texts: list[str] | None = None, query: str | None = None,
                   docs: list[str] | None = None, wait_for: str = "#heatmap") -> None:
    page = watched.page
    show(watched, "playground")
    page.wait_for_selector(f"#play-model option[value='{model}']", state="attached")
    page.select_option("#play-model", model)
    if texts is not None:
        page.fill("#play-texts", "\n".join(texts))
    if query is not None:
        page.fill("#play-query", query)
        page.fill("#play-docs", "\n".join(docs))
    page.evaluate("document.getElementById('play-results').replaceChildren()")
    page.click("#play-run")
    page.wait_for_selector(wait_for, timeout=120_000)


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


def test_heatmap_pca_and_token_counts_equal_the_apis(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    run_playground(watched, DEFAULT, TEXTS)
    cells = page.eval_on_selector_all("#heatmap td", "cells => cells.map(c => [+c.dataset.i, +c.dataset.j, "
                                                     "+c.dataset.value, c.textContent])")
    embed = httpx.post(f"{console_server}/api/embed", json={"model": DEFAULT, "input": TEXTS}, timeout=60).json()
    vectors = np.asarray(embed["embeddings"], dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    assert len(cells) == len(TEXTS) ** 2
    for i, j, value, text in cells:
        assert abs(value - cosines[i, j]) < 1e-9 and text == f"{cosines[i, j]:.3f}"
    assert cosines[0, 1] > cosines[0, 4]  # the cat and the kitten, closer than the stock market

    # the PCA: numpy's, each axis' sign as the page chooses it (its largest coordinate positive)
    got = np.asarray(page.eval_on_selector_all("svg.pca g[data-index]",
                                               "gs => gs.map(g => [+g.dataset.x, +g.dataset.y])"))
    centred = vectors - vectors.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    want = u[:, :2] * s[:2]
    want *= np.sign(want[np.abs(want).argmax(axis=0), [0, 1]])
    assert np.abs(got - want).max() < 1e-6, (got, want)

    counts = page.eval_on_selector_all("#token-counts tbody tr", "rows => rows.map(r => +r.dataset.tokens)")
    assert sum(counts) == embed["prompt_eval_count"] == int(page.text_content("#total-tokens").replace(",", ""))
    watched.screenshot("playground-embed")
    clean(watched)


def test_bge_m3_shows_sparse_tokens_and_colbert_matches(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    texts = ["embedding models map sentences", "dense and sparse vectors", "the quick brown fox"]
    run_playground(watched, M3, texts, wait_for="#colbert-score")
    encoded = httpx.post(f"{console_server}/api/encode", timeout=60,
                         json={"model": M3, "input": texts, "outputs": ["sparse", "colbert"]}).json()
    for i, sparse in enumerate(encoded["sparse"]):
        chips = page.eval_on_selector_all(f"#sparse .tokens[data-text='{i}'] .tok",
                                          "cs => cs.map(c => [+c.dataset.id, +c.dataset.weight])")
        weighted = {token: weight for token, weight in chips if weight > 0}
        want = dict(zip(sparse["indices"], sparse["values"]))
        assert weighted.keys() == want.keys() and weighted
        assert all(abs(weighted[k] - want[k]) < 1e-6 for k in want)
        assert len(chips) > len(weighted)  # special tokens are shown, unweighted
    # ColBERT: query T1, passage T2 by default; then T3 as the passage
    for passage in (1, 2):
        page.select_option("#colbert-passage", str(passage))
        q, p = np.asarray(encoded["colbert"][0]), np.asarray(encoded["colbert"][passage])
        want = (q @ p.T).max(axis=1).mean()
        page.wait_for_function("s => document.getElementById('colbert-score').textContent === s", arg=f"{want:.4f}")
        assert abs(float(page.get_attribute("#colbert-score", "data-score")) - want) < 1e-6
    sims = page.eval_on_selector_all("#colbert-table tbody tr", "rows => rows.map(r => +r.dataset.sim)")
    assert sims == sorted(sims, reverse=True) and len(sims) == min(10, len(encoded["colbert"][0]))
    watched.screenshot("playground-bge-m3")
    clean(watched)


def test_rerank_order_equals_v1_rerank(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    run_playground(watched, RERANKER, query=QUERY, docs=DOCS, wait_for="#rerank-table")
    rows = page.eval_on_selector_all("#rerank-table tbody tr", "rows => rows.map(r => [+r.dataset.index, "
                                                               "+r.dataset.score])")
    want = httpx.post(f"{console_server}/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": DOCS},
                      timeout=60).json()["results"]
    assert [i for i, _ in rows] == [r["index"] for r in want]
    assert all(abs(s - r["relevance_score"]) < 1e-6 for (_, s), r in zip(rows, want))
    assert len(set(i for i, _ in rows)) == len(DOCS)
    watched.screenshot("playground-rerank")
    clean(watched)


def test_live_view_counts_the_requests_sent(console_server, open_page):
    watched = open_page(f"{console_server}/ui#live")
    page = watched.page
    page.wait_for_selector("#live-cards .card")

    def shown(route: str) -> int:
        value = page.get_attribute(f"#routes-table tr[data-route='{route}']", "data-requests")
        return int(value) if value else 0

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


def _snippet(page, name: str) -> str:
    return page.text_content(f"#code-list [data-snippet='{name}'] pre")


def _run(code: str, language: str, env: dict | None = None) -> str:
    command = ["bash", "-c", code] if language == "sh" else [sys.executable, "-c", code]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**environment, **(env or {})})
    assert done.returncode == 0, (code, done.stderr)
    return done.stdout


DUMP = "\nimport json\nprint(json.dumps([[float(x) for x in v] for v in vectors]))\n"


def test_code_view_snippets_run_and_give_what_the_page_showed(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    texts = TEXTS[:3]
    run_playground(watched, DEFAULT, texts)  # the default model: TEI's routes serve it too
    show(watched, "code")
    want = np.asarray(httpx.post(f"{console_server}/api/embed", json={"model": DEFAULT, "input": texts}).json()
                      ["embeddings"])
    for name, pick in (("curl-ollama", lambda r: r["embeddings"]), ("curl-openai", lambda r: [d["embedding"] for d in
                                                                                                r["data"]]),
                       ("curl-tei", lambda r: r)):
        got = np.asarray(pick(json.loads(_run(_snippet(page, name), "sh"))))
        assert np.abs(got - want).max() < 1e-6, name
    for name in ("py-openai", "py-ollama", "py-hf"):
        out = _run(_snippet(page, name) + DUMP, "python").splitlines()
        assert out[0] == f"3 vectors of {want.shape[1]} dimensions", name
        assert np.abs(np.asarray(json.loads(out[-1])) - want).max() < 1e-6, name
    # Copy puts the snippet on the clipboard
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#code-list [data-snippet='py-openai'] button")
    assert page.evaluate("navigator.clipboard.readText()") == _snippet(page, "py-openai")
    watched.screenshot("code")

    # a reranker's snippets give the page's order
    run_playground(watched, RERANKER, query=QUERY, docs=DOCS, wait_for="#rerank-table")
    shown = page.eval_on_selector_all("#rerank-table tbody tr", "rows => rows.map(r => +r.dataset.index)")
    show(watched, "code")
    got = json.loads(_run(_snippet(page, "curl-rerank"), "sh"))["results"]
    assert [r["index"] for r in got] == shown
    ranking = ast.literal_eval(_run(_snippet(page, "py-rerank"), "python"))
    assert [i for i, _ in ranking] == shown
    clean(watched)


def test_api_key_no_data_before_it_is_typed(keyed_server, open_page):
    watched = open_page(f"{keyed_server}/ui")
    page = watched.page
    page.wait_for_selector("#key-view:not([hidden])")
    assert page.is_hidden("#view-models")
    # the page and its files are open; nothing else was asked for, and the data routes refuse a browser without it
    refused = page.evaluate("""async () => Promise.all(['/ui/api/models', '/ui/api/stats', '/api/tags', '/api/ps']
        .map(async p => (await fetch(p)).status))""")
    assert refused == [401, 401, 401, 401]
    embed = page.evaluate("""async () => (await fetch('/api/embed', {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify({model: 'tiny-bert', input: ['x']})})).status""")
    assert embed == 401
    data = [(m, p, s) for m, p, s in watched.responses if DATA_PATHS.match(p)]
    assert data and all(s == 401 for _, _, s in data), data
    # the browser logs each 401 it got; nothing else
    assert all("401" in e for e in watched.errors), watched.errors
    watched.errors.clear()

    page.fill("#api-key", "not-the-key")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('key-error').textContent.includes('refused')")
    assert page.is_hidden("#view-models")
    assert all(s == 401 for m, p, s in watched.responses if DATA_PATHS.match(p))
    assert all("401" in e for e in watched.errors), watched.errors
    watched.errors.clear()
    watched.screenshot("api-key")

    sent: list[dict] = []
    page.on("request", lambda r: sent.append(r.headers) if DATA_PATHS.match(httpx.URL(r.url).path) else None)
    page.fill("#api-key", API_KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#models-table tbody tr")
    assert page.is_hidden("#key-view")
    assert sent and all(h.get("authorization") == f"Bearer {API_KEY}" for h in sent)
    assert page.evaluate("sessionStorage.length") == 1 and page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    shown = set(page.eval_on_selector_all("#models-table tbody tr", "rows => rows.map(r => r.dataset.model)"))
    assert shown == models(keyed_server, "/api/tags", headers={"Authorization": f"Bearer {API_KEY}"})
    run_playground(watched, BERT, ["a text", "another text"])
    assert page.query_selector_all("#heatmap td")
    # the key stays with this tab: a reload keeps it, another context (a new session) has to type it again
    page.reload()
    page.wait_for_selector("#view-playground:not([hidden])")  # the view it was on
    page.wait_for_selector("#play-model option[value='tiny-bert']", state="attached")  # its data came
    assert page.is_hidden("#key-view")
    clean(watched)
    other = open_page(f"{keyed_server}/ui")
    other.page.wait_for_selector("#key-view:not([hidden])")
    page.click("#forget-key")
    page.wait_for_selector("#key-view:not([hidden])")
    assert page.evaluate("sessionStorage.length") == 0
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
