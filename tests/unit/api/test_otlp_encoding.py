"""api/otlp_encoding.py: the bytes it writes for a batch of requests' spans parse to the very message the OTLP
exporters' own encoder builds from the SDK's ReadableSpans of the same requests (``Tracing.readable``)."""

from __future__ import annotations

import random

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from embedding_server.api import tracing
from embedding_server.api.otlp_encoding import INTERNAL, SERVER, RequestEncoder, RequestSpans, Span, varint
from embedding_server.engine.types import Forward, Timeline
from embedding_server.settings import Settings

T0 = 1_700_000_000_000_000_000
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Caught:
    """An exporter keeping the RequestSpans it is given (as the OTLP exporters take them)."""

    takes_request_spans = True

    def __init__(self):
        self.requests: list[RequestSpans] = []

    def export(self, requests):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.requests += requests
        return SpanExportResult.SUCCESS

    def shutdown(self, **kwargs):
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


@pytest.fixture
def traced():
    caught = Caught()
    t = tracing.start(Settings(otlp_service_name="svc"), caught)
    yield t, caught
    t.shutdown()


def same(t, requests: list[RequestSpans], encoder: RequestEncoder | None = None) -> bytes:
    """Our bytes parse to the message the exporters' encoder makes of the same spans; the bytes returned."""
    raw = (encoder or RequestEncoder(t.resource, t.scope)).encode(requests)
    ours = ExportTraceServiceRequest.FromString(raw)
    reference = encode_spans([span for r in requests for span in t.readable(r)])
    assert ours == reference, (ours, reference)
    return raw


def timeline(tokens: int = 96, forwards: int = 1, load_ns: int = 0) -> Timeline:
    return Timeline(started_ns=T0 + 1_000, load_ns=load_ns, tokenize_start_ns=T0 + 2_000, tokenize_end_ns=T0 + 3_000,
                    queued_ns=T0 + 4_000, ready_ns=T0 + 90_000, inline=True,
                    forwards=[Forward(T0 + 5_000 + i, T0 + 80_000 + i, 8, tokens, 2) for i in range(forwards)])


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)])
def test_varint_is_protobufs(n):
    assert varint(n) == _VarintBytes(n if n >= 0 else n + (1 << 64))


def test_the_servers_requests_http_grpc_errors_and_a_traceparent(traced):
    t, caught = traced
    note = {"model": "all-minilm", "inputs": 2, "tokens": 24, "truncated": False, "timeline": timeline(load_ns=500)}
    t.request("POST", "/api/embed", 200, T0, T0 + 100_000, note)
    t.request("POST", "/v1/embeddings", 500, T0, T0 + 100_000, note,
              {"traceparent": TRACEPARENT, "tracestate": "vendor=value,other=x"})
    t.request(None, "/tei.v1.Embed/Embed", 13, T0, T0 + 100_000, note)
    t.request("GET", "/api/ps", 200, T0, T0 + 1, None)
    assert t.force_flush()
    assert [len(r.spans) for r in caught.requests] == [6, 6, 6, 1]
    assert caught.requests[1].parent.is_remote and caught.requests[1].trace_state
    raw = same(t, caught.requests)
    spans = ExportTraceServiceRequest.FromString(raw).resource_spans[0].scope_spans[0].spans
    assert sum(s.status.code == 2 for s in spans) == 2 and sum(s.flags == 0x300 for s in spans) == 1


@pytest.mark.parametrize("value", [True, False, 0, -1, -(2**63), 2**63 - 1, 1.5, -0.0, float("inf"), "", "é ✓ 嵌入",
                                   "x" * 300])
def test_each_scalar_attribute(traced, value):
    t, _ = traced
    request = RequestSpans(5, None, None, [Span("s", 7, None, SERVER, T0, T0 + 1, {"k": value, "a.b": 7})],
                           t._sampled_context)
    same(t, [request])


def test_a_resource_and_a_scope_with_schema_urls():
    t = tracing.start(Settings(), InMemorySpanExporter())
    try:
        resource = Resource.create({"service.name": "x"}, schema_url="https://opentelemetry.io/schemas/1.21.0")
        scope = InstrumentationScope("lib", "1.0", "https://opentelemetry.io/schemas/1.20.0")
        t.resource, t.scope = resource, scope
        request = RequestSpans(5, None, None, [Span("c", 9, 8, INTERNAL, T0, T0 + 5, None),
                                               Span("s", 8, None, SERVER, T0, T0 + 9, {"a": 1}, True)],
                               t._sampled_context)
        same(t, [request], RequestEncoder(resource, scope))
    finally:
        t.shutdown()


def test_random_requests_equal_the_exporters(traced):
    t, caught = traced
    rng = random.Random(7)
    routes = [("POST", "/api/embed"), ("POST", "/embed"), (None, "/tei.v1.Embed/EmbedStream"), ("GET", "/api/tags")]
    for _ in range(300):
        method, route = rng.choice(routes)
        carrier = {"traceparent": f"00-{rng.getrandbits(128) or 1:032x}-{rng.getrandbits(64) or 1:016x}-01"} \
            if rng.random() < 0.5 else None
        note = {"model": rng.choice(["a", "b"]), "inputs": rng.randint(1, 64), "tokens": rng.randint(1, 9000),
                "truncated": rng.random() < 0.5, "timeline": timeline(rng.randint(1, 5000), rng.randint(1, 3))} \
            if rng.random() < 0.8 else None
        t.request(method, route, rng.choice([0, 3, 200, 400, 503]), T0, T0 + rng.randint(1, 10**9), note, carrier)
    assert t.force_flush()
    encoder = RequestEncoder(t.resource, t.scope)  # one encoder across batches: its caches in play
    for i in range(0, len(caught.requests), 37):
        same(t, caught.requests[i:i + 37], encoder)
