"""The OTLP span exporters (gRPC or HTTP/protobuf), sending the bytes ``otlp_encoding`` writes.

Each is the OpenTelemetry exporter for its protocol (its channel or session, retries, timeouts, TLS, headers),
exporting batches of ``RequestSpans`` instead of ``ReadableSpan``s, with only the encoding replaced: the gRPC one
sends the request's bytes through a stub that does not serialize them again; the HTTP one posts them through the
exporter's own client. Imported only when tracing is on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from ..settings import Settings
from .otlp_encoding import RequestEncoder

_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _RawTraceStub:
    """``TraceServiceStub`` taking the request as bytes already serialized."""

    def __init__(self, channel):
        self.Export = channel.unary_unary(_EXPORT_METHOD, request_serializer=None,
                                          response_deserializer=ExportTraceServiceResponse.FromString)


class GrpcSpanExporter(_GrpcExporter):
    """OTLP over gRPC, the request written by ``RequestEncoder``."""

    takes_request_spans = True

    def __init__(self, encoder: RequestEncoder, **kwargs):
        super().__init__(**kwargs)
        self._encoder = encoder
        self._stub = _RawTraceStub  # used again when the exporter reconnects
        self._client = _RawTraceStub(self._channel)

    def _translate_data(self, data) -> bytes:
        return self._encoder.encode(data)


class HttpSpanExporter(_HttpExporter):
    """OTLP over HTTP/protobuf, the body written by ``RequestEncoder`` (batches of a few hundred spans: far below the
    exporter's 64 MiB request limit, so that check is left out)."""

    takes_request_spans = True

    def __init__(self, encoder: RequestEncoder, **kwargs):
        super().__init__(**kwargs)
        self._encoder = encoder

    def export(self, requests) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        result = self._client.export(self._encoder.encode(requests))
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's URL: the endpoint as given, or with ``/v1/traces`` when it names no path (``http://host:4318``)."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


def make_exporter(settings: Settings, timeout_s: float, resource, scope):
    """The OTLP span exporter EMBED_OTLP_PROTOCOL names, to EMBED_OTLP_ENDPOINT, for spans of ``resource`` and
    ``scope``."""
    endpoint, encoder = settings.otlp_endpoint, RequestEncoder(resource, scope)
    if settings.otlp_protocol == "http/protobuf":
        return HttpSpanExporter(encoder, endpoint=traces_url(endpoint), timeout=timeout_s)
    # gRPC takes host:port; a scheme says whether to use TLS (https) or not (http, or none given).
    return GrpcSpanExporter(encoder, endpoint=endpoint, insecure=not endpoint.startswith("https://"),
                            timeout=timeout_s)
