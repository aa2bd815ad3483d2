"""SIGTERM (docker stop, kubectl delete pod, systemctl stop) while a big request is in flight.

The request in flight completes with 200 and every vector; the listening socket closes first (new connections
are refused while the request is unfinished, so a balancer moves on); the process exits by itself, status 0,
within the grace period the deploy files give. The test holds the request in flight by reading its answer only
once it has seen the refusal: orderings of events, not timings.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest

from tests.integration.ops.ops_helpers import MINILM, clean_env, scrape, sample_sum, serve_cmd, stop
from tests.support.checkpoints import make_tiny_bert
from tests.support.server import free_port, wait_healthy
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # live server processes stopped by SIGTERM: left out of make test-fast

# Inputs of the request in flight: its ~10 MB answer is far more than loopback's socket buffers hold (4 MB at
# most), while a few tokens each keep its work well within uvicorn's 30 s graceful-shutdown timeout on a busy box.
N = 2048
EXIT_WITHIN = 40.0  # seconds: the grace period deploy/k8s gives (terminationGracePeriodSeconds) before SIGKILL

WORDS = ("retrieval augmented generation needs fast embeddings on a cpu with no internet access at all "
         "vector search engines rank documents by cosine similarity").split()


def _texts(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} {i}" for i in range(n)]


def _start(tmp_path, models_dir, model=None):
    port, log_path = free_port(), tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_cmd(port, models_dir, model), env=clean_env(PYTHONUNBUFFERED="1"),
                                stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout=180)
    except BaseException:
        stop(proc)
        raise
    return proc, base, port, log_path


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def _send_unread(port: int, path: str, body: dict) -> socket.socket:
    """POST ``body`` on a raw socket whose answer this test reads only when it chooses: until then the server
    cannot finish sending it (a small receive buffer, and the answer far larger than what the kernel holds), so
    the request stays in flight, whatever the machine's speed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(300)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, dict]:
    answer = http.client.HTTPResponse(sock, method="POST")
    answer.begin()
    return answer.status, json.loads(answer.read())


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tmp_path, empty_models_dir):
    """SIGTERM comes once the engine holds the big request's inputs (the queue gauge counts them) and before its
    answer is read. Then, in this order: new connections are refused while the process still runs for the request
    in flight; its answer is complete (200, every vector); the process exits by itself with status 0."""
    proc, base, port, log_path = _start(tmp_path, empty_models_dir)
    sock = None
    try:
        texts = _texts(N)
        probe = list(range(0, N, N // 16))
        r = httpx.post(f"{base}/api/embed", json={"model": MINILM, "input": [texts[i] for i in probe]}, timeout=120)
        reference = np.asarray(r.json()["embeddings"], dtype=np.float32)

        sock = _send_unread(port, "/v1/embeddings", {"model": MINILM, "input": texts})
        wait_until(lambda: sample_sum(scrape(base), "embed_queue_depth", model=MINILM) > 0, timeout=120,
                   what="the big request's inputs to reach the engine")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _refused(port), timeout=EXIT_WITHIN, interval=0.05, what="new connections to be refused")
        assert proc.poll() is None, "the process exited with a request in flight"
        status, body = _read_answer(sock)
        answered = time.monotonic()
        try:
            code = proc.wait(EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            code = None
        with pytest.raises(httpx.ConnectError):  # and nothing answers any more
            httpx.post(f"{base}/api/embed", json={"model": MINILM, "input": "late"}, timeout=5)
    finally:
        if sock is not None:
            sock.close()
        stop(proc)

    log_text = log_path.read_text(errors="replace")
    assert status == 200, f"{status} {body!r:.500}\n{log_text[-3000:]}"
    assert [d["index"] for d in body["data"]] == list(range(N))
    vectors = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (N, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vectors[probe], reference, atol=1e-5)
    assert body["usage"]["prompt_tokens"] > N
    assert code is not None, f"still running {EXIT_WITHIN}s after its last request was answered\n{log_text[-3000:]}"
    print(f"exited {time.monotonic() - answered:.1f}s after answering the request in flight")
    assert "Traceback" not in log_text
    assert log_text.index("Shutting down") < log_text.index('"route":"/v1/embeddings","status":200')
    assert code == 0, f"exit status {code} after SIGTERM (0 expected: a requested stop is a clean exit)"


def test_sigterm_on_an_idle_server_exits_0_within_the_grace_period(tmp_path):
    make_tiny_bert(tmp_path / "models" / "tiny-bert")
    proc, base, port, log_path = _start(tmp_path, tmp_path / "models", "tiny-bert")
    try:
        assert httpx.post(f"{base}/api/embed", json={"model": "tiny-bert", "input": "hi"}, timeout=30).status_code == 200
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            code = None
        print(f"exited {time.monotonic() - signalled:.1f}s after SIGTERM")
    finally:
        stop(proc)
    log_text = log_path.read_text(errors="replace")
    assert code is not None, f"still running {EXIT_WITHIN}s after SIGTERM\n{log_text[-2000:]}"
    assert _refused(port)
    assert "Traceback" not in log_text and "Application shutdown complete" in log_text
    assert code == 0, f"exit status {code} after SIGTERM (0 expected: a requested stop is a clean exit)"
