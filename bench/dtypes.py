"""bfloat16 against float32: two servers of one model, side by side, in one run (``python -m bench.run --dtypes``).

Both servers run at once (one with ``EMBED_DTYPE=float32``, one with ``bfloat16``), idle but for the scenario being
measured; each round measures bulk throughput, single-query latency and 8 concurrent clients on one, then the other
(the order alternating by round), and each target is the median of its per-round ratios. RSS after load is read
for both. Only where the CPU has native bf16 (``avx512_bf16`` or ``amx_bf16``): elsewhere the report says it was
skipped and why (bf16 is emulated there, and slower). ``--bge-m3-shape`` runs the same on the generated BGE-M3 shape
(bulk on ~512-token chunks).

For MiniLM the report also splits a request's cost, to show where a small request's time goes: the model's forward
alone, in this process (one query, then 8 at once, both dtypes alternating), and the CPU the server's event-loop
thread spends per single query (HTTP, JSON, tokenization, hand-off), which no dtype changes.
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson

from . import load, report, workload
from .reference import percentile
from .run import log, write_results
from .server import Server

FULL = dict(rounds=5, single=100, clients=8, per_client=60, texts=640, chunks=16)
QUICK = dict(rounds=1, single=20, clients=8, per_client=5, texts=128, chunks=4)
BGE_M3 = dict(rounds=3, single=30, per_client=4)  # a BGE-M3-shaped query costs ~40x MiniLM's: fewer repeats (no target on them)


def _post(c: load.Client, model: str, texts: list[str]) -> None:
    status, body = c.post("/api/embed", orjson.dumps({"model": model, "input": texts}))
    if status != 200:
        raise RuntimeError(f"/api/embed -> {status}: {body[:200]!r}")


def bulk(url: str, model: str, requests: list[list[str]]) -> dict:
    with load.client(url) as c:
        t0 = time.perf_counter()
        for texts in requests:
            _post(c, model, texts)
        seconds = time.perf_counter() - t0
    return {"inputs_per_s": sum(map(len, requests)) / seconds}


def single(url: str, model: str, query: str, n: int) -> dict:
    ms = []
    with load.client(url) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            _post(c, model, [query])
            ms.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}


def concurrent(url: str, model: str, query: str, clients: int, per_client: int) -> dict:
    def client_loop() -> None:
        with load.client(url) as c:
            for _ in range(per_client):
                _post(c, model, [query])

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"queries_per_s": clients * per_client / (time.perf_counter() - t0)}


def loop_cpu_ms(server: Server, model: str, query: str, n: int) -> float:
    """CPU milliseconds the server's main (event-loop) thread spends per sequential single-query request."""
    before = server.thread_cpu_seconds()
    single(server.base_url, model, query, n)
    return (server.thread_cpu_seconds() - before) * 1e3 / n


def forward_only(folder: Path, query: str, threads: int, reps: int) -> dict:
    """The model's forward alone (tokenized query, padding-free forward, pooling), both dtypes loaded in this
    process and timed alternately: median ms for one query and for 8 at once."""
    from embedding_server.model.encoder import SentenceEncoder

    encoders = {d: SentenceEncoder(folder, num_threads=threads, short_batch_copy_mb=256, dtype=d)
                for d in ("float32", "bfloat16")}
    ids = encoders["float32"].tokenize([query])
    times = {(d, n): [] for d in encoders for n in (1, 8)}
    for rep in range(reps + 20):
        for (dtype, n), samples in times.items():
            started = time.perf_counter()
            encoders[dtype].embed(ids * n)
            if rep >= 20:  # warm-up
                samples.append((time.perf_counter() - started) * 1e3)
    return {f"{d}_{n}_ms": statistics.median(v) for (d, n), v in times.items()}


