"""Long-context bench: the server against sentence-transformers in-process, on one model folder.

    python -m bench.run --bge-m3-shape [--layers N] [--quick]   # a generated BGE-M3-shaped folder (cached)
    python -m bench.run --long-context --model-dir DIR [--quick]  # any model folder

Made for BGE-M3-sized models (XLM-RoBERTa large, 8,192-token context); see bench/README.md.
Everything runs in one run, on one folder, and each target is a ratio between two measurements
of this run:

1. The weights are read once into the page cache, so that neither side's load pays for the disk.
2. sentence-transformers starts in a worker process (`st_worker.py`): `SentenceTransformer(folder,
   device="cpu")`; its RSS after loading is read from /proc like the server's. It stays loaded,
   idle, while the server runs, so that the two sides of a comparison run back to back.
3. The server starts on the folder (a temp `EMBED_MODELS_DIR` holding a symlink to it, served as
   the folder's name and made `EMBED_MODEL`): time from process start to `/ready` (or
   `/health`) 200, RSS after load. Both sides are warmed up alike.
4. Paired rounds: single-query latency (the workload query, sequential `encode([q])` / sequential
   1-input requests), then bulk (~512-token chunks; `encode(chunks, batch_size=32)` / requests of
   4 chunks, sequential). Each target is the median of its per-round ratios.
5. The long input (8,192 tokens; 2,048 with --quick): alone, with its peak RSS (VmHWM reset just
   before); with an open-loop query every 200 ms (each from its own thread, whatever happened to
   earlier ones); alone again (the slowdown is against the mean of the two); with the query sent
   sequentially throughout (latencies of the queries sent while it ran -> p95, against the idle
   server's p95 from step 4). Then sentence-transformers on the same input, for information.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


from . import load, report, workload
from .cpumeter import CpuMeter, wait_quiet
from .long_report import markdown, targets
from .long_scenarios import (_lat_stats, _safe, long_alone, long_with_open_loop_queries,
                             long_with_sequential_queries, served_context, server_bulk, server_bulk_outputs,
                             server_single)
from .reference import percentile
from .run import Metered, log, write_results
from .server import Server
from .st_worker import STWorker

FULL = dict(long_tokens=8192, chunks=16, chunk_tokens=512, per_request=4, st_batch_size=32, single_reps=30,
            rounds=3, interval_s=0.2)
QUICK = dict(long_tokens=2048, chunks=8, chunk_tokens=512, per_request=4, st_batch_size=32, single_reps=10,
             rounds=1, interval_s=0.2)


# -- workload -------------------------------------------------------------------------------------

def _stream() -> str:
    return " ".join(workload.sentences())


def token_chunks(tok, text: str, n: int, size: int) -> list[str]:
    """`n` consecutive pieces of `text` of at most `size` tokens each (special tokens included), cut at spaces."""
    specials = len(tok("a")["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    starts = [a for a, _ in offsets]
    out, pos = [], 0
    while len(out) < n:
        i = bisect.bisect_left(starts, pos)
        j = i + size - specials
        if j > len(offsets):
            raise ValueError(f"the workload text has too few tokens for {n} chunks of {size}")
        start, end = offsets[i][0], offsets[j - 1][1]
        if end < len(text) and text[end] != " ":  # mid-word: back to the last space
            end = max(text.rfind(" ", start, end), start + 1)
        piece = text[start:end].strip()
        while len(tok(piece)["input_ids"]) > size:  # a word split differently once cut: drop words
            piece = piece.rsplit(" ", 1)[0]
        out.append(piece)
        pos = text.index(piece, start) + len(piece)
    return out


def long_text(tok, tokens: int, context: int) -> str:
    """Workload text of `tokens` tokens (special tokens included); at least the context's worth plus 64 when
    `tokens` >= context, so that both sides truncate it to the context."""
    want = tokens + 64 if tokens >= context else tokens
    words = _stream().split(" ")
    words = words[len(words) // 3:] + words[: len(words) // 3]  # not the text of the bulk chunks
    lo, hi = 1, len(words)
    while lo < hi:  # the most words whose text stays within `want` tokens
        mid = (lo + hi + 1) // 2
        if len(tok(" ".join(words[:mid]))["input_ids"]) <= want:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def model_facts(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    keys = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "vocab_size")
    facts = {k: cfg.get(k) for k in keys}
    facts["weights_bytes"] = sum(p.stat().st_size for pat in ("*.safetensors", "*.bin") for p in folder.glob(pat))
    facts["bge_m3_shape"] = bool((folder / ".bench-bge-m3-shape.json").is_file())
    facts["m3_heads"] = all((folder / f).is_file() for f in ("sparse_linear.pt", "colbert_linear.pt"))
    return facts


def warm_page_cache(folder: Path) -> float:
    """Read the weight files once (both loads then read from memory, not disk); seconds it took."""
    t0 = time.perf_counter()
    for f in (*folder.glob("*.safetensors"), *folder.glob("*.bin")):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    return time.perf_counter() - t0


def cpu_flags() -> dict:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    except OSError:
        pass
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")}


# -- the run --------------------------------------------------------------------------------------

def resolve_folder(args) -> Path:
    if args.bge_m3_shape:
        from .bge_m3_shape import ensure_cached

        return ensure_cached(args.layers, log=log)
    if not args.model_dir:
        sys.exit("--long-context needs --model-dir DIR (a sentence-transformers model folder)")
    return Path(args.model_dir).expanduser().resolve()


def run(args) -> dict:
    cfg = dict(QUICK if args.quick else FULL, quick=args.quick, threads=args.threads)
    if args.long_tokens:
        cfg["long_tokens"] = args.long_tokens
    folder = resolve_folder(args)
    name = folder.name
    facts = model_facts(folder)
    import transformers

    transformers.utils.logging.set_verbosity_error()  # "sequence longer than the maximum" on the long text
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    q = workload.QUERY
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 120)
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    long_retries = min(retries, 1)  # a retry of a long-input scenario costs minutes

    log(f"model {folder} ({facts['num_hidden_layers']} layers, hidden {facts['hidden_size']}); "
        f"reading {facts['weights_bytes'] / 1e9:.2f} GB of weights into the page cache")
    page_cache_s = warm_page_cache(folder)
    result: dict = {"mode": "long-context", "config": cfg, "machine": dict(report.machine(), flags=cpu_flags()),
                    "model": dict(facts, folder=str(folder), served_as=name, page_cache_read_s=page_cache_s),
                    "server": {}, "st": None}
    srv, st = result["server"], {}
    if wait:
        log(f"waiting up to {wait:.0f}s for a quiet CPU")
        wait_quiet(wait)
    total = CpuMeter()
    total.start()

    worker = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-long-models-")
    (Path(tmp.name) / name).symlink_to(folder, target_is_directory=True)
    server = Server(args.threads, model_dir=tmp.name, extra_env={"EMBED_MODEL": name})
    try:
        if not args.skip_st:
            log("sentence-transformers: loading in a worker process")
            worker = STWorker(folder, args.threads, Path(tempfile.gettempdir()) / f"bench-st-worker-{os.getpid()}.log")
            meter = CpuMeter()
            meter.start()
            worker.start()
            st.update(load=dict(worker.ready, cpu=meter.stop(worker.pids())), rss_load_mb=worker.rss_mb(),
                      rss_load_parts_mb=worker.rss_parts_mb(), hwm_load_mb=worker.hwm_mb())
            log(f"  loaded in {worker.ready['construct_s']:.1f} s (process {worker.ready['process_s']:.1f} s), "
                f"RSS {st['rss_load_mb']:.0f} MB")
            result["st"] = st
        if wait:
            wait_quiet(wait)
        log("starting the server")
        meter = CpuMeter()
        meter.start(worker.pids() if worker else [])  # the server's CPU counts from 0: it starts in the window
        t0 = time.perf_counter()
        server.start(timeout=900)
        srv["load_s"] = time.perf_counter() - t0
        pids = server.pids() + (worker.pids() if worker else [])
        srv["load_cpu"] = meter.stop(pids)
        srv["rss_load_mb"], srv["hwm_load_mb"] = server.rss_mb(), server.hwm_mb()
        srv["rss_load_parts_mb"] = server.rss_parts_mb()
        url = server.base_url
        served_ctx = served_context(url, name)
        srv["context_length"] = served_ctx
        context = served_ctx or (worker.ready["max_seq_length"] if worker else 512)
        log(f"  ready in {srv['load_s']:.1f} s on {url} (pid {server.proc.pid}, log {server.log_path}), "
            f"RSS {srv['rss_load_mb']:.0f} MB, context {served_ctx}")

        cfg["chunk_tokens"] = min(cfg["chunk_tokens"], context)  # a small model's chunks: its whole context
        chunks = token_chunks(tok, _stream(), cfg["chunks"], cfg["chunk_tokens"])
        text = long_text(tok, cfg["long_tokens"], context)
        lens = [len(ids) for ids in tok(chunks)["input_ids"]]
        text_tokens = len(tok(text)["input_ids"])
        result["workload"] = {"chunk_tokens": {"min": min(lens), "mean": statistics.mean(lens), "max": max(lens)},
                              "long_text_tokens": text_tokens, "long_tokens_processed": min(text_tokens, context),
                              "context": context, "long_text_chars": len(text)}
        if worker:
            result["workload"]["st_long_tokens_processed"] = worker.call("tokens", texts=[text])["tokens"][0]

        log("warm-up: 5 queries and one request of chunks, on both sides")
        with load.client(url) as c:
            for _ in range(5):
                svec = load.embed(c, [q], model=name)[0]
            load.embed(c, chunks[: cfg["per_request"]], model=name)
        if worker:
            worker.call("single", text=q, n=5)
            worker.call("encode", texts=chunks[: cfg["per_request"]], batch_size=cfg["st_batch_size"])
            stvec = worker.call("encode", texts=[q], vectors=True)["vectors"][0]
            result["check"] = {"cosine": sum(a * b for a, b in zip(svec, stvec)) / math.sqrt(
                sum(a * a for a in svec) * sum(b * b for b in stvec))}
        srv["rss_warm_mb"] = server.rss_mb()

        measure = Metered(retries, wait or 60, pids)
        measure_long = Metered(long_retries, wait or 60, pids)
        total.start(pids)
        rounds = []
        for n in range(cfg["rounds"]):
            log(f"round {n + 1}/{cfg['rounds']}: {cfg['single_reps']} single queries, then {len(chunks)} chunks of "
                f"~{cfg['chunk_tokens']} tokens ({cfg['per_request']}/request), each side back to back")
            r: dict = {"server_single": measure(_safe(lambda: server_single(url, name, q, cfg["single_reps"])))}
            if worker:
                def st_single() -> dict:
                    ms = worker.call("single", text=q, n=cfg["single_reps"])["ms"]
                    return {"n": len(ms), "ms": ms, "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}

                def st_bulk() -> dict:
                    s = worker.call("encode", texts=chunks, batch_size=cfg["st_batch_size"])["s"]
                    return {"chunks": len(chunks), "s": s, "chunks_per_s": len(chunks) / s,
                            "batch_size": cfg["st_batch_size"]}

                r["st_single"] = measure(_safe(st_single))
                r["st_bulk"] = measure(_safe(st_bulk))
            r["server_bulk"] = measure(_safe(lambda: server_bulk(url, name, chunks, cfg["per_request"])))
            if facts["m3_heads"]:  # BGE-M3's three outputs against dense only, both through /api/encode
                for key, outputs in (("encode_dense", ["dense"]), ("encode_all", ["dense", "sparse", "colbert"])):
                    r[key] = measure(_safe(lambda o=outputs: server_bulk_outputs(url, name, chunks,
                                                                                  cfg["per_request"], o)))
            rounds.append(r)
        result["rounds"] = rounds
        idle_ms = [v for r in rounds for v in r["server_single"].get("ms", [])]
        srv["idle_single"] = _lat_stats(idle_ms)

        tokens = result["workload"]["long_tokens_processed"]
        log(f"long input ({tokens} tokens) alone, with its peak RSS")
        srv["long_alone_1"] = measure_long(_safe(lambda: long_alone(url, name, text, server)))
        log(f"long input with a query every {cfg['interval_s'] * 1e3:.0f} ms (open loop)")
        srv["long_open_loop"] = measure_long(_safe(lambda: long_with_open_loop_queries(
            url, name, text, q, cfg["interval_s"])))
        log("long input alone again")
        srv["long_alone_2"] = measure_long(_safe(lambda: long_alone(url, name, text)))
        log("long input with the query sent sequentially throughout")
        srv["long_sequential"] = measure_long(_safe(lambda: long_with_sequential_queries(url, name, text, q)))
        if worker:
            log("sentence-transformers: the long input alone, with its peak RSS")

            def st_long() -> dict:
                before = worker.rss_mb()
                worker.reset_peak()
                s = worker.call("encode", texts=[text], batch_size=1)["s"]
                return {"long_s": s, "rss_before_mb": before, "peak_mb": worker.hwm_mb()}

            st["long"] = measure_long(_safe(st_long))
            st["rss_end_mb"] = worker.rss_mb()
        srv["rss_end_mb"] = server.rss_mb()
        result["cpu_cores"] = total.stop(pids)
    finally:
        server.stop()
        if worker:
            worker.stop()
        tmp.cleanup()
    log("server and worker stopped")
    result["targets"] = targets(result)
    return result


def main(args) -> int:
    out = args.out or Path("bench/results") / ("bge-m3-shape" if args.bge_m3_shape else
                                               f"long-context-{Path(args.model_dir or 'model').name}")
    result = run(args)
    write_results(out, markdown(result), result)
    return 0
