"""Oversized requests: 5 MB strings, bodies over the limit, hostile 16 MB bodies (no stall, no bloat)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.robustness.robustness_support import (
    DIM,
    JSON_HEADERS,
    LEGACY,
    MODEL,
    OLLAMA,
    OPENAI,
    answer_pending,
    assert_error,
    assert_serving,
    embed_body,
    http_request,
    jbytes,
    raw_exchange,
    read_response,
    reference_vector,
    server_read_everything,
    vectors_of,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # live server processes and 16 MB bodies: left out of make test-fast

MIB = 1024 * 1024


# ----- big strings, body limits ----------------------------------------------------------------------
FIVE_MB_PROSE = ("Embedding servers must stay calm when a client sends far too much text at once. " * 70_000)[:5_000_000]


@pytest.mark.parametrize("path", [OLLAMA, OPENAI, LEGACY])
def test_five_megabyte_string_is_cut_to_the_context(path, bad_server, http):
    """One 5 MB string: 200, cut to the 256-token context, and equal to the vector of a prefix that already fills
    the context. (That only a prefix is tokenized, so that it costs no more than a normal request, is
    tests/unit/model/test_encoder_long_inputs.py::test_a_huge_text_is_tokenized_from_a_prefix_only.)"""
    prefix = FIVE_MB_PROSE[:20_000]
    small = http.post(bad_server.base + path, json=embed_body(path, prefix if path == LEGACY else [prefix]))
    assert small.status_code == 200, small.text
    big = http.post(bad_server.base + path, content=jbytes(embed_body(path, FIVE_MB_PROSE)), headers=JSON_HEADERS)
    assert big.status_code == 200, big.text[:300]
    got, want = vectors_of(path, big), vectors_of(path, small)
    assert got.shape == (1, DIM) and np.allclose(got, want, atol=1e-5)
    if path == OLLAMA:
        assert big.json()["prompt_eval_count"] == 256
    elif path == OPENAI:
        assert big.json()["usage"] == {"prompt_tokens": 256, "total_tokens": 256}
    assert_serving(bad_server, http)


SERVED_MEANWHILE = 3  # normal rounds (a request in each dialect) to be answered while the big word is handled


def test_five_megabyte_single_word_does_not_block_others(bad_server):
    """5 MB without whitespace is one [UNK] word for BERT's WordPiece: 200 and the [UNK] vector. The
    tokenizer has to read all of it (seconds of CPU), but on a tokenizer thread: other clients are answered
    meanwhile. Once the server has read the whole request (nothing unread in its socket), normal requests go
    one after another, and each counts only if the big one is still unanswered when it completes; at least
    SERVED_MEANWHILE rounds must (24-38 were, here, on two busy cores or on one). Had the tokenization
    blocked the event loop, the request in flight would wait for it and the next could only race the big
    word's own forward pass: one round at most (0 with the tokenizer run on the event loop, patched in memory)."""
    word = "a" * 5_000_000
    reference_vector(bad_server)  # fetched now, not during the big request
    sock = socket.create_connection(("127.0.0.1", bad_server.port), timeout=300)
    try:
        sock.sendall(http_request("POST", OLLAMA, jbytes({"model": MODEL, "input": word}), JSON_HEADERS))
        wait_until(lambda: server_read_everything(sock), timeout=120, what="the server to read the 5 MB request")
        served = 0
        while served < SERVED_MEANWHILE and answer_pending(sock):
            assert_serving(bad_server)
            if answer_pending(sock):
                served += 1
        r = read_response(sock)
    finally:
        sock.close()
    assert r.status == 200, r.body[:300]
    assert r.json()["prompt_eval_count"] == 3  # [CLS] [UNK] [SEP]
    unk = httpx.post(bad_server.base + OLLAMA, json={"model": MODEL, "input": "a" * 101}, timeout=60)
    assert np.allclose(r.json()["embeddings"], unk.json()["embeddings"], atol=1e-5)
    print(f"\n[5MB one word] {served} normal rounds answered while it was handled")
    assert served >= SERVED_MEANWHILE, (
        f"only {served} normal rounds were answered while the 5 MB word was handled: its tokenization held up "
        f"other clients (or it no longer takes long enough to tell)")


@pytest.mark.parametrize("path", [OLLAMA, OPENAI, LEGACY])
def test_body_over_the_limit_is_413_in_the_dialect_shape(path, small_body_server):
    """Limit 4 MiB, a 5 MB string: 413 whether the size is declared (Content-Length) or streamed (chunked)."""
    data = jbytes(embed_body(path, FIVE_MB_PROSE))
    declared = httpx.post(small_body_server.base + path, content=data, headers=JSON_HEADERS, timeout=120)
    chunks = (data[i:i + 256 * 1024] for i in range(0, len(data), 256 * 1024))
    streamed = httpx.post(small_body_server.base + path, content=chunks, headers=JSON_HEADERS, timeout=120)
    for r in (declared, streamed):
        assert_error(path, r, 413, code="request_too_large", contains="max_body_bytes=4194304")
    assert_serving(small_body_server, paths=(path,))


@pytest.mark.parametrize("path", [OLLAMA, OPENAI])
def test_declared_oversize_is_refused_before_the_body_is_sent(path, small_body_server):
    """Content-Length over the limit: 413 without waiting for (or reading) the body: the answer comes although
    not one byte of the 100 MiB announced is ever sent (waiting for it would never end)."""
    r = raw_exchange(small_body_server.port, http_request("POST", path, b"", JSON_HEADERS,
                                                          content_length=100 * MIB), timeout=120)
    assert r.status == 413 and r.headers.get("connection") == "close"
    body = r.json()
    if path == OPENAI:
        assert body["error"]["code"] == "request_too_large" and set(body["error"]) == {"message", "type", "param",
                                                                                        "code"}
    else:
        assert set(body) == {"error"} and "max_body_bytes" in body["error"]
    assert_serving(small_body_server)


