"""What OpenTelemetry tracing costs: throughput of the server with tracing off, on (EMBED_OTLP_ENDPOINT to an OTLP/gRPC
receiver on loopback that accepts and discards), and - with ``--before REF`` - the code of commit REF (before tracing
existed: "off" must cost nothing against it). Usage: ``python -m bench.tracing_overhead [--before REF] [--rounds N]``.

The servers run side by side (started once, idle while another is measured) and are measured in alternating rounds,
the order rotating each round, so that a drift of a shared machine's load hits every variant alike; each figure is
the median over rounds of the per-round ratio. Two scenarios: small (8 concurrent clients, each sending
one-sentence queries, the hot case) and bulk (one client, 32-sentence requests). Beside throughput, the server's own
CPU seconds per request (all its threads, /proc/<pid>/stat): the cost itself, less sensitive to other processes.
Writes bench/results/tracing/tracing.md and tracing.json.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

from . import load
from .cpumeter import CpuMeter, stat_cpu_s, wait_quiet
from .report import NOISY
from .report import machine
from .server import Server
from .workload import QUERY, sentences

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "tracing"
TARGET = 0.97  # tracing on keeps at least 97% of the throughput
SMALL_PER_CLIENT = 40  # each measurement short (a few seconds), rounds many: a shared machine's load drifts slowly


class Sink:
    """An OTLP/gRPC trace receiver on loopback that counts and discards (no protobuf decoding)."""

    def __init__(self):
        import grpc

        self.requests = self.bytes = 0

        def export(raw: bytes, context) -> bytes:
            self.requests += 1
            self.bytes += len(raw)
            return b""  # an empty ExportTraceServiceResponse

        handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {
            "Export": grpc.unary_unary_rpc_method_handler(export)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), handlers=(handler,))
        self.endpoint = f"http://127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


class HttpSink:
    """An OTLP/HTTP trace receiver on loopback that counts and discards (``/v1/traces``, answers 200 empty)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.requests = self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                sink.bytes += len(self.rfile.read(int(self.headers.get("content-length", 0))))
                sink.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def source_of(ref: str, into: Path) -> Path:
    """The package ``embedding_server`` as of commit ``ref``, extracted (git archive) under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "embedding_server"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def server_cpu_s(server: Server) -> float:
    return sum(stat_cpu_s(Path(f"/proc/{pid}/stat")) for pid in server.pids())


def measure(server: Server, scenario: str, texts: list[str], per_client: int = SMALL_PER_CLIENT) -> dict:
    """One run of ``scenario``: sentences/s, and the server's CPU ms per request (all threads, and its event loop's)."""
    before, loop_before = server_cpu_s(server), server.thread_cpu_seconds()
    meter = CpuMeter()
    meter.start(server.pids())
    if scenario == "small":
        out = load.concurrent(server.base_url, QUERY, clients=8, per_client=per_client)
        requests = 8 * per_client
    else:
        batches = [texts[i:i + 32] for i in range(0, len(texts), 32)]
        out = load.bulk(server.base_url, batches, clients=1)
        requests = len(batches)
    others = meter.stop(server.pids())["other"]
    return {"sentences_per_s": out["sentences_per_s"], "cpu_ms_per_request": (server_cpu_s(server) - before)
            * 1e3 / requests, "loop_ms_per_request": (server.thread_cpu_seconds() - loop_before) * 1e3 / requests,
            "others_cores": others}


def in_process_cost(n: int = 2000) -> dict:
    """CPU microseconds per request of tracing itself, measured in this process without a server: noting a single
    query's 5 spans (``Tracing.request``, on the event loop), encoding them for OTLP (on the export thread), and,
    for comparison, the SDK's ReadableSpans of them encoded by the OTLP exporters' own encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExportResult

    from embedding_server.api import tracing
    from embedding_server.api.otlp_encoding import RequestEncoder
    from embedding_server.engine.types import Forward, Timeline
    from embedding_server.settings import Settings

    class Kept:
        takes_request_spans = True
        requests: list = []

        def export(self, requests):
            self.requests += requests
            return SpanExportResult.SUCCESS

        def shutdown(self, **kwargs):
            pass

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    kept = Kept()
    t = tracing.start(Settings(), kept)
    now = time.time_ns()
    line = {"model": "all-minilm-l6-v2", "inputs": 1, "tokens": 14, "texts": [QUERY], "timeline": Timeline(
        now, 0, now + 10_000, now + 60_000, now + 70_000, now + 9_000_000, True,
        [Forward(now + 2_000_000, now + 8_000_000, 8, 112, 1)])}
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"80")]
    started = time.process_time()
    for _ in range(n):
        t.request("POST", "/api/embed", 200, now, now + 10_000_000, line, headers)
    make_us = (time.process_time() - started) / n * 1e6
    t.force_flush()
    requests = kept.requests
    encoder = RequestEncoder(t.resource, t.scope)

    def sdk(batch):
        encode_spans([span for r in batch for span in t.readable(r)]).SerializeToString()

    costs = {}
    for name, encode in (("encode_us", encoder.encode), ("sdk_encode_us", sdk)):
        started = time.process_time()
        for i in range(0, len(requests), tracing.EXPORT_BATCH_REQUESTS):
            encode(requests[i:i + tracing.EXPORT_BATCH_REQUESTS])
        costs[name] = (time.process_time() - started) / n * 1e6
    t.shutdown()
    return {"make_spans_us": make_us, **costs, "spans_per_request": sum(len(r.spans) for r in requests) / n}


