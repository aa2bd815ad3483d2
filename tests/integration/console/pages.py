"""What the console's browser tests share: texts, the checks every test ends with, and moving between views."""

from __future__ import annotations

import re

import httpx

from tests.integration.console.conftest import Watched


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

