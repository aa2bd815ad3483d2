"""A request's spans as plain data (``RequestSpans``), and OTLP's ``ExportTraceServiceRequest`` written straight as
protobuf bytes from them (``RequestEncoder``).

``Tracing`` hands the SDK's batch processor one ``RequestSpans`` per answered request: tuples of ids, times, names
and scalar attributes, cheap to make on the event loop. On the export thread, the OTLP exporters of
``otlp_export`` write their bytes here (about 3 us a span: the fixed shape is known, and each attribute's encoding is
kept once made), where the exporters' own encoder would build a protobuf object per span, attribute and value
(20-60 us a span on 2 cores, CPU taken from the forwards); any other exporter receives SDK ``ReadableSpan``s made
from the same data (``Tracing.readable``). Tests check that both give the same message.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

INTERNAL, SERVER = 1, 2  # OTLP's SpanKind numbers
_PACK_TIMES = struct.Struct("<BQBQ").pack  # fields 7 and 8 (fixed64), each with its tag
_PACK_DOUBLE = struct.Struct("<d").pack
_SMALL = [bytes([n]) for n in range(128)]
# Span flags as the exporters' encoder sets them: "has is_remote", and "is remote" for a caller's parent (fixed32,
# field 16); the status: UNSET (an empty message) or ERROR (code 2), field 15.
_FLAGS_LOCAL, _FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x100), b"\x85\x01" + struct.pack("<I", 0x300)
_STATUS_UNSET, _STATUS_ERROR = b"\x7a\x00", b"\x7a\x02\x18\x02"
_KINDS = {kind: b"\x30" + _SMALL[kind] for kind in range(1, 6)}
_ATTRIBUTE_CACHE_LIMIT = 8192  # distinct (key, value) encodings kept; beyond, the cache starts again


class Span(NamedTuple):
    """One span of a request: ``parent_id`` None for a root, ``kind`` OTLP's number, times in ns since the epoch."""

    name: str
    span_id: int
    parent_id: int | None
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict | None
    error: bool = False


class RequestSpans:
    """One answered request's spans (the server span last), under one trace. ``parent`` is the caller's span
    context (remote; None without a ``traceparent``); ``context`` is what the SDK's processor checks (sampled)."""

    __slots__ = ("trace_id", "trace_state", "parent", "spans", "context")

    def __init__(self, trace_id: int, trace_state, parent, spans: list[Span], context):
        self.trace_id, self.trace_state, self.parent, self.spans, self.context = \
            trace_id, trace_state, parent, spans, context


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of ``n`` (a negative int64 as its 64-bit two's complement)."""
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag (``number << 3 | 2``, below 128), the length, the payload."""
    return _SMALL[tag] + varint(len(payload)) + payload


def any_value(value) -> bytes:
    """The bytes of an ``AnyValue`` holding a scalar attribute value (bool, str, int or float)."""
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return field(0x0A, value.encode("utf-8"))
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _PACK_DOUBLE(value)
    raise TypeError(f"not a scalar attribute value: {value!r}")


class RequestEncoder:
    """Writes ``ExportTraceServiceRequest`` bytes for batches of ``RequestSpans`` of one resource and scope."""

    def __init__(self, resource, scope):
        from opentelemetry.exporter.otlp.proto.common._internal import (_encode_instrumentation_scope,
                                                                        _encode_resource)

        self._resource = field(0x0A, _encode_resource(resource).SerializeToString())
        self._resource_schema = field(0x1A, resource.schema_url.encode("utf-8")) if resource.schema_url else b""
        self._scope = field(0x0A, _encode_instrumentation_scope(scope).SerializeToString())
        self._scope_schema = field(0x1A, scope.schema_url.encode("utf-8")) if scope.schema_url else b""
        self._attributes: dict = {}
        self._names: dict[str, bytes] = {}

    def _attribute(self, key: str, value) -> bytes:
        """Span field 9 for one attribute, from the cache when that key and value were seen before."""
        cached = (key, type(value), value)
        out = self._attributes.get(cached)
        if out is None:
            if len(self._attributes) >= _ATTRIBUTE_CACHE_LIMIT:
                self._attributes.clear()
            out = self._attributes[cached] = field(0x4A, field(0x0A, key.encode("utf-8")) +
                                                   field(0x12, any_value(value)))
        return out

    def _request(self, request: RequestSpans, parts: list) -> None:
        trace = b"\x0a\x10" + request.trace_id.to_bytes(16, "big")
        if request.trace_state:
            trace += field(0x1A, ",".join(f"{k}={v}" for k, v in request.trace_state.items()).encode("utf-8"))
        names, attribute, times = self._names, self._attribute, _PACK_TIMES
        for span in request.spans:
            name = names.get(span.name)
            if name is None:
                name = names[span.name] = field(0x2A, span.name.encode("utf-8")) if span.name else b""
            body = [trace, b"\x12\x08", span.span_id.to_bytes(8, "big")]
            if span.parent_id is not None:
                body += (b"\x22\x08", span.parent_id.to_bytes(8, "big"))
            body += (name, _KINDS[span.kind], times(0x39, span.start_ns, 0x41, span.end_ns))
            if span.attributes:
                body += [attribute(key, value) for key, value in span.attributes.items()]
            body.append(_STATUS_ERROR if span.error else _STATUS_UNSET)
            body.append(_FLAGS_REMOTE if span.kind == SERVER and request.parent is not None else _FLAGS_LOCAL)
            encoded = b"".join(body)
            parts += (b"\x12", varint(len(encoded)), encoded)  # ScopeSpans.spans

    def encode(self, requests: Sequence[RequestSpans]) -> bytes:
        """The request's bytes: one ResourceSpans holding one ScopeSpans with every span of ``requests``."""
        parts: list[bytes] = [self._scope]
        for request in requests:
            self._request(request, parts)
        parts.append(self._scope_schema)
        scope_spans = b"".join(parts)
        resource_spans = self._resource + field(0x12, scope_spans) + self._resource_schema
        return field(0x0A, resource_spans)
