"""The real export path: the OTLP gRPC and HTTP exporters to a receiver on loopback (the caller's traceparent
linking), and a dead collector (refusing, or accepting and never answering) that costs the requests nothing, drops
spans past the bounded queue (counted) and does not hold the shutdown past its bound."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from embedding_server.api import tracing
from embedding_server.settings import Settings
from tests.conftest import open_client
from tests.support.otlp import blackhole, grpc_receiver, http_receiver, refused
from tests.support.wait import wait_until

TRACE_ID, PARENT_ID = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
MODEL = "tiny-bert"


@pytest.mark.parametrize("protocol,receiver", [("grpc", grpc_receiver), ("http/protobuf", http_receiver)])
def test_spans_reach_a_collector_under_the_callers_trace(tiny_models_dir, protocol, receiver):
    with receiver() as collector:
        c = open_client(Settings(models_dir=tiny_models_dir, model=MODEL, otlp_endpoint=collector.endpoint,
                                 otlp_protocol=protocol, otlp_service_name="embed-test"))
        try:
            r = c.post("/api/embed", json={"model": MODEL, "input": ["alpha", "beta"]},
                       headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            assert r.status_code == 200
            spans = wait_until(lambda: (s := [x for x in collector.snapshot() if x.trace_id == TRACE_ID])
                               and len(s) >= 5 and s, timeout=30, what="the request's 5 spans at the collector")
        finally:
            c.__exit__(None, None, None)
    (root,) = [s for s in spans if s.parent_span_id == PARENT_ID]
    assert root.name == "POST /api/embed" and root.resource["service.name"] == "embed-test"
    assert root.attributes["http.route"] == "/api/embed" and root.attributes["embedding.model"] == MODEL
    assert root.attributes["embedding.inputs"] == 2 and root.attributes["http.response.status_code"] == 200
    children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
    assert set(children) == {"tokenize", "queue", "forward", "response"}
    assert children["forward"].attributes["embedding.batch_inputs"] == 2
    assert all(root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns for s in children.values())


class _Watched:
    """An exporter that says when an export is under way (delegating to the real one)."""

    takes_request_spans = True  # as the real one

    def __init__(self, inner):
        self.inner, self.exporting, self.exports = inner, threading.Event(), 0

    def export(self, spans):
        self.exports += 1
        self.exporting.set()
        try:
            return self.inner.export(spans)
        finally:
            self.exporting.clear()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs):
        return self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@pytest.mark.parametrize("dead", ["blackhole", "refused"])
def test_a_dead_collector_costs_the_requests_nothing(tiny_models_dir, monkeypatch, caplog, dead):
    watched: list[_Watched] = []
    real = tracing.make_exporter
    monkeypatch.setattr(tracing, "make_exporter", lambda *a: watched.append(_Watched(real(*a))) or watched[-1])
    monkeypatch.setattr(tracing, "SCHEDULE_MS", 20)  # export at once: the requests below run while it hangs
    monkeypatch.setattr(tracing, "MAX_QUEUE_REQUESTS", 8)  # and overflow the queue meanwhile
    with blackhole() as hole:
        endpoint = hole if dead == "blackhole" else refused()
        c = open_client(Settings(models_dir=tiny_models_dir, model=MODEL, otlp_endpoint=endpoint))
        exporter = watched[-1]
        try:
            assert c.post("/api/embed", json={"model": MODEL, "input": "first"}).status_code == 200
            wait_until(exporter.exporting.is_set, timeout=10, what="an export to the dead collector to start")
            seconds = []
            with caplog.at_level(logging.WARNING):
                for i in range(30):
                    started = time.perf_counter()
                    assert c.post("/api/embed", json={"model": MODEL, "input": f"query {i}"}).status_code == 200
                    seconds.append(time.perf_counter() - started)
            # No request waited for the export (up to 3 s, retries included); to the blackhole, the first export was
            # still under way when they had all been answered.
            assert max(seconds) < tracing.EXPORT_TIMEOUT_S / 3
            if dead == "blackhole":
                assert exporter.exports == 1 and exporter.exporting.is_set()
        finally:
            started = time.perf_counter()
            with caplog.at_level(logging.WARNING):
                c.__exit__(None, None, None)
            shutdown = time.perf_counter() - started
    assert shutdown < tracing.SHUTDOWN_TIMEOUT_S + 5  # the last flush gives up at its bound
    t = c.app.state.tracing
    assert t.emitted == 31 * 5 and t.exporter.exported == 0 and t.spans_lost == t.emitted
    assert t.exporter.failed < t.emitted  # the rest never reached the exporter: dropped past the queue's 8 requests
    assert any(f"{t.emitted} of {t.emitted} spans were not exported" in r.getMessage() for r in caplog.records)
