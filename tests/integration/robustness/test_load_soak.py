"""Soak: 12 concurrent clients mixing valid and invalid requests for ~75 s against a live server with the
real MiniLM. No 5xx, no lost or mismatched answer (every vector checked against vectors computed once up
front, allclose 1e-5), and the server's memory stable. After a 15 s warm-up the load runs in four parts,
each followed by an idle pause, and the RSS the server keeps once idle is read after each.

What is kept settles for minutes after start (oneDNN caches kernels by shape, the allocator's per-thread
heaps fragment): measured over 29 parts of 15 s, steps of ~2 MB per part with an occasional one of up to
~13 MB, then ~0.3 MB per part from the 5th minute on; two readings 30 s apart once differed by 26.9 MB. A
leak grows what is kept in every part, so the test bounds the median growth per part (0.5 MB/s) and the
total (40 MB). A planted leak of 128 KB per forward pass fails both; for slower leaks run
bench/load_run.py for longer. Under load RSS also holds the allocator's free blocks, which the server trims
past EMBED_HEAP_TRIM_MB: each part's peak must stay within that allowance (plus 100 MB for the work in
flight) over what was kept before it.

ROBUSTNESS_SOAK_SECONDS and ROBUSTNESS_SOAK_CLIENTS change the run; bench/load_run.py runs the same load
against any server for as long as wanted.
"""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from embedding_server.settings import Settings
from tests.integration.robustness.robustness_support import (
    MODEL,
    assert_serving,
    live_server,
    server_errors,
)
from tests.integration.robustness.soak_load import expected_for, text_pool
from tests.integration.robustness.soak_run import run_soak

pytestmark = pytest.mark.slow  # live server processes under load for minutes: left out of make test-fast

SECONDS = float(os.environ.get("ROBUSTNESS_SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("ROBUSTNESS_SOAK_CLIENTS", "12"))
MAX_GROWTH_RATE_MB_S = 0.5
MAX_KEPT_GROWTH_MB = 40.0
IN_FLIGHT_MB = 100.0
TOKENIZER_CLIENTS, TOKENIZER_REQUESTS = 4, 300  # concurrent clients, requests each


def test_mixed_load_soak(server):
    expected = expected_for(server.base, text_pool())
    soak = run_soak(server.base, expected, seconds=SECONDS, clients=CLIENTS, pid=server.pid)
    print("\n[soak] " + "\n[soak] ".join(soak.lines()))
    print(f"[soak] server-side 5xx counted by the server: {server_errors(server.base) or 'none'}")
    assert soak.total > CLIENTS * 10, "the load barely ran"
    assert soak.server_errors == 0, [r.stats.statuses for r in soak.reports]
    assert not soak.problem_count, soak.problems
    assert soak.growth_rate is not None and soak.growth_rate < MAX_GROWTH_RATE_MB_S, soak.steps
    assert soak.kept_growth < MAX_KEPT_GROWTH_MB, soak.steps
    allowance = Settings.model_fields["heap_trim_mb"].default + IN_FLIGHT_MB
    assert soak.peak_over_kept < allowance
    assert server.alive()
    assert_serving(server)


@pytest.fixture(scope="module")
def counting_server(tmp_path_factory):
    """max_request_tokens=256: two over-long texts are tokenized (twice: at 257 tokens to see they are too
    long, then at 256) and refused with their exact token count, without any forward pass."""
    with live_server(tmp_path_factory, "token-count", env={"EMBED_MAX_REQUEST_TOKENS": "256"}) as s:
        yield s


def test_concurrent_tokenization_keeps_inputs_at_the_context_length(counting_server):
    """Two tokenizer threads serve all requests, and a fast tokenizer's truncation length is shared state
    that every call resets. Many small requests tokenized concurrently must each count exactly 2 x 256
    tokens (unguarded, one thread's 257 leaks into the other's second pass: the text is then embedded with
    257 tokens, a different vector, as the soak saw)."""
    server = counting_server
    expected = "400 too many tokens: 512, limit max_request_tokens=256"
    answers: list[str] = []
    start = threading.Barrier(TOKENIZER_CLIENTS)

    def client(k: int):
        with httpx.Client(timeout=120) as c:
            start.wait(60)  # all clients start together: their requests overlap
            for i in range(TOKENIZER_REQUESTS):
                texts = [f"{k}-{i}-{j} " + "lantern orbit harbor meadow glacier " * 80 for j in range(2)]
                r = c.post(server.base + "/api/embed", json={"model": MODEL, "input": texts})
                answers.append(f"{r.status_code} {r.json().get('error')}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(TOKENIZER_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wrong = [a for a in answers if a != expected]
    print(f"\n[tokenizer race] {len(answers)} concurrent requests, {len(wrong)} with a wrong count: {wrong[:3]}")
    assert len(answers) == TOKENIZER_CLIENTS * TOKENIZER_REQUESTS
    assert not wrong
    one = httpx.post(server.base + "/api/embed", json={"model": MODEL, "input": ["lantern " * 400]}, timeout=60)
    assert one.status_code == 200 and one.json()["prompt_eval_count"] == 256
