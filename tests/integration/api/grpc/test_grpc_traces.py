"""A gRPC call traced like an HTTP request: its span named by the method, under the trace of the caller's
``traceparent`` metadata, with the engine's children for a unary call and none for a stream of several requests."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from embedding_server.api.grpc import tei_pb2 as pb
from embedding_server.settings import Settings
from tests.integration.api.grpc.conftest import Served
from tests.support.server import free_port

TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def traced(monkeypatch, grpc_models):
    """A served app (gRPC on) exporting its spans to an in-memory exporter."""
    from tests import conftest

    exporter, real = InMemorySpanExporter(), conftest.create_app
    monkeypatch.setattr(conftest, "create_app", lambda settings, engine=None: real(settings, engine=engine,
                                                                                    span_exporter=exporter))
    served = Served(Settings(models_dir=grpc_models, model="tiny-bert", grpc_port=free_port(),
                             otlp_endpoint="http://127.0.0.1:1"))
    yield served, exporter
    served.close()


def spans_of(served: Served, exporter: InMemorySpanExporter, name: str):
    """(the one request span called ``name``, {child name: count})."""
    assert served.http.app.state.tracing.force_flush()
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == name]
    children: dict[str, int] = {}
    for s in spans:
        if s.parent is not None and s.parent.span_id == root.context.span_id:
            children[s.name] = children.get(s.name, 0) + 1
    return root, children


def test_a_unary_call_is_traced_under_the_callers_trace_with_the_engines_children(traced):
    served, exporter = traced
    answer = served.stub("Embed").Embed(pb.EmbedRequest(inputs="traced over grpc"),
                                        metadata=(("traceparent", TRACEPARENT),))
    root, children = spans_of(served, exporter, "/tei.v1.Embed/Embed")
    assert f"{root.context.trace_id:032x}" == TRACE_ID and f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.attributes["rpc.system"] == "grpc" and root.attributes["rpc.method"] == "/tei.v1.Embed/Embed"
    assert root.attributes["embedding.model"] == "tiny-bert" and root.attributes["embedding.inputs"] == 1
    assert root.attributes["embedding.tokens"] == answer.metadata.compute_tokens > 0
    assert {"tokenize", "queue", "forward", "response"} <= set(children)


def test_a_stream_is_one_span_without_engine_children(traced):
    served, exporter = traced
    texts = [f"message {i}" for i in range(5)]
    answers = list(served.stub("Embed").EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts),
                                                    metadata=(("traceparent", TRACEPARENT),)))
    assert len(answers) == len(texts)
    root, children = spans_of(served, exporter, "/tei.v1.Embed/EmbedStream")
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.attributes["embedding.inputs"] == len(texts) and children == {}
