"""The web console's routes in process (the browser tests are tests/integration/console): the page and its files
under a strict CSP, a browser's / redirected and every other client's / unchanged, the data routes behind the API
key, and the JSON the page reads (models and memory, the recent load, tokens) equal to what the API routes say."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from embedding_server.api.console import ASSETS, CSP, STATIC_DIR, wants_html
from embedding_server.api.console_data import LiveStats, quantile

REPO = Path(__file__).resolve().parents[3]
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
KEY = "console-unit-key"
DATA_ROUTES = [("GET", "/ui/api/models", None), ("GET", "/ui/api/stats", None),
               ("POST", "/ui/api/tokenize", {"model": "tiny-bert", "input": ["a text"]})]


@pytest.fixture(scope="module")
def client(tiny_models_dir):
    from embedding_server.settings import Settings
    from tests.conftest import open_client

    c = open_client(Settings(models_dir=tiny_models_dir, model="tiny-bert", memory_limit_mb=8192,
                               model_aliases="bge-m3=tiny-xlmr"))
    yield c
    c.__exit__(None, None, None)


# ----- the page and its files ---------------------------------------------------------------------------------------
def test_page_and_files_are_served_with_a_strict_csp(client):
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    referenced = re.findall(r'(?:src|href)="ui/static/([^"]+)"', page.text)
    assert sorted(referenced) == ["console.css", "console.js", "favicon.svg"]
    types = {"console.css": "text/css", "console.js": "text/javascript", "favicon.svg": "image/svg+xml"}
    for name in referenced:
        r = client.get(f"/ui/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(types[name])
        assert r.headers["content-security-policy"] == CSP and r.content == (STATIC_DIR / name).read_bytes()
        again = client.get(f"/ui/static/{name}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert client.get("/ui/static/../console.py").status_code == 404
    assert client.get("/ui/static/missing.js").status_code == 404
    assert client.get("/ui/", follow_redirects=False).headers["location"].endswith("/ui")
    assert not any(p.startswith("/ui") for p in client.get("/openapi.json").json()["paths"])  # the page's own


def test_files_have_no_inline_code_no_remote_origin_and_stay_small():
    html = (STATIC_DIR / "index.html").read_text()
    assert "<style" not in html and not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html)
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<script[^>]*>\s*[^<\s]", html)  # no inline script body
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        remote = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
                  if u != "http://www.w3.org/2000/svg"]  # the SVG namespace names no resource
        assert remote == [], (path.name, remote)
    js = (STATIC_DIR / "console.js").read_text()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write",
                   'setAttribute("style"', "cssText", "localStorage"):
        assert unsafe not in js, unsafe
    total = sum(len(content) for content, _, _ in ASSETS.values())
    assert total < 300 * 1024, total


def test_every_console_file_is_package_data():
    """The wheel ships every file the page loads (pyproject's package-data globs)."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["embedding_server"]
    for path in STATIC_DIR.iterdir():
        assert any(fnmatch.fnmatch(f"console/{path.name}", p) for p in patterns), path.name
    assert set(ASSETS) == {p.name for p in STATIC_DIR.iterdir()}


# ----- / for browsers and for API clients ---------------------------------------------------------------------------
@pytest.mark.parametrize("accept, html", [(BROWSER_ACCEPT, True), ("text/html", True), ("TEXT/HTML; q=0.5", True),
                                          ("*/*", False), ("application/json", False), ("", False),
                                          ("text/html;q=0, */*", False), ("text/plain", False)])
def test_wants_html(accept, html):
    headers = [(b"accept", accept.encode())] if accept else []
    assert wants_html(headers) is html


def test_browser_root_goes_to_the_console_and_clients_keep_ollamas_banner(client):
    r = client.get("/", headers={"Accept": BROWSER_ACCEPT}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "ui" and "Accept" in r.headers["vary"]
    assert client.get("/", headers={"Accept": BROWSER_ACCEPT}).url.path == "/ui"
    for accept in ("*/*", "application/json"):
        r = client.get("/", headers={"Accept": accept})
        assert r.status_code == 200 and r.text == "Ollama is running"
    assert client.head("/", headers={"Accept": BROWSER_ACCEPT}).status_code == 200
    assert client.post("/", json={"inputs": "a text"}).status_code == 200  # TEI's POST / untouched


# ----- the API key ----------------------------------------------------------------------------------------------------
def test_data_routes_need_the_key_and_the_page_does_not(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", api_key=KEY)
    for path in ("/ui", "/ui/static/console.js", "/ui/config"):
        assert c.get(path).status_code == 200, path
    assert c.get("/ui/config").json()["api_key_required"] is True
    for method, path, body in DATA_ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"], (path, headers)
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
            assert c.request(method, path, json=body, headers=headers).status_code == 200, (path, headers)
    assert c.get("/", headers={"Accept": BROWSER_ACCEPT}, follow_redirects=False).status_code == 302


# ----- the JSON the page reads ------------------------------------------------------------------------------------------
def test_models_equal_the_listings_and_show_the_memory_budget(client):
    data = client.get("/ui/api/models").json()
    tags = {m["name"].removesuffix(":latest"): m for m in client.get("/api/tags").json()["models"]}
    models = {m["name"]: m for m in data["models"]}
    assert set(models) == set(tags)
    ps = {m["name"].removesuffix(":latest") for m in client.get("/api/ps").json()["models"]}
    assert {n for n, m in models.items() if m["loaded"]} == ps
    for name, m in models.items():
        assert m["kind"] == tags[name]["kind"] and m["size"] == tags[name]["size"]
        info = client.post("/api/show", json={"model": name}).json()["model_info"]
        arch = info["general.architecture"]
        assert m["dimension"] == info[f"{arch}.embedding_length"]
        assert m["context_length"] == info[f"{arch}.context_length"]
        assert set(m["outputs"]) <= {"dense", "sparse", "colbert"} and "dense" in m["outputs"]
    assert data["default_model"] == "tiny-bert" and models["tiny-bert"]["default"]
    assert models["tiny-bert"]["loaded"] and models["tiny-bert"]["resident_bytes"] > 0
    assert models["tiny-bert"]["expires_at"] is None  # never: the default model is kept for ever
    listed = {m["name"]: m for m in client.get("/api/ps").json()["models"]}
    assert listed["tiny-bert:latest"]["expires_at"].startswith("2318")  # Ollama's way of saying never
    assert models["tiny-xlmr"]["aliases"] == ["bge-m3"] and models["tiny-bert"]["aliases"] == []
    assert data["memory"]["limit_bytes"] == 8192 * 2**20
    assert data["memory"]["resident_bytes"] >= data["memory"]["models_bytes"] > 0
    unloaded = [m for m in models.values() if not m["loaded"]]
    assert unloaded and all(m["estimated_bytes"] > 0 and m["state"] == "available" for m in unloaded)


def test_load_and_unload_through_ollamas_route_show_in_models(client):
    def state() -> dict:
        return {m["name"]: m for m in client.get("/ui/api/models").json()["models"]}["tiny-xlmr"]

    assert client.post("/api/generate", json={"model": "tiny-xlmr", "keep_alive": "10m"}).status_code == 200
    loaded = state()
    assert loaded["loaded"] and loaded["state"] == "loaded" and loaded["resident_bytes"] > 0
    assert loaded["expires_at"] is not None and loaded["pooling"] == "cls"
    assert client.post("/api/generate", json={"model": "tiny-xlmr", "keep_alive": 0}).status_code == 200
    from tests.support.wait import wait_until

    wait_until(lambda: state()["state"] == "available", 30, what="tiny-xlmr unloaded")  # past "unloading"
    assert not state()["loaded"] and state()["resident_bytes"] == 0


def test_tokenize_counts_equal_embeds_token_count(client):
    texts = ["the quick brown fox", "embedding models map sentences to dense vectors", "a"]
    r = client.post("/ui/api/tokenize", json={"model": "tiny-bert", "input": texts})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny-bert" and body["context_length"] == 32
    counts = [len(row) for row in body["tokens"]]
    embed = client.post("/api/embed", json={"model": "tiny-bert", "input": texts}).json()
    assert sum(min(n, body["context_length"]) for n in counts) == embed["prompt_eval_count"]
    assert body["tokens"][0][0] == {"id": body["tokens"][0][0]["id"], "text": "[CLS]", "special": True}
    assert "".join(t["text"] for t in body["tokens"][0][1:-1]) == "thequickbrownfox"  # each token's piece of text
    assert not any(t["special"] for t in body["tokens"][0][1:-1]) and body["tokens"][0][-1]["text"] == "[SEP]"
    for bad in ({"model": "tiny-bert", "input": []}, {"model": "tiny-bert", "input": [""]}, {"input": "text"}):
        assert client.post("/ui/api/tokenize", json=bad).status_code == 400, bad
    assert client.post("/ui/api/tokenize", json={"model": "nope", "input": ["a"]}).status_code == 404


def test_stats_count_the_requests_and_leave_the_console_out(client):
    def route(stats: dict, path: str) -> dict:
        return next((r for r in stats["routes"] if r["route"] == path), {"requests": 0, "failed": 0})

    before = client.get("/ui/api/stats").json()
    for _ in range(7):
        assert client.post("/api/embed", json={"model": "tiny-bert", "input": ["one", "two", "three"]}).status_code == 200
    assert client.post("/api/embed", json={"model": "nope", "input": ["x"]}).status_code == 404
    for _ in range(5):
        client.get("/ui/api/models")
    after = client.get("/ui/api/stats").json()
    assert route(after, "/api/embed")["requests"] - route(before, "/api/embed")["requests"] == 8
    assert route(after, "/api/embed")["failed"] - route(before, "/api/embed")["failed"] == 1
    assert after["totals"]["inputs"] - before["totals"]["inputs"] == 21
    assert after["totals"]["tokens"] - before["totals"]["tokens"] > 21
    assert not any(r["route"].startswith("/ui") for r in after["routes"])
    embed = route(after, "/api/embed")
    assert 0 < embed["p50_ms"] <= embed["p95_ms"] <= 30_000
    assert after["queue"] == {"tiny-bert": 0} and after["resident_bytes"] > 0
    assert after["interval_s"] == 2 and after["window_s"] == 300 and after["since"] <= after["now"]
    # the Prometheus counter says the same
    metrics = client.get("/metrics").text
    total = sum(float(v) for v in re.findall(r'embed_http_requests_total\{route="/api/embed",status="\d+"\} (\S+)',
                                             metrics))
    assert total == route(after, "/api/embed")["requests"]  # the window covers the whole of this app's life


def test_points_are_rates_between_samples():
    """Each point is the change between two samples divided by the time between them; quantiles per interval."""

    class Counter:
        def __init__(self, samples):
            self.samples = samples

        def collect(self):
            return [type("Family", (), {"samples": list(self.samples)})()]

    def sample(name, value, **labels):
        return type("Sample", (), {"name": name, "value": value, "labels": labels})()

    metrics = type("Metrics", (), {})()
    requests, seconds = [], []
    metrics.requests, metrics.request_seconds = Counter(requests), Counter(seconds)
    metrics.inputs, metrics.tokens = Counter([]), Counter([])
    live = LiveStats(metrics, lambda: {"m": 3}, interval=2)
    live.sample()

    def observe(count: int, bucket_counts: list[int]):
        requests[:] = [sample("embed_http_requests_total", count, route="/api/embed", status="200")]
        seconds[:] = [sample("embed_http_request_seconds_bucket", c, route="/api/embed", le=le)
                      for le, c in zip(("0.1", "1.0", "+Inf"), bucket_counts)]

    observe(10, [0, 10, 10])
    live.sample()
    live.ring[-1].at = live.ring[0].at + 2.0  # two seconds later
    view = live.view()
    point = view["points"][-1]
    assert point["requests_per_s"] == pytest.approx(5.0) and point["queue"] == 3
    (embed,) = view["routes"]
    assert embed["requests"] == 10 and embed["p50_ms"] == pytest.approx(550.0) and embed["p95_ms"] == pytest.approx(955.0)


def test_quantile_interpolates_as_prometheus():
    bounds = [0.1, 1.0, float("inf")]
    assert quantile(0.5, bounds, [0, 0, 0]) is None
    assert quantile(0.5, bounds, [4, 4, 4]) == pytest.approx(0.05)
    assert quantile(0.5, bounds, [0, 10, 10]) == pytest.approx(0.55)
    assert quantile(0.95, bounds, [0, 0, 3]) == 1.0  # in the last bucket: its lower bound
    # against numpy's on uniform data in fine buckets
    edges = list(np.linspace(0.01, 1.0, 100)) + [float("inf")]
    data = np.random.default_rng(0).uniform(0, 1, 20_000)
    cumulative = [int((data <= b).sum()) for b in edges]
    for q in (0.5, 0.95):
        assert quantile(q, edges, cumulative) == pytest.approx(np.quantile(data, q), abs=0.011)
