"""SIGTERM (docker stop, kubectl delete pod, systemctl stop) while a big request is in flight.

The request in flight completes with 200 and every vector; the listening socket closes at once (new
connections are refused, so a balancer moves on); the process exits by itself, in bounded time, status 0.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from tests.integration.ops.ops_helpers import MINILM, clean_env, scrape, sample_sum, serve_cmd, stop
from tests.support.checkpoints import make_tiny_bert
from tests.support.server import free_port, wait_healthy

TARGET_SECONDS = 6.0  # how long the in-flight request should take; sized from a measured rate
EXIT_WITHIN = 40.0  # seconds from SIGTERM to the process gone

WORDS = ("retrieval augmented generation needs fast embeddings on a cpu with no internet access at all "
         "vector search engines rank documents by cosine similarity").split()


def _texts(n: int, offset: int = 0) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8 + i % 5)) + f" #{i + offset}"
            for i in range(n)]


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


def _exit_code(proc: subprocess.Popen, since: float) -> int | None:
    try:
        return proc.wait(max(0.1, EXIT_WITHIN - (time.monotonic() - since)))
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tmp_path, empty_models_dir):
    proc, base, port, log_path = _start(tmp_path, empty_models_dir)
    try:
        # Size the big request from this machine's measured rate (CI boxes and shared laptops differ).
        warmup = _texts(64, offset=10_000)
        started = time.monotonic()
        assert httpx.post(f"{base}/api/embed", json={"model": MINILM, "input": warmup}, timeout=120).status_code == 200
        rate = len(warmup) / (time.monotonic() - started)
        n = int(min(2048, max(256, rate * TARGET_SECONDS)))
        texts = _texts(n)
        probe = list(range(0, n, max(1, n // 16)))
        r = httpx.post(f"{base}/api/embed", json={"model": MINILM, "input": [texts[i] for i in probe]}, timeout=120)
        reference = np.asarray(r.json()["embeddings"], dtype=np.float32)

        before = sample_sum(scrape(base), "embed_inputs_total", model=MINILM)
        result: dict = {}

        def big_request():
            try:
                result["response"] = httpx.post(f"{base}/v1/embeddings", json={"model": MINILM, "input": texts},
                                                timeout=120)
            except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                result["error"] = exc
            result["done"] = time.monotonic()

        thread = threading.Thread(target=big_request, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60  # wait until its first batches ran: it is in flight for sure
        while sample_sum(scrape(base), "embed_inputs_total", model=MINILM) == before:
            assert thread.is_alive() and time.monotonic() < deadline, "the big request never started"
            time.sleep(0.05)
        assert thread.is_alive(), f"{n} inputs finished before SIGTERM; raise TARGET_SECONDS"
        print(f"in flight: {n} inputs (measured {rate:.0f} inputs/s)")

        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        refused_in_flight = False
        while thread.is_alive() and time.monotonic() - signalled < EXIT_WITHIN:
            if _refused(port):
                refused_in_flight = thread.is_alive()
                break
            time.sleep(0.05)
        thread.join(EXIT_WITHIN)
        assert not thread.is_alive(), "the in-flight request did not finish"
        code = _exit_code(proc, signalled)
        exited_after = time.monotonic() - signalled
        with pytest.raises(httpx.ConnectError):  # and nothing answers any more
            httpx.post(f"{base}/api/embed", json={"model": MINILM, "input": "late"}, timeout=5)
    finally:
        stop(proc)

    log_text = log_path.read_text(errors="replace")
    assert "error" not in result, f"in-flight request failed: {result.get('error')!r}\n{log_text[-3000:]}"
    response = result["response"]
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert [d["index"] for d in body["data"]] == list(range(n))
    vectors = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (n, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vectors[probe], reference, atol=1e-5)
    assert body["usage"]["prompt_tokens"] > n

    assert refused_in_flight, "new connections were still accepted while the request was finishing"
    assert result["done"] > signalled  # it really was in flight when the signal came
    assert code is not None, f"still running {EXIT_WITHIN}s after SIGTERM\n{log_text[-3000:]}"
    assert exited_after < EXIT_WITHIN
    assert "Traceback" not in log_text
    assert '"route":"/v1/embeddings","status":200' in log_text
    assert code == 0, f"exit status {code} after SIGTERM (0 expected: a requested stop is a clean exit)"


def test_sigterm_on_an_idle_server_exits_0_quickly(tmp_path):
    make_tiny_bert(tmp_path / "models" / "tiny-bert")
    proc, base, port, log_path = _start(tmp_path, tmp_path / "models", "tiny-bert")
    try:
        assert httpx.post(f"{base}/api/embed", json={"model": "tiny-bert", "input": "hi"}, timeout=30).status_code == 200
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = _exit_code(proc, signalled)
        exited_after = time.monotonic() - signalled
    finally:
        stop(proc)
    log_text = log_path.read_text(errors="replace")
    assert code is not None and exited_after < 15, f"took {exited_after:.1f}s\n{log_text[-2000:]}"
    assert _refused(port)
    assert "Traceback" not in log_text and "Application shutdown complete" in log_text
    assert code == 0, f"exit status {code} after SIGTERM (0 expected: a requested stop is a clean exit)"
