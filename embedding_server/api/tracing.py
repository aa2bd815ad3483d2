"""OpenTelemetry traces (EMBED_OTLP_ENDPOINT): one span per answered request, made after the fact.

OpenTelemetry is imported (here, by ``otlp_encoding`` and ``otlp_export``) only when tracing is on (``start``).
``AccessRecorder.record`` hands each answered request to ``Tracing.request`` once its answer has been handed to the
server: the request's span (route, model, inputs, tokens, status; the caller's W3C ``traceparent`` as parent) and its
children - model load, tokenization, queue wait, each forward pass (batch size, tokens), response - are noted there
as plain data (``RequestSpans``) with explicit start and end times from the engine's ``Timeline``, so nothing of
tracing runs inside a request before its answer. Export runs on the SDK's ``BatchSpanProcessor`` thread: a bounded
queue (requests beyond it are dropped and their spans counted), a short export timeout, and a shutdown bounded in
time, so a dead or slow collector never holds a request, nor the server's exit. The OTLP exporters write the
requests' bytes directly (``otlp_encoding``); any other exporter receives the SDK's ``ReadableSpan``s.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Mapping

from ..engine.types import Timeline
from ..settings import Settings
from .otlp_encoding import INTERNAL, SERVER, RequestSpans, Span

log = logging.getLogger("embedding_server.tracing")

MAX_QUEUE_REQUESTS = 1024  # requests whose spans wait for export; beyond, new ones are dropped (and counted)
EXPORT_BATCH_REQUESTS = 128  # requests per export (about 640 spans of single queries)
SCHEDULE_MS = 1000  # how often the processor exports what is queued
EXPORT_TIMEOUT_S = 3.0  # one export, retries included
SHUTDOWN_TIMEOUT_S = 5.0  # the last flush at shutdown
MAX_FORWARD_SPANS = 64  # forward passes shown one by one per request (a bulk request may run in hundreds)
_HEADERS = ("traceparent", "tracestate")
_ASGI_HEADERS = {name.encode(): name for name in _HEADERS}
_SCALARS = frozenset({str, bool, int, float})  # attribute value types (a subclass's value is left out)
# gRPC codes that are a server span's error (OTel's gRPC conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
# INTERNAL, UNAVAILABLE, DATA_LOSS.
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})
UNTRACED = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes: every few seconds, nobody's request


def headers_of(carrier: Any) -> dict[str, str]:
    """The W3C trace-context headers of ``carrier``: an ASGI header list (byte pairs), or a mapping (HTTP headers,
    gRPC metadata) whose keys are lower-case or looked up case-insensitively."""
    found: dict[str, str] = {}
    if carrier is None:
        return found
    if isinstance(carrier, Mapping):
        for name in _HEADERS:
            value = carrier.get(name)
            if value is not None:
                found[name] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        return found
    for name, value in carrier:  # ASGI: [(b"traceparent", b"00-..."), ...], names lower-case
        key = _ASGI_HEADERS.get(name) if isinstance(name, bytes) else str(name).lower()
        if key in _HEADERS:
            found[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return found


def make_exporter(settings: Settings, resource, scope):
    """The OTLP span exporter EMBED_OTLP_PROTOCOL names, to EMBED_OTLP_ENDPOINT (``otlp_export``), for spans of
    ``resource`` and ``scope``."""
    from .otlp_export import make_exporter as exporter_for

    return exporter_for(settings, EXPORT_TIMEOUT_S, resource, scope)


class _Counted:
    """The exporter, given ``RequestSpans`` batches (as ReadableSpans unless it takes those), counting the spans it
    exported and those it failed to (the processor logs the requests it drops: "Queue full", at most once in 20 s)."""

    def __init__(self, inner, readable):
        self.inner, self.readable, self.exported, self.failed = inner, readable, 0, 0
        self.takes_requests = getattr(inner, "takes_request_spans", False)

    def export(self, requests):
        from opentelemetry.sdk.trace.export import SpanExportResult

        spans = sum(len(r.spans) for r in requests)
        try:
            result = self.inner.export(requests if self.takes_requests else
                                       [span for r in requests for span in self.readable(r)])
        except Exception:
            self.failed += spans
            raise
        if result == SpanExportResult.SUCCESS:
            self.exported += spans
        else:
            self.failed += spans
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs):
        try:
            return self.inner.shutdown(timeout_millis=timeout_millis)
        except TypeError:  # an exporter whose shutdown takes no timeout
            return self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Tracing:
    """A tracer provider exporting through a BatchSpanProcessor; turns answered requests into spans.

    A request's spans are known in full once it is answered, so they are noted finished, as plain data
    (``RequestSpans``, one item for the processor per request), rather than started and ended through the tracer,
    whose live-span machinery (sampler, locks, attribute limits, events) cost about 40 us a span on 2 cores on the
    event loop the forwards share the CPU with (``bench.tracing_overhead`` measures what is left). Sampling follows
    the caller: a ``traceparent`` whose sampled flag is off records nothing; all other requests are recorded."""

    def __init__(self, settings: Settings, exporter=None):
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from .. import __version__

        self._span, self._context, self._trace = ReadableSpan, SpanContext, trace
        self._kinds = {SERVER: SpanKind.SERVER, INTERNAL: SpanKind.INTERNAL}
        self._error, self._unset = Status(StatusCode.ERROR), Status(StatusCode.UNSET)
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._sampled_context = SpanContext(1, 1, False, self._sampled)  # what the processor checks, per item
        self._propagator = TraceContextTextMapPropagator()
        self._bits = random.Random().getrandbits
        self.resource = Resource.create({"service.name": settings.otlp_service_name, "service.version": __version__})
        self.scope = InstrumentationScope("embedding_server", __version__)
        inner = exporter if exporter is not None else make_exporter(settings, self.resource, self.scope)
        self.exporter = _Counted(inner, self.readable)
        self.emitted = 0
        self.processor = BatchSpanProcessor(self.exporter, max_queue_size=MAX_QUEUE_REQUESTS,
                                            schedule_delay_millis=SCHEDULE_MS,
                                            max_export_batch_size=min(EXPORT_BATCH_REQUESTS, MAX_QUEUE_REQUESTS),
                                            export_timeout_millis=EXPORT_TIMEOUT_S * 1000)
        # Not the global provider: several apps (tests) can live in one process, each with its own.
        self.provider = TracerProvider(resource=self.resource)
        self.provider.add_span_processor(self.processor)
        self._on_end = self.processor.on_end
        log.info("tracing: OTLP %s to %s (service.name %s)", settings.otlp_protocol,
                 settings.otlp_endpoint or type(inner).__name__, settings.otlp_service_name)

    @property
    def spans_lost(self) -> int:
        """Spans made but not exported: failed exports, a full queue, or still queued."""
        return self.emitted - self.exporter.exported

    def _parent(self, carrier: Any):
        """The caller's span context from its ``traceparent`` (None without a valid one)."""
        headers = headers_of(carrier)
        if "traceparent" not in headers:
            return None
        parent = self._trace.get_current_span(self._propagator.extract(headers)).get_span_context()
        return parent if parent.is_valid else None

    def request(self, method: str | None, route: str, status: int, start_ns: int, end_ns: int,
                embed_log: dict | None, carrier: Any = None) -> None:
        """The spans of one answered request (``start_ns``..``end_ns``, wall clock), under the caller's trace."""
        if route in UNTRACED:
            return
        parent = self._parent(carrier) if carrier is not None else None
        if parent is not None and not parent.trace_flags.sampled:
            return  # the caller does not record this trace
        if method is None or method == "gRPC":  # route: the full method name; status: its code or an HTTP status
            name, attributes = route, {"rpc.system": "grpc", "rpc.method": route}
            attributes["rpc.grpc.status_code" if status < 100 else "http.response.status_code"] = status
            failed = status in _GRPC_SERVER_ERRORS if status < 100 else status >= 500
        else:
            name = f"{method} {route}"
            attributes = {"http.request.method": method, "http.route": route, "http.response.status_code": status}
            failed = status >= 500
        timeline = None
        if embed_log:
            for key, value in embed_log.items():
                if key == "timeline":
                    timeline = value
                elif type(value) in _SCALARS and key != "texts":
                    attributes[f"embedding.{key}"] = value
        span_id = self._bits(64) or 1
        spans: list[Span] = []
        if timeline is not None:
            attributes["embedding.forwards"] = len(timeline.forwards)
            self._children(spans, span_id, timeline, end_ns)
        spans.append(Span(name, span_id, parent.span_id if parent is not None else None, SERVER, start_ns, end_ns,
                          attributes, failed))
        self.emitted += len(spans)
        self._on_end(RequestSpans(parent.trace_id if parent is not None else self._bits(128) or 1,
                                  parent.trace_state if parent is not None else None, parent, spans,
                                  self._sampled_context))

    def _children(self, spans: list, parent_id: int, timeline: Timeline, end_ns: int) -> None:
        bits = self._bits

        def child(name: str, start: int, end: int, attributes: dict | None = None) -> None:
            spans.append(Span(name, bits(64) or 1, parent_id, INTERNAL, start, end, attributes))

        if timeline.load_ns:
            child("load", timeline.started_ns, timeline.started_ns + timeline.load_ns)
        if timeline.tokenize_end_ns:
            child("tokenize", timeline.tokenize_start_ns, timeline.tokenize_end_ns,
                  {"embedding.tokenize.inline": timeline.inline})
        forwards = timeline.forwards
        if timeline.queued_ns and forwards:
            child("queue", timeline.queued_ns, min(f.start_ns for f in forwards))
        for forward in forwards[:MAX_FORWARD_SPANS]:
            child("forward", forward.start_ns, forward.end_ns,
                  {"embedding.batch_size": forward.batch_size, "embedding.batch_tokens": forward.batch_tokens,
                   "embedding.batch_inputs": forward.inputs, "embedding.slices": forward.slices})
        if timeline.ready_ns:
            child("response", timeline.ready_ns, max(end_ns, timeline.ready_ns))

    def readable(self, request: RequestSpans) -> list:
        """The SDK's finished spans (``ReadableSpan``) of one request, in its order, for exporters other than OTLP's."""
        trace_id, state = request.trace_id, request.trace_state
        contexts = {span.span_id: self._context(trace_id, span.span_id, False, self._sampled, state)
                    for span in request.spans}
        if request.parent is not None:
            contexts[request.parent.span_id] = request.parent
        return [self._span(span.name, contexts[span.span_id], contexts.get(span.parent_id), self.resource,
                           span.attributes, kind=self._kinds[span.kind],
                           status=self._error if span.error else self._unset, start_time=span.start_ns,
                           end_time=span.end_ns, instrumentation_scope=self.scope) for span in request.spans]

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return self.processor.force_flush(int(timeout_s * 1000))

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Export what is queued and stop, within ``timeout_s`` (a dead collector drops the rest); True if done."""
        done = threading.Thread(target=self.provider.shutdown, name="tracing-shutdown", daemon=True)
        done.start()
        done.join(timeout_s)
        if done.is_alive():
            log.warning("tracing: the collector did not take the last spans within %g s; they are dropped", timeout_s)
        if self.spans_lost:
            log.warning("tracing: %d of %d spans were not exported (%d failed to, the rest were dropped: the "
                        "collector down or too slow)", self.spans_lost, self.emitted, self.exporter.failed)
        return not done.is_alive()


def start(settings: Settings, exporter=None) -> Tracing | None:
    """Tracing as configured: None when EMBED_OTLP_ENDPOINT is empty and no ``exporter`` is given (then nothing of
    OpenTelemetry is imported)."""
    if not settings.otlp_endpoint and exporter is None:
        return None
    return Tracing(settings, exporter)


def wall_clock_span(seconds: float) -> tuple[int, int]:
    """(start, end) in wall-clock nanoseconds of a request that took ``seconds`` and ended now."""
    end = time.time_ns()
    return end - int(seconds * 1e9), end

