"""A small OTLP trace receiver on loopback, over gRPC or HTTP (protobuf): what a collector would get, decoded from
``opentelemetry.proto``'s ExportTraceServiceRequest, or (``keep=False``) only counted, for benchmarks. Also a
"blackhole" collector address: a port that completes TCP connections and never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: dict
    resource: dict


@dataclass
class Receiver:
    """What arrived: spans (when kept) and their count, under a lock."""

    keep: bool = True
    spans: list[ReceivedSpan] = field(default_factory=list)
    count: int = 0
    endpoint: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, raw: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        received = [] if self.keep else None
        n = 0
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                n += len(scope_spans.spans)
                if received is None:
                    continue
                for s in scope_spans.spans:
                    received.append(ReceivedSpan(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                                 s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                                                 {a.key: _value(a.value) for a in s.attributes}, resource))
        with self._lock:
            self.count += n
            if received:
                self.spans.extend(received)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 - the service's method name
        self.receiver.take(request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.contextmanager
def grpc_receiver(keep: bool = True) -> Iterator[Receiver]:
    """An OTLP/gRPC receiver on 127.0.0.1; ``endpoint``: ``http://127.0.0.1:<port>``."""
    import grpc

    receiver = Receiver(keep)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(0).wait(5)


@contextlib.contextmanager
def http_receiver(keep: bool = True) -> Iterator[Receiver]:
    """An OTLP/HTTP (protobuf) receiver on 127.0.0.1; ``endpoint``: ``http://127.0.0.1:<port>/v1/traces``."""
    receiver = Receiver(keep)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.take(raw)
            body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a socket that listens and never accepts: connections complete (the kernel's
    backlog) and then nothing is ever answered, as with a collector that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def refused() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
