"""Unauthenticated clients against a live keyed server (issue #24, section 3): their bodies are refused before
they are read, so a flood of them cannot stall authenticated clients or /health (whose failures would restart
the pod). Traffic goes to 127.0.0.1 only; every loop is bounded in count and time."""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx
import pytest

from tests.integration.robustness.robustness_support import (
    JSON_HEADERS,
    MODEL,
    OLLAMA,
    OPENAI,
    http_request,
    live_server,
    read_response,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # a live server process under a flood: left out of make test-fast

KEY = "flood-test-key"
MESSAGE = "invalid or missing API key (send Authorization: Bearer <key> or X-API-Key: <key>)"
SHAPES = {OLLAMA: {"error": MESSAGE}, "/embeddings": {"detail": MESSAGE},
          "/embed": {"error": MESSAGE, "error_type": "Validation"},
          OPENAI: {"error": {"message": MESSAGE, "type": "authentication_error", "param": None,
                             "code": "invalid_api_key"}}}
# ~15 MB of JSON that is slow to parse (3.75M floats: ~1.3 s of json.loads each, on the event loop before the fix).
FLOOD_BODY = b'{"model":"' + MODEL.encode() + b'","input":[' + b"1e1," * 3_750_000 + b'1e1]}'
FLOODERS, MAX_ROUNDS = 3, 300  # concurrent unauthenticated clients; most bodies each (the flood stops sooner)
PROBES = 6  # rounds of an authenticated query and a /health probe, sent one after another during the flood
SLOWEST_ALLOWED = 3.0  # seconds for any of them (measured here: 0.1-1 s; 10.4 s before the fix)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    with live_server(tmp_path_factory, "keyed", env={"EMBED_API_KEY": KEY}) as s:
        yield s


@pytest.mark.parametrize("path", list(SHAPES))
def test_401_arrives_before_the_body_is_sent(path, keyed_server):
    """Headers declaring 15 MB and the first 64 KiB of the body, then nothing: the 401 (in the route's shape)
    comes anyway, so the server cannot have read, let alone parsed, the body. Before the fix it waited for
    the rest of the body."""
    with socket.create_connection(("127.0.0.1", keyed_server.port), timeout=30) as sock:
        sock.sendall(http_request("POST", path, FLOOD_BODY[:65536], JSON_HEADERS, content_length=len(FLOOD_BODY)))
        answered = select.select([sock], [], [], 15)[0]
        assert answered, f"{path}: no answer within 15 s while the body was still unsent"
        r = read_response(sock)
    assert r.status == 401 and r.json() == SHAPES[path], (path, r.status, r.body[:300])


def test_authenticated_clients_are_served_during_a_flood(keyed_server):
    """FLOODERS clients send unauthenticated 15 MB bodies back to back, to every dialect's route; once each has
    had its first answer, PROBES rounds of an authenticated /api/embed query and a /health probe are sent. Every
    flood request gets its 401, every query and probe its 200, none slower than SLOWEST_ALLOWED, and the flood
    lasts until the probes are done. Before the fix each body was parsed on the event loop (~1.3 s each, 3 at a
    time) and queries and /health waited several seconds."""
    base, statuses, errors, stop = keyed_server.base, [], [], threading.Event()
    paths, key = list(SHAPES), {"Authorization": f"Bearer {KEY}"}

    def flood(n: int) -> None:
        try:
            with httpx.Client(timeout=120) as c:
                for i in range(MAX_ROUNDS):
                    if stop.is_set():
                        return
                    r = c.post(base + paths[(n + i) % len(paths)], content=FLOOD_BODY, headers=JSON_HEADERS)
                    statuses.append(r.status_code)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(FLOODERS)]
    latencies: list[float] = []
    with httpx.Client(timeout=120) as c:
        assert c.post(base + OLLAMA, json={"model": MODEL, "input": "warm"}, headers=key).status_code == 200
        try:
            for t in threads:
                t.start()
            wait_until(lambda: len(statuses) >= FLOODERS or errors, timeout=120, interval=0.05,
                       what="the flood to be under way (as many refusals as flooders)")
            for _ in range(PROBES):
                for method, url, kwargs in (("POST", base + OLLAMA, {"json": {"model": MODEL, "input": "query"},
                                                                       "headers": key}),
                                            ("GET", base + "/health", {})):
                    started = time.perf_counter()
                    r = c.request(method, url, **kwargs)
                    latencies.append(time.perf_counter() - started)
                    assert r.status_code == 200, (url, r.status_code, r.text[:300])
            flood_lasted = all(t.is_alive() for t in threads)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
    print(f"\n[flood] {len(statuses)} unauthenticated 15 MB bodies; {len(latencies)} queries and probes meanwhile, "
          f"slowest {max(latencies):.2f}s")
    assert not errors and statuses and set(statuses) == {401}, (errors, statuses)
    assert flood_lasted, "the flood ended before the probes did: raise MAX_ROUNDS"
    assert max(latencies) < SLOWEST_ALLOWED, f"a query or /health waited {max(latencies):.2f}s during the flood"
