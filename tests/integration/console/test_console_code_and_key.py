"""The console's Code view (its snippets run and give the vectors the page showed) and the API key (no data
request succeeds before it is typed), in a headless browser."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.integration.console.conftest import API_KEY, BERT, DEFAULT, RERANKER
from tests.integration.console.pages import DATA_PATHS, DOCS, QUERY, TEXTS, clean, models, run_playground, show

pytestmark = pytest.mark.slow  # a live server process and a browser: left out of make test-fast


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
