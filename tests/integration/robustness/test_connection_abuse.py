"""Connection-level abuse against a live server: stalled bodies, idle and garbage connections, and clients
that leave before their answer (whose queued work the engine must drop, as /metrics proves)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest

from tests.integration.robustness.robustness_support import (
    JSON_HEADERS,
    MODEL,
    OLLAMA,
    OPENAI,
    assert_serving,
    http_request,
    inputs_embedded,
    jbytes,
    live_server,
    queue_depth,
    read_response,
    scrape,
    sentences,
    server_errors,
    wait_until,
)

MAX_BATCH = 32  # EMBED_MAX_BATCH_SIZE default: the most inputs one forward pass can hold
OCCUPY = 128  # inputs of the request that keeps the worker busy: ~200 tokens each, so seconds of work


def occupying_texts(tag: str) -> list[str]:
    """Long inputs (close to MiniLM's 256-token context): a few seconds of forward passes even on a fast box,
    and fewer than the 0.9 x 1000 the queue gauge must show before an abandoned request is closed."""
    return sentences(OCCUPY, 180, tag, seed=len(tag))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory, "connection-abuse") as s:
        yield s


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


def send_and_abandon(server, path: str, texts: list[str], wait_until_queued: bool) -> None:
    """Send an embed request for ``texts`` on a raw socket and close it without reading the answer.
    With ``wait_until_queued``, close only once the queue gauge shows its inputs waiting (the caller keeps
    other queued work under 0.9 x len(texts), so the gauge cannot be fooled by it)."""
    sock = open_socket(server)
    sock.sendall(http_request("POST", path, jbytes({"model": MODEL, "input": texts}), JSON_HEADERS))
    if wait_until_queued:
        wait_until(lambda: queue_depth(server.base) >= len(texts) * 0.9, timeout=60,
                   what="the abandoned request to be queued")
    sock.close()


def test_abandoned_requests_are_dropped_by_the_engine(server):
    """A (128 long inputs) occupies the worker; B1 (1000 short inputs) is sent and closed at once, B2 (1000)
    is closed only once its inputs sit in the queue. Neither may be embedded: embed_inputs_total grows by
    A's inputs only, plus at most one batch of B2 that was already running when it left, and B2's inputs
    leave the queue at once."""
    a_texts = occupying_texts("a")
    before = inputs_embedded(server.base)
    a_thread, a_out = start_in_thread(
        lambda: httpx.post(server.base + OLLAMA, json={"model": MODEL, "input": a_texts}, timeout=900))
    wait_until(lambda: queue_depth(server.base) > 0, timeout=60, what="A to be queued")

    send_and_abandon(server, OLLAMA, sentences(1000, 24, "b1", seed=2), wait_until_queued=False)
    send_and_abandon(server, OPENAI, sentences(1000, 24, "b2", seed=3), wait_until_queued=True)
    dropped_in = wait_until(lambda: queue_depth(server.base) <= len(a_texts), timeout=30,
                            what="B2's inputs to leave the queue")
    still_running = a_thread.is_alive()
    a_thread.join(900)
    assert "error" not in a_out, a_out
    a = a_out["result"]
    assert a.status_code == 200 and len(a.json()["embeddings"]) == len(a_texts)
    wait_until(lambda: queue_depth(server.base) == 0, timeout=30, what="an empty queue")
    growth = inputs_embedded(server.base) - before
    print(f"\n[abandon] embed_inputs_total grew by {growth:.0f} for A={len(a_texts)} (+ B1=1000, B2=1000 "
          f"abandoned); B2 left the queue {dropped_in:.2f}s after its client closed; A still running then: "
          f"{still_running}")
    assert still_running, "A finished before the abandoned requests could be observed; make A larger"
    assert len(a_texts) <= growth <= len(a_texts) + MAX_BATCH, growth
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
    time.sleep(0.5)
    after = scrape(server.base)
    statuses = {(s.labels["route"], s.labels["status"]): s.value
                for s in after["embed_http_requests"] if s.name == "embed_http_requests_total"}
    old = {(s.labels["route"], s.labels["status"]): s.value
           for s in before["embed_http_requests"] if s.name == "embed_http_requests_total"}
    new = {k: v - old.get(k, 0) for k, v in statuses.items() if v - old.get(k, 0)}
    print(f"\n[abandon] requests counted meanwhile: {new}")
    assert not {k: v for k, v in new.items() if k[1].startswith("5")}, new
    assert new.get((OLLAMA, "499")) == 1 and new.get((OPENAI, "499")) == 1, new
    assert server_errors(server.base) == {}
    assert_serving(server)
