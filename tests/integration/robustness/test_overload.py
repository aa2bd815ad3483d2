"""Back-pressure with a deliberately tiny queue (EMBED_MAX_QUEUED_INPUTS=64): while the worker is busy with
a big request, more requests are refused at once (OpenAI 429, Ollama 503, both with Retry-After), and the
official clients behave: openai's built-in retries succeed once the backlog clears, ollama's surfaces the
message."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import ollama
import openai
import pytest

from tests.integration.robustness.robustness_support import (
    JSON_HEADERS,
    LEGACY,
    MODEL,
    OLLAMA,
    OPENAI,
    PROBE_TEXT,
    answer_pending,
    assert_ollama_error,
    assert_openai_error,
    assert_serving,
    embed_body,
    http_request,
    jbytes,
    live_server,
    queue_depth,
    reference_vector,
    sentences,
    server_errors,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # a live server process with a backlog of 2,048 inputs: left out of make test-fast

MAX_QUEUED = 64
BIG = 2048  # inputs of the request that fills the worker (admitted: the queue was empty when it came)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory, "overload", env={"EMBED_MAX_QUEUED_INPUTS": str(MAX_QUEUED)}) as s:
        yield s


class Backlog:
    """A big request on a raw socket, so the test decides when it ends (closing drops its queued work)."""

    def __init__(self, server, n: int = BIG, words: int = 40):
        self.server = server
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        body = jbytes({"model": MODEL, "input": sentences(n, words, "backlog", seed=n)})
        self.sock.sendall(http_request("POST", OLLAMA, body, JSON_HEADERS))
        wait_until(lambda: queue_depth(server.base) > MAX_QUEUED, timeout=120, what="the backlog to be queued")
        self.closed_at: float | None = None

    def release(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        wait_until(lambda: queue_depth(self.server.base) == 0, timeout=60, what="the queue to drain")


def refused(server, path: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    r = httpx.post(server.base + path, json=embed_body(path, PROBE_TEXT), timeout=120)
    return r, time.perf_counter() - started


def test_busy_server_refuses_at_once_in_each_dialect(server):
    """Every refusal is answered while the backlog is still queued and unanswered: none waited for it."""
    with Backlog(server) as backlog:
        results: dict[str, list] = {OLLAMA: [], OPENAI: [], LEGACY: []}

        def client(path):
            results[path].append(refused(server, path))

        threads = [threading.Thread(target=client, args=(p,)) for p in (OLLAMA, OPENAI, LEGACY) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        depth = queue_depth(server.base)
        assert depth > MAX_QUEUED and answer_pending(backlog.sock), "a refusal waited for the backlog"
        slowest = 0.0
        for path, answers in results.items():
            assert len(answers) == 4
            for r, seconds in answers:
                slowest = max(slowest, seconds)
                if path == OPENAI:
                    err = assert_openai_error(r, 429, type_="rate_limit_error", code="server_busy",
                                              contains="server busy")
                    assert f"max_queued_inputs={MAX_QUEUED}" in err["message"]
                else:
                    msg = assert_ollama_error(r, 503)
                    assert msg.startswith("server busy") and f"max_queued_inputs={MAX_QUEUED}" in msg
                assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
        print(f"\n[overload] 12 refusals while {depth:.0f} inputs were queued; slowest refusal {slowest:.2f}s")
        # Light routes stay open while the model is saturated.
        assert httpx.get(server.base + "/health", timeout=10).status_code == 200
        assert httpx.get(server.base + "/v1/models", timeout=10).status_code == 200
    assert_serving(server)
    # (The 503s are the Ollama refusals above; the released backlog's departure is covered by
    # test_connection_abuse.py::test_abandoned_requests_are_not_server_errors.)
    print(f"[overload] server-side 5xx so far: {server_errors(server.base)}")


def test_openai_client_default_retries_succeed_once_the_backlog_clears(server):
    """openai (default max_retries=2) gets 429 + Retry-After: 1, sleeps, retries. The backlog is cleared
    when the first 429 is seen (its client leaves, so the engine drops its queued inputs): the retry must
    then succeed, with the right vector, well within the client's default retry budget."""
    statuses: list[int] = []
    backlogs: list[Backlog] = []

    def on_response(response):
        statuses.append(response.status_code)
        if response.status_code == 429:
            for backlog in backlogs:
                backlog.release()

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", http_client=http_client)
    assert client.max_retries == 2  # the library default, untouched
    with Backlog(server) as backlog:
        backlogs.append(backlog)
        started = time.perf_counter()
        result = client.embeddings.create(model=MODEL, input=[PROBE_TEXT])
        seconds = time.perf_counter() - started
    print(f"\n[overload] openai client statuses {statuses}, succeeded after {seconds:.2f}s")
    assert statuses[0] == 429 and statuses[-1] == 200
    assert len(statuses) <= 3  # one call + at most the two default retries
    got = np.asarray(result.data[0].embedding, dtype=np.float64)
    assert np.allclose(got, reference_vector(server), atol=1e-5)


def test_openai_client_without_retries_sees_rate_limit_error(server):
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0)
    with Backlog(server), pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model=MODEL, input=["x"])
    assert caught.value.status_code == 429
    assert caught.value.code == "server_busy"
    assert_serving(server)


def test_ollama_client_surfaces_server_busy(server):
    client = ollama.Client(host=server.base)
    with Backlog(server), pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=MODEL, input=["x"])
    assert caught.value.status_code == 503 and caught.value.error.startswith("server busy")
    assert_serving(server)


def test_a_request_larger_than_the_queue_is_served_when_idle(server):
    """The limit bounds waiting work, not request size: with an empty queue, 200 inputs (> 64) are served, each
    with the vector and token count it gets in requests under the limit."""
    texts = sentences(200, 8, "idle")
    assert queue_depth(server.base) == 0
    r = httpx.post(server.base + OLLAMA, json={"model": MODEL, "input": texts}, timeout=600)
    assert r.status_code == 200, r.text[:300]
    parts = [httpx.post(server.base + OLLAMA, json={"model": MODEL, "input": texts[i:i + 50]}, timeout=120)
             for i in range(0, len(texts), 50)]  # 50 < MAX_QUEUED: admitted one after another
    assert [p.status_code for p in parts] == [200] * 4
    whole = np.asarray(r.json()["embeddings"], dtype=np.float64)
    assert whole.shape == (200, 384)
    assert np.allclose(whole, np.concatenate([p.json()["embeddings"] for p in parts]), atol=1e-5)
    assert r.json()["prompt_eval_count"] == sum(p.json()["prompt_eval_count"] for p in parts) > 200
