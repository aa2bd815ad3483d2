"""Targets and the markdown report of the long-context bench (see long_context.py)."""
from __future__ import annotations

import math
import statistics

from . import workload
from .report import NOISY

NAN = float("nan")
BGE_M3_LAYERS = 24


def _get(d: dict | None, *keys, default=NAN):
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def _ratio(a: float, b: float) -> float:
    try:
        return a / b
    except (TypeError, ZeroDivisionError):
        return NAN


def per_round(r: dict) -> dict[str, list[float]]:
    rounds = r.get("rounds") or []
    return {
        "single": [_ratio(_get(x, "server_single", "p50_ms"), _get(x, "st_single", "p50_ms")) for x in rounds],
        "bulk": [_ratio(_get(x, "server_bulk", "chunks_per_s"), _get(x, "st_bulk", "chunks_per_s")) for x in rounds],
        "all_outputs": [_ratio(_get(x, "encode_dense", "chunks_per_s"), _get(x, "encode_all", "chunks_per_s"))
                        for x in rounds if "encode_all" in x],
    }


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else NAN


def _noisy(*parts) -> bool:
    return any(_get(p, "cpu", "other", default=0) > NOISY for p in parts)


def targets(r: dict) -> list[dict]:
    srv, rounds = r["server"], r.get("rounds") or []
    ratios = {k: _median(v) for k, v in per_round(r).items()}
    alone = [x for x in (_get(srv, "long_alone_1", "long_s"), _get(srv, "long_alone_2", "long_s"))
             if not math.isnan(x)]
    alone_s = statistics.mean(alone) if alone else NAN
    long1 = srv.get("long_alone_1", {})
    no_st = r.get("st") is None
    rows = [
        ("query p95 while the long input runs / idle server's p95",
         _ratio(_get(srv, "long_sequential", "queries", "p95_ms"), _get(srv, "idle_single", "p95_ms")), "<=", 2.0,
         "x", [srv.get("long_sequential"), *(x["server_single"] for x in rounds)], False),
        (f"long input with a query every {r['config']['interval_s'] * 1e3:.0f} ms / alone",
         _ratio(_get(srv, "long_open_loop", "long_s"), alone_s), "<=", 1.15, "x",
         [srv.get("long_open_loop"), srv.get("long_alone_1"), srv.get("long_alone_2")], False),
        ("bulk (~512-token chunks) / sentence-transformers", ratios["bulk"], ">=", 1.0, "x",
         [p for x in rounds for p in (x.get("server_bulk"), x.get("st_bulk"))], no_st),
        ("single-query p50 / sentence-transformers", ratios["single"], "<=", 1.0, "x",
         [p for x in rounds for p in (x.get("server_single"), x.get("st_single"))], no_st),
        ("peak RSS during the long input - RSS after load",
         _get(long1, "peak_mb") - _get(srv, "rss_load_mb"), "<=", 600, "MB", [], False),
    ]
    if any("encode_all" in x for x in rounds):
        rows.append(("bulk cost of dense + sparse + ColBERT / dense only (`/api/encode`)", ratios["all_outputs"],
                     "<=", 1.10, "x", [p for x in rounds for p in (x.get("encode_dense"), x.get("encode_all"))],
                     False))
    out = []
    for name, val, op, thr, unit, parts, skipped in rows:
        ok = val >= thr if op == ">=" else val <= thr  # NaN compares False -> FAIL
        out.append({"target": name, "measured": val, "op": op, "threshold": thr, "unit": unit, "pass": bool(ok),
                    "noisy": _noisy(*parts), "skipped": skipped})
    return out


def _ms(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v / 1e3:.1f} s" if v >= 10_000 else f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms"


def _s(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.1f} s" if v >= 1 else f"{v * 1e3:.0f} ms"


def _mb(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0f} MB"


def _parts(d: dict) -> str:
    return f"{_get(d, 'rss_load_parts_mb', 'anon'):.0f} + {_get(d, 'rss_load_parts_mb', 'file'):.0f}"