def run(args, folder: Path, requests: list[list[str]], cfg: dict) -> dict:
    from embedding_server.model.cpu import cpu_features

    machine = report.machine()
    native = cpu_features().native_bf16
    result = {"mode": "dtypes", "machine": machine, "native_bf16": native, "model": str(folder), "config": cfg}
    if not native:
        result["skipped"] = (f"this CPU ({machine['cpu']}) has no native bf16 (no avx512_bf16 or amx_bf16 flag): "
                             "bf16 products would be emulated, slower than float32, so there is nothing to compare")
        return result
    name, q = folder.name, workload.QUERY
    tmp = tempfile.TemporaryDirectory(prefix="bench-dtypes-")
    (Path(tmp.name) / name).symlink_to(folder, target_is_directory=True)
    servers = {dtype: Server(args.threads, model_dir=tmp.name, extra_env={"EMBED_MODEL": name, "EMBED_DTYPE": dtype})
               for dtype in ("float32", "bfloat16")}
    try:
        for dtype, server in servers.items():
            log(f"starting the {dtype} server")
            server.start(timeout=900)
            result[dtype] = {"rss_load_mb": server.rss_mb()}
        for dtype, server in servers.items():  # warm-up (oneDNN compiles a bf16 kernel per shape), then RSS
            bulk(server.base_url, name, requests[:2])
            single(server.base_url, name, q, 20)
            concurrent(server.base_url, name, q, cfg["clients"], 5)
            result[dtype]["rss_warm_mb"] = server.rss_mb()
        rounds = []
        for n in range(cfg["rounds"]):
            order = ["float32", "bfloat16"] if n % 2 == 0 else ["bfloat16", "float32"]
            log(f"round {n + 1}/{cfg['rounds']}: bulk, single, {cfg['clients']} concurrent on {order[0]}, then {order[1]}")
            r = {}
            for dtype in order:
                url = servers[dtype].base_url
                r[dtype] = {"bulk": bulk(url, name, requests), "single": single(url, name, q, cfg["single"]),
                            "concurrent": concurrent(url, name, q, cfg["clients"], cfg["per_client"])}
            rounds.append(r)
        result["rounds"] = rounds
        if not args.bge_m3_shape:
            for dtype, server in servers.items():
                result[dtype]["loop_cpu_ms"] = loop_cpu_ms(server, name, q, 10 * cfg["single"])
    finally:
        for server in servers.values():
            server.stop()
        tmp.cleanup()
    if not args.bge_m3_shape:
        log("the forward alone, in this process")
        result["forward_only"] = forward_only(folder, q, args.threads, cfg["single"])
    result["targets"] = targets(result, bge_m3=args.bge_m3_shape)
    return result


def _ratio(rounds: list[dict], scenario: str, field: str) -> tuple[float, list[float]]:
    per_round = [r["bfloat16"][scenario][field] / r["float32"][scenario][field] for r in rounds]
    return statistics.median(per_round), per_round


def targets(r: dict, bge_m3: bool) -> list[dict]:
    rows = [("bulk throughput bf16 / fp32", *_ratio(r["rounds"], "bulk", "inputs_per_s"), ">=", 1.6)]
    if bge_m3:
        rows.append(("RSS after load, bf16 (MB)", r["bfloat16"]["rss_load_mb"], [], "<=", 1500))
    else:
        rows += [("single-query p50 bf16 / fp32", *_ratio(r["rounds"], "single", "p50_ms"), "<=", 0.75),
                 ("8 concurrent clients bf16 / fp32", *_ratio(r["rounds"], "concurrent", "queries_per_s"), ">=", 1.5),
                 ("RSS after load bf16 - fp32 (MB)", r["bfloat16"]["rss_load_mb"] - r["float32"]["rss_load_mb"], [],
                  "<=", 0)]
    return [{"target": name, "measured": value, "rounds": per_round, "op": op, "threshold": threshold,
             "pass": value >= threshold if op == ">=" else value <= threshold}
            for name, value, per_round, op, threshold in rows]