def run(args) -> dict:
    texts = sentences()[: args.bulk_sentences]
    sink, http_sink = Sink(), HttpSink() if args.http else None
    variants: dict[str, tuple[dict, str | None]] = {
        "off": ({}, None), "on": ({"EMBED_OTLP_ENDPOINT": sink.endpoint}, None)}
    if http_sink is not None:  # the same over OTLP/HTTP: no gRPC channel (nor its threads) in the server
        variants["on_http"] = ({"EMBED_OTLP_ENDPOINT": http_sink.endpoint, "EMBED_OTLP_PROTOCOL": "http/protobuf"},
                               None)
    tmp = tempfile.TemporaryDirectory(prefix="bench-tracing-")
    if args.before:
        variants["before"] = ({}, str(source_of(args.before, Path(tmp.name))))
    servers: dict[str, Server] = {}
    results: dict[str, dict[str, list[dict]]] = {v: {"small": [], "bulk": []} for v in variants}
    try:
        for name, (env, path) in variants.items():
            extra = dict(env, PYTHONPATH=path or str(ROOT), EMBED_LOG_LEVEL="warning")
            servers[name] = Server(threads=args.threads, model_dir=None, extra_env=extra).start()
            load.warmup(servers[name].base_url, texts, QUERY)
            print(f"{name}: {servers[name].base_url}", file=sys.stderr)
        names = list(variants)
        for r in range(args.rounds):
            wait_quiet(args.wait_quiet)  # start a round in a quiet window if one comes
            order = names[r % len(names):] + names[: r % len(names)]
            for scenario in ("small", "bulk"):
                for name in order:
                    results[name][scenario].append(measure(servers[name], scenario, texts, args.small_per_client))
            print(f"round {r + 1}: " + ", ".join(
                f"{n} {results[n]['small'][-1]['sentences_per_s']:.0f}/{results[n]['bulk'][-1]['sentences_per_s']:.0f}"
                for n in names), file=sys.stderr)
        exported = {"requests": sink.requests, "bytes": sink.bytes}
        if http_sink is not None:
            exported["http"] = {"requests": http_sink.requests, "bytes": http_sink.bytes}
    finally:
        for s in servers.values():
            s.stop()
        sink.stop()
        if http_sink is not None:
            http_sink.stop()
        tmp.cleanup()
    return {"machine": machine(), "in_process": in_process_cost(), "rounds": args.rounds, "threads": args.threads, "before": args.before,
            "bulk_sentences": len(texts), "collector": exported, "runs": results,
            "ratios": ratios(results)}