@pytest.mark.parametrize("path", [OLLAMA, OPENAI, LEGACY])
def test_body_over_default_max_body_bytes(path, bad_server):
    """17 MB against the default 16 MiB limit: 413 (declared and streamed), both shapes."""
    data = jbytes(embed_body(path, ["y" * 1000] * 17_000 if path != LEGACY else "z" * 17_000_000))
    assert len(data) > 16 * MIB
    declared = httpx.post(bad_server.base + path, content=data, headers=JSON_HEADERS, timeout=120)
    chunks = (data[i:i + MIB] for i in range(0, len(data), MIB))
    streamed = httpx.post(bad_server.base + path, content=chunks, headers=JSON_HEADERS, timeout=120)
    for r in (declared, streamed):
        assert_error(path, r, 413, code="request_too_large", contains="max_body_bytes=16777216")
    assert_serving(bad_server)


# ----- hostile bodies under the limit: no event-loop stall, no memory blow-up --------------------------------
HOSTILE = {
    # 16 MB bodies that parse as JSON and are refused or answered; what they cost must stay bounded.
    "4M_token_arrays": (OPENAI, b'{"model":"' + MODEL.encode() + b'","input":[' + b"[1]," * (4_000_000 - 1)
                        + b"[1]]}"),
    "8M_token_ids": (OPENAI, b'{"model":"' + MODEL.encode() + b'","input":[' + b"1," * (8_000_000 - 1) + b"1]}"),
    "4M_token_arrays_ollama": (OLLAMA, b'{"model":"' + MODEL.encode() + b'","input":[' + b"[1]," * (4_000_000 - 1)
                               + b"[1]]}"),
    "3M_strings": (OPENAI, b'{"model":"' + MODEL.encode() + b'","input":[' + b'"a",' * (3_000_000 - 1) + b'"a"]}'),
    "4M_ints_then_a_string": (OPENAI, b'{"model":"' + MODEL.encode() + b'","input":[' + b"7," * 4_000_000
                              + b'"x"]}'),
}


def cpu_seconds_to_parse(data: bytes) -> float:
    """CPU seconds this thread spends in json.loads of ``data`` (what the server's event loop must spend at least)."""
    started = time.thread_time()
    json.loads(data)
    return time.thread_time() - started


def loop_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by the server's main thread, the one running its event loop."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_16mb_bodies_do_not_stall_or_bloat_the_server(name, bad_server):
    """A body just under 16 MiB must neither keep the event loop (which answers every client and /health) busy
    much longer than merely parsing it takes, nor multiply into gigabytes of memory (deploy/k8s: 4 GiB limit).
    Parsing is json.loads in the event loop (~1-5 s of CPU for 4M nested arrays): the loop cannot answer anyone
    meanwhile, so what is bounded is the loop's work, in CPU time, which a busy machine does not inflate the way it
    does wall-clock time: the server's main thread may spend at most 2.5 x the CPU time json.loads of the same body
    takes in this process (the larger of a run before and one after the request) + 0.5 s. /health is probed
    throughout and must keep answering 200. The server's peak RSS (VmHWM, reset before the request) may grow by
    less than 40x the body (~640 MB; the parsed JSON alone is ~400 MB for 4M arrays)."""
    path, data = HOSTILE[name]
    assert len(data) < 16 * MIB
    parse_before = cpu_seconds_to_parse(data)
    can_measure_peak = bad_server.reset_peak_rss()
    rss_before = bad_server.status_kb("VmRSS")
    result: dict[str, Any] = {}

    def hostile():
        result["r"] = httpx.post(bad_server.base + path, content=data, headers=JSON_HEADERS, timeout=600)

    loop_before = loop_cpu_seconds(bad_server.pid)
    thread = threading.Thread(target=hostile)
    thread.start()
    worst, probes = 0.0, 0
    while thread.is_alive():  # /health probed every 50 ms while the request is handled: its slowest answer
        started = time.perf_counter()
        assert httpx.get(bad_server.base + "/health", timeout=600).status_code == 200
        worst, probes = max(worst, time.perf_counter() - started), probes + 1
        time.sleep(0.05)
    thread.join()
    loop_cpu = loop_cpu_seconds(bad_server.pid) - loop_before
    r = result["r"]
    parse_cpu = max(parse_before, cpu_seconds_to_parse(data))
    allowed = 2.5 * parse_cpu + 0.5
    peak_growth_mb = (bad_server.status_kb("VmHWM") - rss_before) / 1024 if can_measure_peak else float("nan")
    print(f"\n[hostile {name}] {r.status_code}; event loop CPU {loop_cpu:.2f}s (json.loads here {parse_cpu:.2f}s, "
          f"allowed {allowed:.2f}s); /health answered {probes} times, worst {worst:.2f}s; "
          f"peak RSS +{peak_growth_mb:.0f} MB; RSS now {bad_server.rss_mb():.0f} MB")
    assert r.status_code in (200, 400), r.text[:300]
    if r.status_code == 400:
        assert_error(path, r, 400)
    assert loop_cpu < allowed, (f"the event loop spent {loop_cpu:.2f}s of CPU on a {len(data) / MIB:.1f} MiB body; "
                                f"parsing it takes {parse_cpu:.2f}s")
    if can_measure_peak:
        assert peak_growth_mb < 40 * len(data) / MIB, f"peak RSS grew by {peak_growth_mb:.0f} MB for a 16 MB body"
    assert_serving(bad_server)
