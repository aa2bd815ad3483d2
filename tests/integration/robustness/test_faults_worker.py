"""Faults injected into the forward and its delivery, through the HTTP app: every request gets an answer in its
dialect's shape within its deadline, none is lost, and the service keeps serving."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedding_server.engine import work_queue
from embedding_server.engine.worker import ModelWorker
from embedding_server.settings import Settings
from tests.support.faults import Faults, WorkerKilled, open_faulty
from tests.support.wait import wait_until

QUERY = {"model": "tiny-bert", "input": ["hello world", "a second text"]}


@pytest.fixture
def faulty(tiny_models_dir):
    """(client, faults) over the tiny models, default model tiny-bert; closed after the test."""
    opened = []

    def factory(**settings):
        faults = Faults(models={"tiny-bert"})
        client = open_faulty(Settings(models_dir=tiny_models_dir, model="tiny-bert", **settings), faults)
        opened.append((client, faults))
        return client, faults

    yield factory
    for client, faults in opened:
        faults.release.set()
        client.__exit__(None, None, None)


def reference(client) -> np.ndarray:
    r = client.post("/api/embed", json=QUERY)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"])


@pytest.mark.parametrize("error", [RuntimeError("kernel failed"), MemoryError()], ids=["exception", "MemoryError"])
def test_a_forward_that_raises_fails_its_request_in_each_dialect_and_the_next_is_served(faulty, error):
    client, faults = faulty()
    want = reference(client)
    faults.fail = error
    r = client.post("/api/embed", json=QUERY)
    assert r.status_code == 500 and r.json() == {"error": f"inference failed for this batch: {type(error).__name__}"}
    faults.fail = error
    r = client.post("/v1/embeddings", json={"model": "tiny-bert", "input": "hello world"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "inference_failed"
    faults.fail = error
    r = client.post("/embed", json={"inputs": "hello world"})
    assert r.status_code == 424 and r.json()["error_type"] == "Backend"
    np.testing.assert_allclose(reference(client), want, atol=1e-6)
    assert client.get("/health").json() == {"status": "ok"}


def test_a_failing_head_fails_only_the_requests_asking_for_it(faulty):
    client, faults = faulty()
    faults.fail, faults.fail_heads = RuntimeError("head failed"), frozenset({"tokens"})
    r = client.post("/embed_all", json={"inputs": "hello world"})
    assert r.status_code == 424 and "inference failed" in r.json()["error"]
    assert client.post("/embed", json={"inputs": "hello world"}).status_code == 200


def test_a_failure_while_delivering_results_answers_the_request(faulty, monkeypatch):
    """A MemoryError allocating the result array, after the forward: the request is answered (not left waiting
    for ever), the other requests of the batch get their vectors, and the worker keeps serving."""
    client, faults = faulty()
    want = reference(client)
    real_fill, failed = work_queue.Ticket.fill, []

    def fill(self, index, outputs, position):
        if self.size == 3 and not failed:  # the request of three inputs, once
            failed.append(self)
            raise MemoryError("cannot allocate the result array")
        return real_fill(self, index, outputs, position)

    monkeypatch.setattr(work_queue.Ticket, "fill", fill)
    faults.hang = True  # hold the worker so that both requests share one batch
    with ThreadPoolExecutor(3) as pool:
        blocker = pool.submit(client.post, "/api/embed", json={"model": "tiny-bert", "input": "first"})
        assert faults.entered.wait(30)
        three = pool.submit(client.post, "/api/embed", json={"model": "tiny-bert", "input": ["a", "b", "c"]})
        two = pool.submit(client.post, "/api/embed", json=QUERY)
        wait_until(lambda: client.app.state.engine.queued_inputs()["tiny-bert"] == 5, timeout=30,
                   what="both requests queued")
        faults.hang = False
        faults.release.set()
        assert blocker.result().status_code == 200
        failed_r, ok = three.result(), two.result()
    assert failed_r.status_code == 500 and failed_r.json() == {"error": "inference failed for this batch: MemoryError"}
    assert ok.status_code == 200
    np.testing.assert_allclose(np.asarray(ok.json()["embeddings"]), want, atol=1e-6)
    np.testing.assert_allclose(reference(client), want, atol=1e-6)


@pytest.mark.parametrize("stage", ["forward", "delivery"])
def test_a_worker_thread_that_dies_answers_every_request_and_the_model_comes_back(faulty, monkeypatch, stage):
    client, faults = faulty()
    want = reference(client)
    if stage == "forward":
        faults.fail = WorkerKilled("the worker loop itself broke")
    else:
        real_fill = work_queue.Ticket.fill

        def fill(self, index, outputs, position):
            monkeypatch.setattr(work_queue.Ticket, "fill", real_fill)
            raise WorkerKilled("the worker loop broke while delivering")

        monkeypatch.setattr(work_queue.Ticket, "fill", fill)
    r = client.post("/api/embed", json=QUERY)
    assert r.status_code == 503 and "stopped working" in r.json()["error"]
    wait_until(lambda: client.get("/health").status_code == 200, timeout=60, what="the default model reloaded")
    np.testing.assert_allclose(reference(client), want, atol=1e-6)


def test_a_request_past_its_deadline_is_answered_in_each_dialect_and_its_work_dropped(faulty):
    client, faults = faulty(request_timeout_s=1.0)
    faults.hang = True
    r = client.post("/api/embed", json=QUERY)
    assert r.status_code == 504 and r.json() == {"error": "the request did not finish within 1 s "
                                                          "(EMBED_REQUEST_TIMEOUT_S)"}
    r = client.post("/v1/embeddings", json={"model": "tiny-bert", "input": "x"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    r = client.post("/embed", json={"inputs": "x"})
    assert r.status_code == 503 and r.json()["error_type"] == "Unhealthy"
    assert client.app.state.engine.queued_inputs()["tiny-bert"] == 0  # the timed-out requests' inputs are dropped
    faults.hang = False
    faults.release.set()
    assert client.post("/api/embed", json=QUERY).status_code == 200


def test_health_reports_a_worker_stalled_past_its_unit_budget(faulty, monkeypatch):
    monkeypatch.setattr(ModelWorker, "STALL_FLOOR_SECONDS", 0.2)
    client, faults = faulty()
    faults.hang = True
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/api/embed", json=QUERY)
        assert faults.entered.wait(30)
        wait_until(lambda: client.get("/health").status_code == 503, timeout=30, what="/health sees the stall")
        assert client.get("/health").json() == {"status": "stalled"} and client.get("/ready").status_code == 503
        faults.hang = False
        faults.release.set()
        assert pending.result().status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
