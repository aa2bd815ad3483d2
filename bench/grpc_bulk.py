"""TEI's gRPC streaming bulk against HTTP bulk, same server, same model, same texts, one run.

    python -m bench.grpc_bulk            # 10 pairs of 200 workload sentences (~1-2 min on 2 quiet cores)
    python -m bench.grpc_bulk --quick    # 2 pairs of 128

One server process (``python -m embedding_server serve`` with EMBED_GRPC_PORT, the embedded all-MiniLM-L6-v2)
answers both. HTTP bulk is `make bench`'s bulk scenario: requests of 32 sentences to ``POST /api/embed``, one client
(bench/load.py's raw-socket client). gRPC streaming bulk is one ``tei.v1.Embed/EmbedStream`` call with one
sentence per message (grpcio's generated stub, one client): the server folds the messages it has read but not yet
submitted into one engine request and the engine batches them. The two alternate in short pairs (each pair: the same chunk of sentences, HTTP
first in even pairs, gRPC first in odd ones), so that a neighbour's load on a shared machine falls on both alike; the
ratio reported is the median of the pairs' gRPC/HTTP sentences/s. Also reported: the server's CPU time per sentence
in each mode (all threads, and the event loop's), and that both give the same vectors. Writes
``bench/results/grpc-bulk.md`` and ``.json`` (``--out``)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import grpc
import numpy as np

from bench import load, workload
from bench.cpumeter import stat_cpu_s
from bench.report import machine
from bench.server import Server, free_port
from embedding_server.api.grpc import tei_pb2 as pb
from embedding_server.api.grpc import tei_pb2_grpc as pbg

TARGET = 1.0  # gRPC streaming bulk >= HTTP bulk


def http_bulk(base_url: str, texts: list[str]) -> tuple[float, np.ndarray]:
    vectors = []
    with load.client(base_url) as c:
        t0 = time.perf_counter()
        for batch in workload.chunks(texts, 32):
            vectors += load.embed(c, batch)
        elapsed = time.perf_counter() - t0
    return len(texts) / elapsed, np.asarray(vectors, np.float32)


def grpc_bulk(stub, texts: list[str]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    answers = [a.embeddings for a in stub.EmbedStream(pb.EmbedRequest(inputs=t, truncate=True) for t in texts)]
    elapsed = time.perf_counter() - t0
    return len(texts) / elapsed, np.asarray(answers, np.float32)


def _cpu(server: Server) -> tuple[float, float]:
    """(CPU seconds of the whole server process, of its event-loop thread) so far."""
    return stat_cpu_s(Path(f"/proc/{server.proc.pid}/stat")), server.thread_cpu_seconds()


def run(texts: list[str], pairs: int, chunk: int, threads: int | None) -> dict:
    grpc_port = free_port()
    threads = threads or len(os.sched_getaffinity(0))
    chunks = [[texts[(p * chunk + i) % len(texts)] for i in range(chunk)] for p in range(pairs)]
    with Server(threads, extra_env={"EMBED_GRPC_PORT": str(grpc_port)}) as server:
        load.warmup(server.base_url, workload.sentences(), workload.QUERY)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = pbg.EmbedStub(channel)
        grpc_bulk(stub, texts[:128])  # the same warm-up through gRPC
        results, cpu = [], {"http": [0.0, 0.0, 0.0], "grpc": [0.0, 0.0, 0.0]}  # server, its loop, the client
        for p, sentences in enumerate(chunks):
            got = {}
            for kind in (("http", "grpc") if p % 2 == 0 else ("grpc", "http")):
                before = (*_cpu(server), time.process_time())  # the client: this process, all its threads
                got[kind] = http_bulk(server.base_url, sentences) if kind == "http" else grpc_bulk(stub, sentences)
                after = (*_cpu(server), time.process_time())
                cpu[kind] = [total + a - b for total, a, b in zip(cpu[kind], after, before)]
            cos = (got["http"][1] * got["grpc"][1]).sum(1)  # both L2-normalised
            results.append({"http_sentences_per_s": got["http"][0], "grpc_sentences_per_s": got["grpc"][0],
                            "ratio": got["grpc"][0] / got["http"][0], "min_cosine": float(cos.min())})
            print(f"pair {p + 1}: HTTP {got['http'][0]:.1f}/s, gRPC stream {got['grpc'][0]:.1f}/s, "
                  f"ratio {results[-1]['ratio']:.3f}, min cosine {cos.min():.6f}", flush=True)
        channel.close()
    n = pairs * chunk
    per_sentence = {kind: {"cpu_ms": 1000 * c[0] / n, "event_loop_cpu_ms": 1000 * c[1] / n,
                           "client_cpu_ms": 1000 * c[2] / n} for kind, c in cpu.items()}
    ratio = statistics.median(r["ratio"] for r in results)
    return {"machine": machine(), "threads": threads, "pairs": pairs, "chunk": chunk, "rounds": results,
            "server_cpu_per_sentence": per_sentence, "median_ratio": ratio, "target": TARGET, "pass": ratio >= TARGET,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def report(result: dict) -> str:
    m, cpu = result["machine"], result["server_cpu_per_sentence"]
    rows = "\n".join(f"| {i + 1} | {r['http_sentences_per_s']:.1f} | {r['grpc_sentences_per_s']:.1f} | "
                     f"{r['ratio']:.3f}x | {r['min_cosine']:.6f} |" for i, r in enumerate(result["rounds"]))
    verdict = "PASS" if result["pass"] else "FAIL"
    return f"""# gRPC streaming bulk vs HTTP bulk

{m['cpu']}, {result['threads']} torch threads, {m['logical_cpus']} logical CPUs; Python {m['python']}, torch
{m['torch']}; {result['date']}. all-MiniLM-L6-v2 (embedded), fp32; {result['pairs']} pairs of {result['chunk']}
workload sentences (bench/workload.py). HTTP: requests of 32 to `POST /api/embed`, one client. gRPC: one
`tei.v1.Embed/EmbedStream` per chunk, one sentence per message, one client. One server answers both
(`python -m bench.grpc_bulk`).

| Pair | HTTP bulk (sentences/s) | gRPC stream (sentences/s) | gRPC / HTTP | min cosine |
|---|---|---|---|---|
{rows}

Median gRPC / HTTP: **{result['median_ratio']:.3f}x** (target >= {result['target']:.1f}x): {verdict}

Server CPU per sentence: HTTP {cpu['http']['cpu_ms']:.2f} ms (event loop {cpu['http']['event_loop_cpu_ms']:.2f} ms),
gRPC {cpu['grpc']['cpu_ms']:.2f} ms (event loop {cpu['grpc']['event_loop_cpu_ms']:.2f} ms). The client's CPU per
sentence (this bench's process, on the same cores): HTTP {cpu['http'].get('client_cpu_ms', float('nan')):.2f} ms,
gRPC {cpu['grpc'].get('client_cpu_ms', float('nan')):.2f} ms.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 pairs of 128 sentences")
    parser.add_argument("--pairs", type=int, default=10, help="HTTP/gRPC pairs (default 10)")
    parser.add_argument("--chunk", type=int, default=200, help="sentences per pair (default 200)")
    parser.add_argument("--threads", type=int, help="EMBED_NUM_THREADS (default: the CPUs available)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    pairs, chunk = (2, 128) if args.quick else (args.pairs, args.chunk)
    result = run(workload.sentences(), pairs, chunk, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc-bulk.json").write_text(json.dumps(result, indent=2))
    text = report(result)
    (args.out / "grpc-bulk.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
