"""api/tracing.py: spans made after the fact from a request's timeline, the caller's traceparent, the exporters, and
nothing of OpenTelemetry when tracing is off."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.datastructures import Headers

from embedding_server.api import tracing
from embedding_server.api.observability import AccessRecorder, Metrics
from embedding_server.engine.types import Forward, Timeline
from embedding_server.settings import Settings

TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
T0 = 1_700_000_000_000_000_000


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    t = tracing.start(Settings(), exporter)
    yield t, exporter
    t.shutdown()


def spans(t, exporter) -> dict:
    assert t.force_flush()
    return {s.name: s for s in exporter.get_finished_spans()}


def timeline(forwards=1, load_ns=0) -> Timeline:
    return Timeline(started_ns=T0 + 1_000, load_ns=load_ns, tokenize_start_ns=T0 + 2_000, tokenize_end_ns=T0 + 3_000,
                    queued_ns=T0 + 4_000, ready_ns=T0 + 90_000, inline=True,
                    forwards=[Forward(T0 + 10_000 * (i + 1), T0 + 10_000 * (i + 2), 8, 64, 2, 1) for i in range(forwards)])


def embed_log(tl: Timeline | None = None) -> dict:
    return {"model": "tiny-bert", "inputs": 2, "tokens": 12, "texts": ["secret"], "timeline": tl or timeline()}


def test_a_request_span_with_its_children_from_the_timeline(traced):
    t, exporter = traced
    t.request("POST", "/api/embed", 200, T0, T0 + 100_000, embed_log(timeline(load_ns=500)), [])
    got = spans(t, exporter)
    assert set(got) == {"POST /api/embed", "load", "tokenize", "queue", "forward", "response"}
    root = got["POST /api/embed"]
    assert root.kind == SpanKind.SERVER and root.parent is None and root.status.status_code == StatusCode.UNSET
    assert (root.start_time, root.end_time) == (T0, T0 + 100_000)
    assert dict(root.attributes) == {"http.request.method": "POST", "http.route": "/api/embed",
                                     "http.response.status_code": 200, "embedding.model": "tiny-bert",
                                     "embedding.inputs": 2, "embedding.tokens": 12, "embedding.forwards": 1}
    assert root.resource.attributes["service.name"] == "embedding-server"
    for name in ("load", "tokenize", "queue", "forward", "response"):
        child = got[name]
        assert child.parent.span_id == root.context.span_id and child.context.trace_id == root.context.trace_id
        assert child.kind == SpanKind.INTERNAL
    assert (got["load"].start_time, got["load"].end_time) == (T0 + 1_000, T0 + 1_500)
    assert (got["tokenize"].start_time, got["tokenize"].end_time) == (T0 + 2_000, T0 + 3_000)
    assert (got["queue"].start_time, got["queue"].end_time) == (T0 + 4_000, T0 + 10_000)
    assert (got["forward"].start_time, got["forward"].end_time) == (T0 + 10_000, T0 + 20_000)
    assert dict(got["forward"].attributes) == {"embedding.batch_size": 8, "embedding.batch_tokens": 64,
                                               "embedding.batch_inputs": 2, "embedding.slices": 1}
    assert (got["response"].start_time, got["response"].end_time) == (T0 + 90_000, T0 + 100_000)


def test_the_callers_traceparent_is_the_parent(traced):
    t, exporter = traced
    t.request("POST", "/v1/embeddings", 200, T0, T0 + 100_000, embed_log(),
              [(b"host", b"x"), (b"traceparent", TRACEPARENT.encode()), (b"tracestate", b"vendor=1")])
    got = spans(t, exporter)
    root = got["POST /v1/embeddings"]
    assert f"{root.context.trace_id:032x}" == TRACE_ID and f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.parent.is_remote and root.context.trace_state.get("vendor") == "1"
    assert all(f"{s.context.trace_id:032x}" == TRACE_ID for s in got.values())


def test_an_unsampled_caller_records_nothing_and_a_malformed_traceparent_starts_a_trace(traced):
    t, exporter = traced
    t.request("POST", "/embed", 200, T0, T0 + 1, None, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    assert spans(t, exporter) == {}
    t.request("POST", "/embed", 200, T0, T0 + 1, None, {"traceparent": "00-nonsense-01"})
    (root,) = spans(t, exporter).values()
    assert root.parent is None and f"{root.context.trace_id:032x}" != TRACE_ID


def test_server_errors_are_errors_and_requests_without_timeline_have_no_children(traced):
    t, exporter = traced
    t.request("POST", "/api/embed", 503, T0, T0 + 1, {"model": "m", "inputs": 1}, None)
    t.request("GET", "/api/ps", 200, T0, T0 + 1, None, None)
    got = spans(t, exporter)
    assert set(got) == {"POST /api/embed", "GET /api/ps"}
    assert got["POST /api/embed"].status.status_code == StatusCode.ERROR
    assert got["GET /api/ps"].status.status_code == StatusCode.UNSET


def test_grpc_requests_get_rpc_attributes(traced):
    t, exporter = traced
    t.request(None, "/tei.v1.Embed/Embed", 0, T0, T0 + 1, embed_log(), {"traceparent": TRACEPARENT})
    t.request(None, "/tei.v1.Info/Info", 14, T0, T0 + 1, None, None)  # UNAVAILABLE
    got = spans(t, exporter)
    root = got["/tei.v1.Embed/Embed"]
    assert root.attributes["rpc.system"] == "grpc" and root.attributes["rpc.method"] == "/tei.v1.Embed/Embed"
    assert root.attributes["rpc.grpc.status_code"] == 0 and root.status.status_code == StatusCode.UNSET
    assert f"{root.parent.span_id:016x}" == PARENT_ID and "forward" in got
    assert got["/tei.v1.Info/Info"].status.status_code == StatusCode.ERROR


def test_probes_are_not_traced_and_forward_spans_are_capped(traced):
    t, exporter = traced
    for route in tracing.UNTRACED:
        t.request("GET", route, 200, T0, T0 + 1, None, None)
    t.request("POST", "/api/embed", 200, T0, T0 + 10**9, embed_log(timeline(forwards=tracing.MAX_FORWARD_SPANS + 5)))
    finished = exporter.get_finished_spans() if t.force_flush() else []
    assert sum(s.name == "forward" for s in finished) == tracing.MAX_FORWARD_SPANS
    root = next(s for s in finished if s.name == "POST /api/embed")
    assert root.attributes["embedding.forwards"] == tracing.MAX_FORWARD_SPANS + 5
    assert not any(s.name.startswith("GET") for s in finished)


@pytest.mark.parametrize("carrier", [
    [(b"traceparent", TRACEPARENT.encode())],
    {"traceparent": TRACEPARENT},
    {"traceparent": TRACEPARENT.encode()},
    Headers(raw=[(b"traceparent", TRACEPARENT.encode())]),
], ids=["asgi", "dict", "grpc-bytes", "starlette-headers"])
def test_headers_of_reads_every_kind_of_carrier(carrier):
    assert tracing.headers_of(carrier) == {"traceparent": TRACEPARENT}


def test_headers_of_nothing():
    assert tracing.headers_of(None) == {} and tracing.headers_of([(b"host", b"x")]) == {}


def test_exporters_by_protocol():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    from embedding_server.api.otlp_export import traces_url

    t = tracing.start(Settings(), InMemorySpanExporter())
    grpc = tracing.make_exporter(Settings(otlp_endpoint="http://c:4317"), t.resource, t.scope)
    http = tracing.make_exporter(Settings(otlp_endpoint="http://c:4318", otlp_protocol="http/protobuf"),
                                 t.resource, t.scope)
    t.shutdown()
    assert isinstance(grpc, Grpc) and grpc.takes_request_spans
    assert isinstance(http, Http) and http.takes_request_spans
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/custom/path") == "http://c:4318/custom/path"


def test_off_by_default():
    assert Settings().otlp_endpoint == "" and tracing.start(Settings()) is None


def test_record_never_calls_into_tracing_when_off(monkeypatch):
    recorder = AccessRecorder(Metrics())
    monkeypatch.setattr(recorder, "_trace", lambda *a: pytest.fail("tracing called while off"))
    recorder.record("POST", "/api/embed", 200, 0.01, embed_log(), [])


def test_a_failing_tracer_fails_neither_the_request_nor_its_log_line(caplog):
    recorder = AccessRecorder(Metrics())

    class Broken:
        def request(self, *args):
            raise RuntimeError("boom")

    recorder.tracing = Broken()
    with caplog.at_level(logging.INFO, logger="embedding_server.access"):
        recorder.record("POST", "/api/embed", 200, 0.01, embed_log(), [])
    messages = [r.getMessage() for r in caplog.records]
    assert "tracing the request failed" in messages and any('"route":"/api/embed"' in m for m in messages)
    assert not any("timeline" in m or "secret" in m for m in messages)


def test_exported_and_failed_spans_are_counted():
    from opentelemetry.sdk.trace.export import SpanExportResult

    class Failing(InMemorySpanExporter):
        def export(self, spans):
            return SpanExportResult.FAILURE

    ok, failing = tracing.start(Settings(), InMemorySpanExporter()), tracing.start(Settings(), Failing())
    for t in (ok, failing):
        t.request("POST", "/api/embed", 200, T0, T0 + 100_000, embed_log(), None)
        t.force_flush()
        t.shutdown()
    assert (ok.emitted, ok.exporter.exported, ok.spans_lost) == (5, 5, 0)
    assert (failing.emitted, failing.exporter.failed, failing.spans_lost) == (5, 5, 5)


def test_importing_the_app_imports_no_opentelemetry_sdk_or_exporter():
    code = ("import sys, embedding_server.app; "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', "
            "'grpc'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