def markdown(r: dict) -> str:
    m = r["machine"]
    head = (f"Machine: {m['cpu']}, {m['physical_cores']} cores; native bf16: {r['native_bf16'] or 'no'}; "
            f"torch {m['torch']}. Model: `{Path(r['model']).name}`.")
    if "skipped" in r:
        return head + f"\n\n**Skipped**: {r['skipped']}.\n"
    lines = [head, "", "| Measurement (median round) | float32 | bfloat16 |", "|---|---|---|",
             f"| RSS after load / after warm-up | {r['float32']['rss_load_mb']:.0f} / {r['float32']['rss_warm_mb']:.0f} MB"
             f" | {r['bfloat16']['rss_load_mb']:.0f} / {r['bfloat16']['rss_warm_mb']:.0f} MB |"]
    for scenario, field, unit in (("bulk", "inputs_per_s", "inputs/s"), ("single", "p50_ms", "ms p50"),
                                  ("concurrent", "queries_per_s", "queries/s")):
        values = {d: statistics.median(x[d][scenario][field] for x in r["rounds"]) for d in ("float32", "bfloat16")}
        lines.append(f"| {scenario} | {values['float32']:.1f} {unit} | {values['bfloat16']:.1f} {unit} |")
    if "forward_only" in r:
        f = r["forward_only"]
        lines += ["", "Where a small request's time goes (median):", "",
                  "| | float32 | bfloat16 | ratio |", "|---|---|---|---|"]
        for n in (1, 8):
            a, b = f[f"float32_{n}_ms"], f[f"bfloat16_{n}_ms"]
            lines.append(f"| forward alone, {n} quer{'y' if n == 1 else 'ies'} (in process) | {a:.2f} ms | {b:.2f} ms "
                         f"| {b / a:.3f}x |")
        a, b = r["float32"]["loop_cpu_ms"], r["bfloat16"]["loop_cpu_ms"]
        lines.append(f"| server event-loop CPU per single query | {a:.2f} ms | {b:.2f} ms | {b / a:.3f}x |")
        one, eight = (f[f"bfloat16_{n}_ms"] / f[f"float32_{n}_ms"] for n in (1, 8))
        lines += ["", f"Ceiling on this CPU: a request costs its forward plus work that costs the same in both dtypes "
                  f"(HTTP, JSON, tokenizing, the hand-off to the model's thread), so the server's single-query ratio "
                  f"cannot be lower than the forward alone's ({one:.3f}x) nor its 8-client speed-up higher than "
                  f"{1 / eight:.2f}x (1 / {eight:.3f})."]
    lines += ["", "| Target | Measured | Threshold | Status |", "|---|---|---|---|"]
    for t in r["targets"]:
        shown = f"{t['measured']:.3f}x" if t["rounds"] else f"{t['measured']:.0f} MB"
        rounds = f" (rounds {', '.join(f'{x:.3f}' for x in t['rounds'])})" if t["rounds"] else ""
        lines.append(f"| {t['target']} | {shown}{rounds} | {t['op']} {t['threshold']} | "
                     f"{'PASS' if t['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(args) -> int:
    cfg = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.bge_m3_shape:
        cfg.update({k: min(v, cfg[k]) for k, v in BGE_M3.items()})
        from .bge_m3_shape import ensure_cached
        from .long_context import _stream, token_chunks
        from transformers import AutoTokenizer

        folder = ensure_cached(args.layers, log=log)
        chunks = token_chunks(AutoTokenizer.from_pretrained(str(folder)), _stream(), cfg["chunks"], 512)
        requests = [chunks[i:i + 4] for i in range(0, len(chunks), 4)]
    else:
        folder = Path(args.model_dir)
        texts = workload.sentences()[:cfg["texts"]]
        requests = workload.chunks(texts, 32)
    result = run(args, folder.resolve(), requests, cfg)
    out = args.out or Path("bench/results") / ("dtypes-bge-m3-shape" if args.bge_m3_shape else "dtypes")
    write_results(out, markdown(result), result)
    return 0
