"""Traces of requests through the app (SDK's in-memory exporter through create_app's span_exporter seam): the fast
path and the framework's, the engine's child spans, several forward passes, the caller's traceparent, non-embed
routes, and an access log that never shows the timeline."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from embedding_server.settings import Settings
from tests.conftest import open_client

TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
MODEL = "tiny-bert"


@pytest.fixture
def app_with_exporter(monkeypatch):
    """create_app called with the in-memory exporter by the conftest's open_client."""
    from tests import conftest

    exporters = []
    real = conftest.create_app

    def create_app(settings, engine=None):
        exporters.append(InMemorySpanExporter())
        return real(settings, engine=engine, span_exporter=exporters[-1])

    monkeypatch.setattr(conftest, "create_app", create_app)
    return exporters


def open_traced(tiny_models_dir, app_with_exporter, **settings):
    c = open_client(Settings(models_dir=tiny_models_dir, model=MODEL, **settings))
    return c, app_with_exporter[-1]


def finished(c, exporter) -> list:
    assert c.app.state.tracing.force_flush()
    out = list(exporter.get_finished_spans())  # the readiness polls are not traced
    exporter.clear()
    return out


def by_request(spans) -> tuple:
    """(the request's span, its children by name) of the one request among ``spans``."""
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER]
    children: dict[str, list] = {}
    for s in spans:
        if s is not root:
            assert s.parent.span_id == root.context.span_id and s.context.trace_id == root.context.trace_id
            children.setdefault(s.name, []).append(s)
    return root, children


@pytest.fixture
def client_and_exporter(tiny_models_dir, app_with_exporter):
    c, exporter = open_traced(tiny_models_dir, app_with_exporter)
    yield c, exporter
    c.__exit__(None, None, None)


def test_the_fast_path_traces_a_request_under_the_callers_trace(client_and_exporter, served, caplog):
    c, exporter = client_and_exporter
    finished(c, exporter)
    with caplog.at_level(logging.INFO, logger="embedding_server.access"):
        r = c.post("/api/embed", json={"model": MODEL, "input": ["one", "two words"]},
                   headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200 and served == [True]
    root, children = by_request(finished(c, exporter))
    assert root.name == "POST /api/embed" and f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.attributes["http.route"] == "/api/embed" and root.attributes["http.response.status_code"] == 200
    assert root.attributes["embedding.model"] == MODEL and root.attributes["embedding.inputs"] == 2
    assert root.attributes["embedding.tokens"] == r.json()["prompt_eval_count"]
    assert set(children) == {"tokenize", "queue", "forward", "response"}
    (forward,) = children["forward"]
    assert forward.attributes["embedding.batch_inputs"] == 2 and forward.attributes["embedding.batch_size"] >= 2
    assert forward.attributes["embedding.batch_tokens"] >= root.attributes["embedding.tokens"]
    spans = [root] + [s for group in children.values() for s in group]
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in spans)
    assert children["queue"][0].end_time == forward.start_time
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "embedding_server.access"]
    assert "timeline" not in line and line["tokens"] == root.attributes["embedding.tokens"]


def test_the_framework_path_traces_too(tiny_models_dir, app_with_exporter, served):
    c, exporter = open_traced(tiny_models_dir, app_with_exporter, cors_origins="http://app.example", api_key="k")
    try:
        finished(c, exporter)
        r = c.post("/v1/embeddings", json={"model": MODEL, "input": "hello"},
                   headers={"origin": "http://app.example", "authorization": "Bearer k", "traceparent": TRACEPARENT})
        assert r.status_code == 200 and served == []  # CORS: the framework answered
        root, children = by_request(finished(c, exporter))
        assert root.name == "POST /v1/embeddings" and f"{root.parent.span_id:016x}" == PARENT_ID
        assert root.attributes["embedding.inputs"] == 1 and set(children) == {"tokenize", "queue", "forward",
                                                                              "response"}
    finally:
        c.__exit__(None, None, None)


def test_a_request_in_several_batches_has_a_forward_span_each(tiny_models_dir, app_with_exporter):
    c, exporter = open_traced(tiny_models_dir, app_with_exporter, max_batch_size=2)
    try:
        finished(c, exporter)
        texts = [f"text number {i}" for i in range(7)]
        assert c.post("/embed", json={"inputs": texts}).status_code == 200
        root, children = by_request(finished(c, exporter))
        forwards = children["forward"]
        assert len(forwards) == root.attributes["embedding.forwards"] == 4
        assert sum(f.attributes["embedding.batch_inputs"] for f in forwards) == 7
        assert all(f.attributes["embedding.batch_size"] <= 2 for f in forwards)
    finally:
        c.__exit__(None, None, None)


def test_other_routes_and_errors_get_a_request_span_without_children(client_and_exporter):
    c, exporter = client_and_exporter
    finished(c, exporter)
    assert c.post("/tokenize", json={"inputs": "hello"}).status_code == 200
    assert c.post("/api/embed", json={"model": "no-such-model", "input": "x"}).status_code == 404
    assert c.get("/metrics").status_code == 200  # scrapes are not traced
    spans = finished(c, exporter)
    assert sorted(s.name for s in spans) == ["POST /api/embed", "POST /tokenize"]
    assert all(s.kind == SpanKind.SERVER and s.parent is None for s in spans)
    assert {s.attributes["http.response.status_code"] for s in spans} == {200, 404}


def test_tracing_off_means_no_tracer(client):
    assert client.app.state.tracing is None and client.app.state.recorder.tracing is None