def ratios(results: dict) -> dict:
    """Per scenario: median over rounds of on/off (and off/before) throughput, and of the CPU per request."""
    out: dict = {}
    pairs = [("on_vs_off", "on", "off")] + ([("on_http_vs_off", "on_http", "off")] if "on_http" in results else []) \
        + ([("off_vs_before", "off", "before")] if "before" in results else [])
    for label, a, b in pairs:
        for scenario in ("small", "bulk"):
            xs, ys = results[a][scenario], results[b][scenario]
            clean = [(x, y) for x, y in zip(xs, ys) if max(x["others_cores"], y["others_cores"]) <= NOISY]
            if len(clean) >= 3:  # rounds in which other processes took a core are left out, if enough remain
                xs, ys = [x for x, _ in clean], [y for _, y in clean]
            out[f"{label}/{scenario}"] = {
                "throughput": statistics.median(x["sentences_per_s"] / y["sentences_per_s"] for x, y in zip(xs, ys)),
                "throughput_rounds": [round(x["sentences_per_s"] / y["sentences_per_s"], 3) for x, y in zip(xs, ys)],
                "cpu_per_request": statistics.median(x["cpu_ms_per_request"] / y["cpu_ms_per_request"]
                                                     for x, y in zip(xs, ys)),
            }
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Tracing overhead ({time.strftime('%Y-%m-%d')})", "",
             f"{m['cpu']}, {m['physical_cores']} cores ({m['logical_cpus']} logical), Python {m['python']}, torch "
             f"{m['torch']}; all-MiniLM-L6-v2, {r['threads']} threads; {r['rounds']} alternating rounds; 'on' exports "
             f"over OTLP/gRPC to a receiver on loopback that discards ({r['collector']['requests']} exports, "
             f"{r['collector']['bytes'] / 1e6:.1f} MB)"
             + (f"; 'on_http' over OTLP/HTTP to one ({r['collector']['http']['requests']} exports)"
                if "http" in r["collector"] else "")
             + f"; 'before': commit {r['before'] or '(not measured)'}.", "",
             "| Variant | Small: sentences/s (median) | Small: server CPU ms/request | Small: event-loop CPU ms/request "
             "| Bulk: sentences/s | Bulk: server CPU ms/request | Others' CPU (cores, median) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in r["runs"].items():
        med = {s: {k: statistics.median(x[k] for x in runs[s])
                   for k in ("sentences_per_s", "cpu_ms_per_request", "loop_ms_per_request")} for s in ("small", "bulk")}
        lines.append(f"| {name} | {med['small']['sentences_per_s']:.1f} | {med['small']['cpu_ms_per_request']:.2f} "
                     f"| {med['small']['loop_ms_per_request']:.3f} | {med['bulk']['sentences_per_s']:.1f} "
                     f"| {med['bulk']['cpu_ms_per_request']:.1f} "
                     f"| {statistics.median(x['others_cores'] for s in ('small', 'bulk') for x in runs[s]):.2f} |")
    lines += ["", "Ratios: medians over the rounds in which other processes used at most "
              f"{NOISY} cores during both measurements (all rounds when fewer than 3 were).", "",
              "| Comparison | Throughput ratio (median of rounds) | Rounds | CPU/request ratio | Target |",
              "| --- | --- | --- | --- | --- |"]
    for key, v in r["ratios"].items():
        target = f">= {TARGET} ({'met' if v['throughput'] >= TARGET else 'NOT met'})" if key.startswith("on_") \
            else "no cost (~1.00)"
        lines.append(f"| {key} | {v['throughput']:.3f} | {', '.join(map(str, v['throughput_rounds']))} | "
                     f"{v['cpu_per_request']:.3f} | {target} |")
    c = r["in_process"]
    lines += ["", f"In-process cost of tracing one single-query request (no server, {c['spans_per_request']:.0f} spans):"
              f" {c['make_spans_us']:.1f} us of CPU noting its spans (event loop, after the answer) + "
              f"{c['encode_us']:.1f} us encoding them for OTLP (export thread; as the SDK's ReadableSpans "
              f"through the OTLP exporters' own encoder: {c.get('sdk_encode_us', float('nan')):.1f} us)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="a commit before tracing existed, measured as 'before' (e.g. the merge base)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--small-per-client", type=int, default=SMALL_PER_CLIENT,
                   help="queries per client in one small measurement (longer: less noise per round)")
    p.add_argument("--http", action="store_true", help="also measure 'on_http': OTLP/HTTP to a receiver on loopback")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-quiet", type=float, default=20.0, help="most seconds to wait for a quiet CPU per round")
    p.add_argument("--bulk-sentences", type=int, default=160)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracing.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (args.out / "tracing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
