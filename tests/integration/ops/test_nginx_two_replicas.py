"""Two server processes behind nginx, configured from deploy/nginx/nginx.conf itself (the compose
"replicas" profile), rewritten only where a test must: loopback addresses, files inside tmp, foreground.

One client's mixed load (Ollama and OpenAI dialects, 8 threads) through the balancer: no error, every
vector right, and both replicas took a share.
"""

from __future__ import annotations

import base64
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.ops.ops_helpers import MINILM, TEXTS, min_cosine, sample_sum, scrape, stop, vectors_of
from tests.support.server import free_port, running_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # two live server processes behind nginx: left out of make test-fast

DEPLOY_CONF = Path(__file__).resolve().parents[3] / "deploy" / "nginx" / "nginx.conf"
REQUESTS, THREADS = 300, 8
ROUTES = ("/api/embed", "/v1/embeddings")
POOL = TEXTS + [f"document {i}: {w} search on a cpu" for i, w in enumerate(
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split())]


def _nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def _config(tmp: Path, listen: int, backends: list[int]) -> str:
    """deploy/nginx/nginx.conf with loopback upstreams/listen, and every file nginx writes inside tmp."""
    conf = DEPLOY_CONF.read_text()
    ports = iter(backends)
    conf, n = re.subn(r"(\bserver\s+)[A-Za-z0-9.-]+:\d+", lambda m: f"{m.group(1)}127.0.0.1:{next(ports)}", conf)
    assert n == len(backends), f"expected {len(backends)} upstream servers in {DEPLOY_CONF}, found {n}"
    conf, n = re.subn(r"\blisten\s+\d+\s*;", f"listen 127.0.0.1:{listen};", conf)
    assert n == 1, f"expected one `listen <port>;` in {DEPLOY_CONF}"
    conf, n = re.subn(r"\baccess_log\s+/\S+;", f"access_log {tmp}/access.log;", conf)
    assert n == 1
    conf, n = re.subn(r"\berror_log\s+\S+\s+(\w+);", rf"error_log {tmp}/error.log \1;", conf)
    assert n == 1
    temp = "".join(f"    {kind}_temp_path {tmp}/{kind}_temp;\n" for kind in
                   ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf, n = re.subn(r"\bhttp\s*\{\n", lambda m: m.group(0) + temp, conf)
    assert n == 1
    head = f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n"
    if os.geteuid() == 0:  # workers would switch to `nobody`, which cannot enter pytest's 0700 tmp dirs
        head += "user root;\n"
    return head + conf


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    binary = _nginx()
    if binary is None:
        reason = "nginx is not installed (CI: apt-get install -y nginx)"
        print(f"SKIP {__name__}: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def replicas(empty_models_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replica-logs")
    with running_server(empty_models_dir, env={"PYTHONUNBUFFERED": "1"}, log_path=logs / "a.log") as (a, _), \
            running_server(empty_models_dir, env={"PYTHONUNBUFFERED": "1"}, log_path=logs / "b.log") as (b, _):
        yield a, b


@pytest.fixture(scope="module")
def balancer(nginx_binary, replicas, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    listen = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(_config(tmp, listen, [int(url.rsplit(":", 1)[1]) for url in replicas]))
    cmd = [nginx_binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr + conf.read_text()
    with open(tmp / "nginx.out", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{listen}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp / "error.log").read_text(errors="replace")
            try:
                return httpx.get(f"{base}/nginx-health", timeout=2).text == "ok\n"
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, interval=0.1, what="nginx to come up")
        yield base, tmp
    finally:
        stop(proc)


def _served_200(base: str) -> float:
    families = scrape(base)
    return sum(sample_sum(families, "embed_http_requests_total", route=route, status="200") for route in ROUTES)


def _not_200(base: str) -> float:
    return sum(s.value for s in scrape(base).get("embed_http_requests", [])
               if s.name == "embed_http_requests_total" and s.labels["route"] in ROUTES and s.labels["status"] != "200")


def test_load_through_nginx_is_correct_and_spread(balancer, replicas):
    base, tmp = balancer
    a, b = replicas
    r = httpx.post(f"{a}/api/embed", json={"model": MINILM, "input": POOL}, timeout=120)  # the reference, once
    assert r.status_code == 200, r.text
    reference = {text: vec for text, vec in zip(POOL, vectors_of(r.json()))}
    before = {url: (_served_200(url), _not_200(url)) for url in replicas}

    rng = random.Random(7)
    plan = [(ROUTES[i % 2], rng.sample(POOL, rng.randint(1, 4)), i % 5 == 4) for i in range(REQUESTS)]
    local = threading.local()

    def send(item):
        route, texts, b64 = item
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=120)
        body = {"model": MINILM, "input": texts}
        if route == "/v1/embeddings" and b64:
            body["encoding_format"] = "base64"
        response = local.client.post(route, json=body)
        if response.status_code != 200:
            return route, texts, response.status_code, response.text[:300]
        data = response.json()
        if route == "/v1/embeddings" and b64:
            got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                            for d in sorted(data["data"], key=lambda d: d["index"])])
        else:
            got = vectors_of(data)
        return route, texts, 200, got

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(send, plan))

    errors = [(route, status, body) for route, _, status, body in results if status != 200]
    assert not errors, f"{len(errors)} errors through nginx, first: {errors[:3]}"
    for route, texts, _, got in results:
        want = np.stack([reference[t] for t in texts])
        assert got.shape == want.shape == (len(texts), 384), route
        assert min_cosine(got, want) >= 0.99999 and np.allclose(got, want, atol=1e-5), (route, texts)

    share = {url: _served_200(url) - before[url][0] for url in replicas}
    assert all(n > 0 for n in share.values()), f"one replica took no requests: {share}"
    assert sum(share.values()) == REQUESTS, share  # each request served exactly once: no retries
    assert all(_not_200(url) == before[url][1] for url in replicas)
    print(f"requests per replica: {share}")

    embed_lines = [line for line in (tmp / "access.log").read_text().splitlines()
                   if any(f'"POST {route} ' in line for route in ROUTES)]
    assert len(embed_lines) == REQUESTS and all('" 200 ' in line for line in embed_lines)
    problems = [line for line in (tmp / "error.log").read_text(errors="replace").splitlines()
                if re.search(r"\[(error|crit|alert|emerg)\]", line)]
    assert not problems, "\n".join(problems[:10])


def test_other_routes_pass_through_nginx(balancer):
    base, _ = balancer
    assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
    tags = httpx.get(f"{base}/api/tags", timeout=10).json()
    assert f"{MINILM}:latest" in [m["name"] for m in tags["models"]]
    bad = httpx.post(f"{base}/api/embed", json={"model": "nope", "input": "x"}, timeout=10)
    assert (bad.status_code, bad.json()) == (404, {"error": "model 'nope' not found"})  # not retried, not masked
