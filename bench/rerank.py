"""Rerank scenario: ``POST /v1/rerank`` against sentence-transformers' ``CrossEncoder.predict`` in-process.

    python -m bench.run --rerank [--quick]                  # a generated ms-marco-MiniLM-L-6-v2-shaped folder
    python -m bench.run --rerank --bge-m3-shape [--layers N] # a generated bge-reranker-v2-m3-shaped folder

A generated cross-encoder (``cross_encoder_shape.py``); the workload query against documents of ~100 words (50 to
150, uniformly, fixed seed: the workload sentences as one stream of words, cut in pieces of those sizes). The same torch threads on both sides, never computing
at the same time:

1. The reference: ``CrossEncoder(folder, device="cpu")`` in this process, ``predict(pairs, batch_size=32)``.
2. The server on the folder (a temp ``EMBED_MODELS_DIR`` holding a symlink to it; addressed by the folder's name in
   each request, the default embedding model stays the embedded MiniLM). Both sides are warmed up alike, then
   one 100-document request's scores are compared with ``predict``'s (max abs difference).
3. Paired rounds: *single*: one query x 100 documents, the reference and the server alternating call by call
   (median time of each); *concurrent*: 8 client threads (keep-alive raw-socket connections, ``load.Client``)
   each sending requests of 1 query x 20 documents, against the same requests predicted one after the other
   in-process (pairs/s), the side going first alternating by round. Each target is the median of its
   per-round ratios.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from . import load, report, workload
from .cpumeter import CpuMeter, wait_quiet
from .reference import percentile
from .report import NOISY
from .run import Metered, log, write_results
from .server import Server

FULL = dict(rounds=5, single_reps=5, clients=8, per_client=5, documents=100, per_request=20, words=100)
QUICK = dict(FULL, rounds=1, single_reps=2, per_client=2)
BGE = dict(rounds=3, single_reps=1, per_client=1)  # caps: a bge-reranker-shaped pair costs ~28x MiniLM's
TARGETS = {"single": 1.0, "concurrent": 1.3, "max_abs_diff": 1e-5}


def documents(n: int = 100, words: int = 100) -> list[str]:
    """``n`` documents of about ``words`` words (uniformly 0.5x to 1.5x, fixed seed, as retrieved passages vary):
    consecutive pieces of the workload sentences' words."""
    import random

    rng = random.Random(1234)
    stream = " ".join(workload.sentences()).split()
    sizes = [rng.randint(words // 2, words * 3 // 2) for _ in range(n)]
    starts = [sum(sizes[:i]) for i in range(n)]
    return [" ".join(stream[a:a + k]) for a, k in zip(starts, sizes)]


def requests(docs: list[str], count: int, size: int) -> list[list[str]]:
    """``count`` requests of ``size`` documents, cycling through ``docs``."""
    return [[docs[(k * size + i) % len(docs)] for i in range(size)] for k in range(count)]


class Reference:
    """``CrossEncoder.predict`` in this process."""

    def __init__(self, folder: Path, threads: int):
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        self.ce = CrossEncoder(str(folder), device="cpu")

    def predict(self, query: str, docs: list[str]):
        return self.ce.predict([(query, d) for d in docs], batch_size=32, show_progress_bar=False)

    def tokens_per_pair(self, query: str, docs: list[str]) -> float:
        ids = self.ce.tokenizer([query] * len(docs), docs, truncation="longest_first")["input_ids"]
        return statistics.mean(map(len, ids))


def rerank(c: load.Client, model: str, query: str, docs: list[str]) -> dict:
    body = orjson.dumps({"model": model, "query": query, "documents": docs, "return_documents": False})
    status, data = c.post("/v1/rerank", body)
    if status != 200:
        raise RuntimeError(f"/v1/rerank -> {status}: {data[:300]!r}")
    out = orjson.loads(data)
    if len(out["results"]) != len(docs):
        raise RuntimeError(f"/v1/rerank returned {len(out['results'])} results for {len(docs)} documents")
    return out


def _one(url: str, model: str, query: str, docs: list[str]) -> dict:
    with load.client(url) as c:
        return rerank(c, model, query, docs)


def score_check(expected, out: dict) -> dict:
    """Max abs difference between a /v1/rerank response's scores and ``predict``'s for the same documents."""
    got = {r["index"]: r["relevance_score"] for r in out["results"]}
    ordered = [r["relevance_score"] for r in out["results"]]
    return {"pairs": len(expected), "max_abs_diff": max(abs(got[i] - float(s)) for i, s in enumerate(expected)),
            "sorted_desc": ordered == sorted(ordered, reverse=True), "prompt_tokens": out["usage"]["prompt_tokens"]}


def single_round(ref: Reference, url: str, model: str, query: str, docs: list[str], reps: int,
                 server_first: bool) -> dict:
    """1 query x len(docs) documents, ``reps`` times per side, the two sides alternating call by call."""
    ms = {"reference": [], "server": []}
    with load.client(url) as c:
        calls = {"reference": lambda: ref.predict(query, docs), "server": lambda: rerank(c, model, query, docs)}
        for i in range(reps):
            for side in (("server", "reference") if (i + server_first) % 2 else ("reference", "server")):
                t0 = time.perf_counter()
                calls[side]()
                ms[side].append((time.perf_counter() - t0) * 1e3)
    return {"reference_ms": statistics.median(ms["reference"]), "server_ms": statistics.median(ms["server"]),
            "reference_all_ms": ms["reference"], "server_all_ms": ms["server"]}


def concurrent_round(ref: Reference, url: str, model: str, query: str, reqs: list[list[str]], clients: int,
                     server_first: bool) -> dict:
    """``clients`` threads sharing ``reqs`` (each its own slice, sequentially) / the same requests in-process."""
    per_client, pairs = len(reqs) // clients, sum(map(len, reqs))
    lat: list[float] = []

    def client(i: int) -> None:
        mine = []
        with load.client(url) as c:
            for docs in reqs[i * per_client:(i + 1) * per_client]:
                t0 = time.perf_counter()
                rerank(c, model, query, docs)
                mine.append((time.perf_counter() - t0) * 1e3)
        lat.extend(mine)

    def in_process() -> float:
        t0 = time.perf_counter()
        for docs in reqs:
            ref.predict(query, docs)
        return time.perf_counter() - t0

    out = {"pairs": pairs, "server_first": server_first}
    for side in (("server", "reference") if server_first else ("reference", "server")):
        seconds = load._run_threads(clients, client) if side == "server" else in_process()  # noqa: SLF001
        out[f"{side}_pairs_per_s"] = pairs / seconds
    out.update(server_p50_ms=percentile(lat, 50), server_p95_ms=percentile(lat, 95))
    return out


def run(args, folder: Path, cfg: dict) -> dict:
    """Reference, server, score check and paired rounds on ``folder``; the results dict."""
    model, query = folder.name, workload.QUERY
    docs = documents(cfg["documents"], cfg["words"])
    reqs = requests(docs, cfg["clients"] * cfg["per_client"], cfg["per_request"])
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 120)
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    log(f"reference: CrossEncoder({model}), {args.threads} threads")
    ref = Reference(folder, args.threads)
    expected = ref.predict(query, docs)  # warm-up (as the server's below) and the scores to check
    ref.predict(query, reqs[0])
    result = {"mode": "rerank", "machine": report.machine(), "model": str(folder), "config": cfg,
              "layers": json.loads((folder / "config.json").read_text())["num_hidden_layers"],
              "tokens_per_pair": ref.tokens_per_pair(query, docs)}
    tmp = tempfile.TemporaryDirectory(prefix="bench-rerank-")
    (Path(tmp.name) / model).symlink_to(folder, target_is_directory=True)
    try:
        with Server(args.threads, model_dir=tmp.name) as server:
            url, pids = server.base_url, server.pids()
            log(f"server ready on {url} (pid {server.proc.pid}, log {server.log_path}); warm-up")
            with load.client(url) as c:
                result["check"] = score_check(expected, rerank(c, model, query, docs))  # loads the model
                rerank(c, model, query, reqs[0])
            load._run_threads(cfg["clients"], lambda i: _one(url, model, query, reqs[i]))  # noqa: SLF001
            result["server_rss_warm_mb"] = server.rss_mb()
            if wait:
                log(f"waiting up to {wait:.0f}s for a quiet CPU")
                wait_quiet(wait)
            measure, total = Metered(retries, wait or 60, pids), CpuMeter()
            total.start(pids)
            result["rounds"] = []
            for n in range(cfg["rounds"]):
                log(f"round {n + 1}/{cfg['rounds']}: 1 x {len(docs)} documents x {cfg['single_reps']} per side, "
                    f"then {cfg['clients']} clients x {cfg['per_client']} requests of {cfg['per_request']}")
                result["rounds"].append({
                    "single": measure(lambda: single_round(ref, url, model, query, docs, cfg["single_reps"],
                                                           server_first=n % 2 == 1)),
                    "concurrent": measure(lambda: concurrent_round(ref, url, model, query, reqs, cfg["clients"],
                                                                   server_first=n % 2 == 1))})
            result["cpu"] = total.stop(pids)
    finally:
        tmp.cleanup()
    result["targets"] = targets(result)
    return result


def targets(r: dict) -> list[dict]:
    """The issue's two ratios (medians of the per-round ratios) and the score check, each PASS or FAIL."""
    rounds = r["rounds"]
    single = [x["single"]["reference_ms"] / x["single"]["server_ms"] for x in rounds]
    conc = [x["concurrent"]["server_pairs_per_s"] / x["concurrent"]["reference_pairs_per_s"] for x in rounds]
    noisy = {k: any(x[k].get("cpu", {}).get("other", 0) > NOISY for x in rounds) for k in ("single", "concurrent")}
    c, diff = r["config"], r["check"]["max_abs_diff"]
    rows = [
        (f"single request (1 x {c['documents']} documents): in-process time / server time",
         statistics.median(single), single, ">=", TARGETS["single"], noisy["single"]),
        (f"{c['clients']} clients (1 x {c['per_request']} documents): server pairs/s / in-process pairs/s",
         statistics.median(conc), conc, ">=", TARGETS["concurrent"], noisy["concurrent"]),
        ("scores: max abs difference, server vs CrossEncoder.predict", diff, [], "<=", TARGETS["max_abs_diff"], False),
    ]
    return [{"target": name, "measured": value, "rounds": per_round, "op": op, "threshold": threshold,
             "pass": bool(value >= threshold if op == ">=" else value <= threshold), "noisy": is_noisy}  # NaN: FAIL
            for name, value, per_round, op, threshold, is_noisy in rows]


def markdown(r: dict) -> str:
    m, c = r["machine"], r["config"]
    single = {s: statistics.median(x["single"][f"{s}_ms"] for x in r["rounds"]) for s in ("reference", "server")}
    conc = {s: statistics.median(x["concurrent"][f"{s}_pairs_per_s"] for x in r["rounds"])
            for s in ("reference", "server")}
    p95 = statistics.median(x["concurrent"]["server_p95_ms"] for x in r["rounds"])
    other = {k: max(x[k].get("cpu", {}).get("other", 0.0) for x in r["rounds"]) for k in ("single", "concurrent")}
    lines = [
        f"Machine: {m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical), "
        f"torch {m['torch']} / transformers {m['transformers']} / sentence-transformers {m['sentence_transformers']}, "
        f"Python {m['python']}; "
        f"{c['threads']} torch threads. Model: `{Path(r['model']).name}` (generated, random weights, "
        f"{r['layers']} layers){' — QUICK MODE (small counts, indicative only)' if c['quick'] else ''}.",
        "", f"Documents: {c['documents']} of ~{c['words']} words (50-150%, {r['tokens_per_pair']:.0f} tokens per pair with the "
        f"query, on average). Server RSS after warm-up: {r['server_rss_warm_mb']:.0f} MB.",
        "", "| Measurement (median over rounds) | CrossEncoder.predict in-process | Server /v1/rerank | Others' CPU |",
        "|---|---|---|---|",
        f"| 1 query x {c['documents']} documents ({c['single_reps']} per side and round) "
        f"| {single['reference']:.0f} ms | {single['server']:.0f} ms | {other['single']:.2f} |",
        f"| {c['clients']} clients x {c['per_client']} requests of 1 x {c['per_request']} documents (in-process: "
        f"the same requests one after the other) | {conc['reference']:.1f} pairs/s | {conc['server']:.1f} pairs/s "
        f"(p95 {p95:.0f} ms) | {other['concurrent']:.2f} |",
        "", "| Target | Measured | Threshold | Status |", "|---|---|---|---|"]
    for t in r["targets"]:
        if t["rounds"]:
            shown = f"{t['measured']:.3f}x" + (f" (rounds {', '.join(f'{v:.3f}' for v in t['rounds'])})"
                                               if len(t["rounds"]) > 1 else "")
            threshold = f"{t['threshold']:.1f}x"
        else:
            shown, threshold = f"{t['measured']:.1e}", f"{t['threshold']:.0e}"
        lines.append(f"| {t['target']} | {shown} | {t['op']} {threshold} | "
                     f"{'PASS' if t['pass'] else 'FAIL'}{' (noisy)' if t['noisy'] else ''} |")
    cpu = r.get("cpu") or {}
    if cpu:
        lines += ["", f"CPU during the rounds (average cores of {m['logical_cpus']}): server {cpu['server']:.2f}, "
                  f"benchmark process (reference and client threads) {cpu['bench']:.2f}, others {cpu['other']:.2f}."]
    if any(t["noisy"] for t in r["targets"]):
        lines += ["", f"**WARNING: other processes used > {NOISY} cores during the measurements behind the targets "
                  "marked (noisy): re-run on a quiet machine.**"]
    lines += ["", f"Score check: {r['check']['pairs']} pairs, results sorted by score: {r['check']['sorted_desc']}."]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    if args.long_context or args.dtypes:
        log("--rerank: no rerank scenario with --long-context or --dtypes; skipped")
        return 0
    for flag in ("model_dir", "server_models_dir", "skip_st"):
        if getattr(args, flag):
            log(f"--rerank: --{flag.replace('_', '-')} does not apply to the rerank scenario; ignored")
    from .cross_encoder_shape import ensure_cached

    shape = "bge-reranker" if args.bge_m3_shape else "minilm"
    layers = args.layers if args.bge_m3_shape else None
    cfg = dict(QUICK if args.quick else FULL, quick=args.quick, threads=args.threads)
    if args.bge_m3_shape:
        cfg.update({k: min(v, cfg[k]) for k, v in BGE.items()})
    folder = ensure_cached(shape, layers, log=log).resolve()
    result = run(args, folder, cfg)
    # Under --out (as the other modes' folder) so that `make bench ARGS="--out DIR"` keeps both reports.
    out = (args.out or Path("bench/results")) / ("rerank-bge-m3-shape" if args.bge_m3_shape else "rerank")
    write_results(out, markdown(result), result)
    return 0
