"""Connection-level abuse against a live server: stalled bodies, idle and garbage connections, and clients
that leave before their answer (whose queued work the engine must drop, as /metrics proves)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from embedding_server.settings import Settings
from tests.integration.robustness.robustness_support import (
    JSON_HEADERS,
    MODEL,
    OLLAMA,
    OPENAI,
    assert_serving,
    http_request,
    jbytes,
    metric,
    queue_depth,
    read_response,
    scrape,
    sentences,
    server_errors,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # a live server process kept busy for seconds: left out of make test-fast

MAX_BATCH = Settings().max_batch_size  # as the server reads it (EMBED_MAX_BATCH_SIZE): most inputs per forward
OCCUPY = 128  # inputs of the request that keeps the worker busy: ~200 tokens each, so seconds of work


def occupying_texts(tag: str) -> list[str]:
    """Long inputs (close to MiniLM's 256-token context): a few seconds of forward passes even on a fast box,
    and fewer than the 0.9 x 1000 the queue gauge must show before an abandoned request is closed."""
    return sentences(OCCUPY, 180, tag, seed=len(tag))


def open_socket(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)


def timed_serving(server) -> float:
    started = time.perf_counter()
    assert_serving(server)
    return time.perf_counter() - started


# ----- stalls --------------------------------------------------------------------------------------
def test_stalled_bodies_and_headers_do_not_block_other_clients(server):
    """30 clients send headers and part of a body (Content-Length promises more), 10 more stop in the
    middle of their headers, 50 sit idle: all other clients still get answers, promptly, meanwhile."""
    body = jbytes({"model": MODEL, "input": ["a request whose body never finishes"]})
    stalled: list[socket.socket] = []
    try:
        for i in range(30):
            s = open_socket(server)
            s.sendall(http_request("POST", OLLAMA if i % 2 else OPENAI, body, JSON_HEADERS)[:-len(body) // 2])
            stalled.append(s)
        for _ in range(10):
            s = open_socket(server)
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            stalled.append(s)
        for _ in range(50):
            stalled.append(open_socket(server))
        latencies = [timed_serving(server) for _ in range(5)]
        print(f"\n[stalls] {len(stalled)} stalled/idle connections; normal requests took "
              f"{', '.join(f'{x:.2f}' for x in latencies)}s")
        assert max(latencies) < 10.0
        # A stalled body that finally completes is answered normally.
        first = stalled[0]
        first.sendall(http_request("POST", OPENAI, body, JSON_HEADERS)[-len(body) // 2:])
        answer = read_response(first)
        assert answer.status == 200 and len(answer.json()["data"]) == 1
    finally:
        for s in stalled:
            s.close()
    assert_serving(server)


def test_client_vanishing_mid_body_is_harmless(server):
    """Clients that send half a body and close (or reset) the connection leave no trace but a log line."""
    body = jbytes({"model": MODEL, "input": sentences(50, 20, "vanish")})
    for i in range(20):
        s = open_socket(server)
        s.sendall(http_request("POST", OLLAMA if i % 2 else OPENAI, body, JSON_HEADERS)[:-len(body) // 3])
        if i % 4 == 0:  # RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    assert_serving(server)
    assert server_errors(server.base) == {}


def test_garbage_and_oversized_http_is_refused_and_harmless(server):
    """Not-HTTP bytes, a 100 kB header, a bad Content-Length: refused (4xx or closed), server unaffected."""
    probes = [
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello on the plain port
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n12345",
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for probe in probes:
        with open_socket(server) as s:
            s.sendall(probe)
            s.settimeout(30)
            try:
                head = s.recv(64)
            except ConnectionResetError:
                head = b""
            assert head == b"" or head.startswith(b"HTTP/1.1 4"), (probe[:40], head)
    assert_serving(server)
    assert server_errors(server.base) == {}


def test_pipelined_requests_are_answered_in_order(server):
    """Two requests written back to back on one connection: two answers, in order (HTTP/1.1 pipelining)."""
    a = http_request("POST", OLLAMA, jbytes({"model": MODEL, "input": ["first"]}), JSON_HEADERS)
    b = http_request("POST", OLLAMA, jbytes({"model": MODEL, "input": ["second", "third"]}), JSON_HEADERS)
    with open_socket(server) as s:
        s.sendall(a + b)
        first, second = read_response(s), read_response(s)
    assert first.status == second.status == 200
    assert len(first.json()["embeddings"]) == 1 and len(second.json()["embeddings"]) == 2


# ----- clients that leave: the engine drops their work -------------------------------------------------
def start_in_thread(fn, *args) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run():
        try:
            out["result"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@dataclass(frozen=True)
class Counters:
    """One /metrics scrape: queued inputs (gauge), forward passes run, inputs embedded, and embed requests
    answered 499 (client gone), all read from one response."""

    depth: float
    batches: float
    inputs: float
    gone: float


def counters(server) -> Counters:
    samples = scrape(server.base)
    gone = sum(v for (route, status), v in request_counts(samples).items()
               if route in (OLLAMA, OPENAI) and status == "499")
    return Counters(depth=metric(samples, "embed_queue_depth", model=MODEL),
                    batches=metric(samples, "embed_batch_size", "embed_batch_size_count", model=MODEL),
                    inputs=metric(samples, "embed_inputs", "embed_inputs_total", model=MODEL), gone=gone)


def request_counts(samples: dict[str, list]) -> dict[tuple[str, str], float]:
    """{(route, status): count} of embed_http_requests_total in one scrape."""
    return {(s.labels["route"], s.labels["status"]): s.value
            for s in samples.get("embed_http_requests", []) if s.name == "embed_http_requests_total"}


def poll_counters(server, done, timeout: float, what: str) -> list[Counters]:
    """Scrape until ``done(latest)``; every scrape, in order. Raises AssertionError on timeout."""
    seen: list[Counters] = []

    def check() -> bool:
        seen.append(counters(server))
        return done(seen[-1])

    wait_until(check, timeout=timeout, what=what)
    return seen


def send_and_abandon(server, path: str, texts: list[str], wait_until_queued: bool) -> list[Counters]:
    """Send an embed request for ``texts`` on a raw socket and close it without reading the answer.
    With ``wait_until_queued``, close only once the queue gauge shows its inputs waiting (the caller keeps
    other queued work under 0.9 x len(texts), so the gauge cannot be fooled by it); returns the scrapes
    made meanwhile (the last one shows them queued)."""
    sock = open_socket(server)
    sock.sendall(http_request("POST", path, jbytes({"model": MODEL, "input": texts}), JSON_HEADERS))
    seen: list[Counters] = []
    if wait_until_queued:
        seen = poll_counters(server, lambda c: c.depth >= len(texts) * 0.9, timeout=60,
                             what="the abandoned request to be queued")
    sock.close()
    return seen


def test_abandoned_requests_are_dropped_by_the_engine(server):
    """A (128 long inputs) occupies the worker; B1 (1000 short inputs) is sent and closed at once, B2 (1000)
    is closed only once its inputs sit in the queue. Neither may be embedded. The server's own counters show
    it, read at the moment it has answered both departures (499 counted: until_disconnect has cancelled the
    request, and with it dropped its queued inputs), so no timing is assumed:

    - By then B1's and B2's inputs are out of the queue, and not by being embedded: from the last scrape
      that shows B2 queued to that one, the queue shrank by more than the forward passes started in between
      could have taken (each takes at most max_batch_size inputs; one may have started and not yet be
      counted, one more for the gauge and the counter being read a moment apart).
    - Only forward passes started after B1 was sent and before the departures were answered can hold their
      inputs: those counted between a scrape before B1 was sent and that scrape, plus the one still running
      then. The scheduler interleaves B2's inputs with A's, and the worker may start a pass before the server
      notices the disconnect, so some of B2 may be embedded, but at most max_batch_size per such pass
      (typically one or two passes, far below the 2000 abandoned): embed_inputs_total grows by A's inputs
      plus at most that, once A is answered and the queue is empty."""
    a_texts = occupying_texts("a")
    before = counters(server)
    a_thread, a_out = start_in_thread(
        lambda: httpx.post(server.base + OLLAMA, json={"model": MODEL, "input": a_texts}, timeout=900))
    wait_until(lambda: queue_depth(server.base) > 0, timeout=60, what="A to be queued")

    window_start = counters(server)
    send_and_abandon(server, OLLAMA, sentences(1000, 24, "b1", seed=2), wait_until_queued=False)
    last_queued = send_and_abandon(server, OPENAI, sentences(1000, 24, "b2", seed=3), wait_until_queued=True)[-1]
    answered = poll_counters(server, lambda c: c.gone >= window_start.gone + 2, timeout=30,
                             what="the server to answer both departed clients (499)")[-1]
    a_running = a_thread.is_alive()
    a_thread.join(900)
    assert "error" not in a_out, a_out
    a = a_out["result"]
    assert a.status_code == 200 and len(a.json()["embeddings"]) == len(a_texts)
    wait_until(lambda: queue_depth(server.base) == 0, timeout=30, what="an empty queue")
    after = counters(server)

    shrink = last_queued.depth - answered.depth
    passes_between = answered.batches - last_queued.batches
    abandoned_embedded = after.inputs - before.inputs - len(a_texts)
    window_passes = answered.batches - window_start.batches + 1
    print(f"\n[abandon] queue {last_queued.depth:.0f} -> {answered.depth:.0f} by the 499s, {passes_between:.0f} "
          f"forward passes finished meanwhile (A still running: {a_running}); {abandoned_embedded:.0f} of the "
          f"2000 abandoned inputs embedded, at most {MAX_BATCH} in each of {window_passes:.0f} passes allowed")
    assert answered.depth <= len(a_texts), f"{answered.depth:.0f} inputs still queued after both clients left"
    assert shrink > MAX_BATCH * (passes_between + 2), (
        f"the queue shrank by {shrink:.0f} inputs while {passes_between:.0f} forward passes finished: B2's "
        f"inputs were embedded, not dropped")
    assert 0 <= abandoned_embedded <= MAX_BATCH * window_passes, (
        f"{abandoned_embedded:.0f} inputs of the abandoned requests were embedded; at most {MAX_BATCH} in each "
        f"of the {window_passes:.0f} forward passes started before their departure was answered")
    assert_serving(server)


def test_abandoned_requests_are_not_server_errors(server):
    """A client that leaves is not a server failure: no 5xx may be counted (the access log says 499)."""
    before = scrape(server.base)
    occupy_thread, _ = start_in_thread(
        lambda: httpx.post(server.base + OLLAMA, json={"model": MODEL, "input": occupying_texts("o")},
                           timeout=900))
    wait_until(lambda: queue_depth(server.base) > 0, timeout=60, what="the occupying request to be queued")
    for path in (OLLAMA, OPENAI):
        send_and_abandon(server, path, sentences(1000, 24, f"leave{path}", seed=4), wait_until_queued=True)
        wait_until(lambda: queue_depth(server.base) <= OCCUPY, timeout=30, what="the abandoned inputs to be dropped")
    occupy_thread.join(900)
    old = request_counts(before)

    def counted_since() -> dict[tuple[str, str], float]:
        now = request_counts(scrape(server.base))
        return {k: v - old.get(k, 0) for k, v in now.items() if v - old.get(k, 0)}

    # The access counter records a request when its handler ends, whatever the status: wait until all three
    # embed requests (the occupying one and the two abandoned) are counted, then look at their statuses.
    wait_until(lambda: sum(v for (route, _), v in counted_since().items() if route in (OLLAMA, OPENAI)) >= 3,
               timeout=30, what="the three embed requests to be counted")
    new = counted_since()
    print(f"\n[abandon] requests counted meanwhile: {new}")
    assert not {k: v for k, v in new.items() if k[1].startswith("5")}, new
    assert new.get((OLLAMA, "499")) == 1 and new.get((OPENAI, "499")) == 1, new
    assert server_errors(server.base) == {}
    assert_serving(server)