def _other(*parts) -> str:
    vals = [_get(p, "cpu", "other") for p in parts if p]
    vals = [v for v in vals if not math.isnan(v)]
    return " / ".join(f"{v:.2f}" for v in vals)


def _median_round(rounds: list[dict], key: str, field: str, reverse: bool = False) -> dict:
    got = sorted((x[key] for x in rounds if key in x and field in x[key]), key=lambda m: m[field], reverse=reverse)
    return got[(len(got) - 1) // 2] if got else {}


def markdown(r: dict) -> str:
    m, cfg, mod, srv, st = r["machine"], r["config"], r["model"], r["server"], r.get("st") or {}
    flags = m.get("flags", {})
    rounds = r.get("rounds") or []
    wl = r.get("workload", {})
    layers = mod.get("num_hidden_layers")
    shape = (f"{mod.get('model_type')}, {layers} layers, hidden {mod.get('hidden_size')}, "
             f"{mod.get('num_attention_heads')} heads, FFN {mod.get('intermediate_size')}, "
             f"{mod.get('max_position_embeddings')} positions, vocabulary {mod.get('vocab_size')}, "
             f"weights {mod.get('weights_bytes', 0) / 1e9:.2f} GB")
    lines = [
        f"Machine: {m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical); "
        + ", ".join(f"{f}: {'yes' if flags.get(f) else 'no'}" for f in ("avx512_bf16", "amx_bf16", "avx512f"))
        + f"; torch {m['torch']} / transformers {m['transformers']} / "
        f"sentence-transformers {m['sentence_transformers']}, Python {m['python']}; {cfg['threads']} torch threads.",
        "",
        f"Model: `{mod['served_as']}` "
        f"({'generated BGE-M3 shape, random weights' if mod.get('bge_m3_shape') else mod['folder']}): {shape}.",
    ]
    if mod.get("bge_m3_shape") and layers and layers < BGE_M3_LAYERS:
        lines += ["", f"**FEWER LAYERS than BGE-M3 ({layers} of {BGE_M3_LAYERS}), same width: the forward costs "
                  f"about {layers}/{BGE_M3_LAYERS} of BGE-M3's, the embedding matrix (1 GB) is the same; ratios "
                  "are indicative.**"]
    if cfg["quick"]:
        lines += ["", f"**QUICK MODE: small counts, a {cfg['long_tokens']}-token long input; a smoke test, "
                  "NOT the targets' real measurement.**"]
    lines += [
        "",
        f"Workload: the query *\"{workload.QUERY}\"*; {cfg['chunks']} chunks of "
        f"{_get(wl, 'chunk_tokens', 'min', default=0)}-{_get(wl, 'chunk_tokens', 'max', default=0)} tokens "
        f"(mean {_get(wl, 'chunk_tokens', 'mean', default=0):.0f}); a long text of "
        f"{_get(wl, 'long_text_tokens', default=0)} tokens, {_get(wl, 'long_tokens_processed', default=0)} processed (context {_get(wl, 'context', default=0)}"
        + (f"; sentence-transformers: {wl['st_long_tokens_processed']}" if "st_long_tokens_processed" in wl else "")
        + f"). {cfg['rounds']} paired round(s) of {cfg['single_reps']} single queries and the chunks "
        f"(server: {cfg['per_request']} chunks/request, sequential; sentence-transformers: `encode(batch_size="
        f"{cfg['st_batch_size']})`).",
        "",
        "| Measurement | Server | sentence-transformers in-process | Others' CPU |",
        "|---|---|---|---|",
    ]
    s_single = _median_round(rounds, "server_single", "p50_ms")
    t_single = _median_round(rounds, "st_single", "p50_ms")
    s_bulk = _median_round(rounds, "server_bulk", "chunks_per_s")
    t_bulk = _median_round(rounds, "st_bulk", "chunks_per_s")
    load_st = st.get("load", {})
    a1, a2 = srv.get("long_alone_1", {}), srv.get("long_alone_2", {})
    ol, sq, stl = srv.get("long_open_loop", {}), srv.get("long_sequential", {}), st.get("long", {})
    tokens = _get(wl, "long_tokens_processed", default="?")
    mean_chunk = _get(wl, "chunk_tokens", "mean", default=0)

    def cps(d):
        v = _get(d, "chunks_per_s")
        return "n/a" if math.isnan(v) else f"{v:.2f} chunks/s ({v * mean_chunk:.0f} tokens/s)"

    rows = [
        ("Load time to healthy (server: process start -> `/ready` 200; sentence-transformers: "
         "`SentenceTransformer(folder)` construction, and process start -> loaded incl. imports)",
         _s(_get(srv, "load_s")),
         f"{_s(_get(load_st, 'construct_s'))} ({_s(_get(load_st, 'process_s'))})",
         _other({"cpu": srv.get("load_cpu")}, load_st)),
        ("RSS after load (anonymous + file pages) / peak during load",
         f"{_mb(_get(srv, 'rss_load_mb'))} ({_parts(srv)}) / {_mb(_get(srv, 'hwm_load_mb'))}",
         f"{_mb(_get(st, 'rss_load_mb'))} ({_parts(st)}) / {_mb(_get(st, 'hwm_load_mb'))}" if st else "skipped", ""),
        (f"Single query, p50 / p95 (median round of {len(rounds)}, {cfg['single_reps']} sequential each)",
         f"{_ms(_get(s_single, 'p50_ms'))} / {_ms(_get(s_single, 'p95_ms'))}",
         f"{_ms(_get(t_single, 'p50_ms'))} / {_ms(_get(t_single, 'p95_ms'))}" if st else "skipped",
         _other(s_single, t_single)),
        (f"Single query on the idle server, all rounds (n={_get(srv, 'idle_single', 'n', default=0)}): p50 / p95 / max",
         f"{_ms(_get(srv, 'idle_single', 'p50_ms'))} / {_ms(_get(srv, 'idle_single', 'p95_ms'))} / "
         f"{_ms(_get(srv, 'idle_single', 'max_ms'))}", "", ""),
        (f"Bulk, {cfg['chunks']} chunks of ~{cfg['chunk_tokens']} tokens (median round)", cps(s_bulk),
         cps(t_bulk) if st else "skipped", _other(s_bulk, t_bulk)),
        ("Bulk through `/api/encode` (median round): dense only / dense + sparse + ColBERT",
         f"{cps(_median_round(rounds, 'encode_dense', 'chunks_per_s'))} / "
         f"{cps(_median_round(rounds, 'encode_all', 'chunks_per_s'))}" if any("encode_all" in x for x in rounds)
         else "n/a (no BGE-M3 head files)", "", _other(_median_round(rounds, "encode_dense", "chunks_per_s"),
                                                         _median_round(rounds, "encode_all", "chunks_per_s"))),
        (f"One {tokens}-token input alone (server: twice, before and after the open-loop run)",
         f"{_s(_get(a1, 'long_s'))} / {_s(_get(a2, 'long_s'))}", _s(_get(stl, "long_s")) if st else "skipped",
         _other(a1, a2, stl)),
        (f"Peak RSS during the {tokens}-token input (increase over RSS after load; over RSS just before)",
         f"{_mb(_get(a1, 'peak_mb'))} (+{_get(a1, 'peak_mb') - _get(srv, 'rss_load_mb'):.0f}; "
         f"+{_get(a1, 'peak_mb') - _get(a1, 'rss_before_mb'):.0f} MB)",
         f"{_mb(_get(stl, 'peak_mb'))} (+{_get(stl, 'peak_mb') - _get(st, 'rss_load_mb'):.0f}; "
         f"+{_get(stl, 'peak_mb') - _get(stl, 'rss_before_mb'):.0f} MB)" if st else "skipped", ""),
        (f"Query latency while the {tokens}-token input runs, sequential queries sent during it "
         f"(n={_get(sq, 'queries', 'n', default=0)}): p50 / p95 / max; the long input took",
         f"{_ms(_get(sq, 'queries', 'p50_ms'))} / {_ms(_get(sq, 'queries', 'p95_ms'))} / "
         f"{_ms(_get(sq, 'queries', 'max_ms'))}; {_s(_get(sq, 'long_s'))}", "", _other(sq)),
        (f"The {tokens}-token input with a query every {cfg['interval_s'] * 1e3:.0f} ms (open loop, "
         f"{_get(ol, 'sent', default=0)} sent, up to {_get(ol, 'max_concurrent', default=0)} in flight): its time; "
         "the queries' p50 / p95 / max",
         f"{_s(_get(ol, 'long_s'))}; {_ms(_get(ol, 'queries', 'p50_ms'))} / {_ms(_get(ol, 'queries', 'p95_ms'))} / "
         f"{_ms(_get(ol, 'queries', 'max_ms'))}", "", _other(ol)),
        ("Longest query wait seen", _ms(max((x for x in (_get(sq, "queries", "max_ms"), _get(ol, "queries", "max_ms"))
                                             if not math.isnan(x)), default=NAN)), "", ""),
        ("RSS after warm-up / after all scenarios", f"{_mb(_get(srv, 'rss_warm_mb'))} / {_mb(_get(srv, 'rss_end_mb'))}",
         f"- / {_mb(_get(st, 'rss_end_mb'))}" if st else "skipped", ""),
    ]
    for label, a, b, other in rows:
        lines.append(f"| {label} | {a} | {b} | {other} |")
    errors = [f"{k}: {v['error']}" for k, v in {**srv, **{f'st {k}': v for k, v in st.items()}}.items()
              if isinstance(v, dict) and "error" in v]
    errors += [f"round {i + 1} {k}: {v['error']}" for i, x in enumerate(rounds) for k, v in x.items() if "error" in v]
    lines += ["", "| Target | Measured | Threshold | Status |", "|---|---|---|---|"]
    for t in r["targets"]:
        val = "n/a" if math.isnan(t["measured"]) else (f"{t['measured']:.3f}x" if t["unit"] == "x"
                                                       else f"{t['measured']:.0f} MB")
        thr = f"{t['threshold']}x" if t["unit"] == "x" else f"{t['threshold']} MB"
        status = "n/a (skipped)" if t["skipped"] else ("PASS" if t["pass"] else "FAIL")
        lines.append(f"| {t['target']} | {val} | {t['op']} {thr} | {status}{' (noisy)' if t['noisy'] else ''} |")
    pr = per_round(r)
    if len(rounds) > 1:
        lines += ["", "Single and bulk targets: median of the per-round ratios (" + "; ".join(
            f"{k} " + ", ".join(f"{v:.3f}" for v in vs) for k, vs in pr.items()) + ")."]
    qerr = sum(int(_get(srv, k, "query_errors", default=0)) for k in ("long_sequential", "long_open_loop"))
    if qerr:
        lines += ["", f"{qerr} queries failed during the long-input scenarios (not counted in the latencies)."]
    if errors:
        lines += ["", "Errors: " + "; ".join(errors) + "."]
    if r.get("cpu_cores"):
        c = r["cpu_cores"]
        lines += ["", f"CPU (average cores of {m['logical_cpus']}) during the measurements: other processes "
                  f"{c['other']:.2f}, server + sentence-transformers worker {c['server']:.2f}, benchmark client "
                  f"{c['bench']:.2f}. The last column of the first table: cores used by other processes during "
                  f"that measurement (server / sentence-transformers side)."]
        if any(t["noisy"] for t in r["targets"]):
            lines += ["", f"**WARNING: other processes used > {NOISY} cores during the measurements behind the "
                      "targets marked (noisy); re-run on a quiet machine.**"]
    if r.get("check"):
        lines += ["", f"Sanity: cosine(server, sentence-transformers) embedding of the query = "
                  f"{r['check']['cosine']:.6f}."]
    return "\n".join(lines) + "\n"


