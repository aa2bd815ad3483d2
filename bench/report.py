"""Markdown table, target verdicts and PNG chart from the results dict built by bench.run."""
from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path


def machine() -> dict:
    """CPU model, core counts and library versions of this machine."""
    model, cores = "unknown CPU", set()
    phys = core = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = (x.strip() for x in line.partition(":"))
            if key == "model name" and model == "unknown CPU":
                model = val
            elif key == "physical id":
                phys = val
            elif key == "core id":
                core = val
            elif not key and core is not None:
                cores.add((phys, core))
                phys = core = None
        if core is not None:
            cores.add((phys, core))
    except OSError:
        pass
    import torch
    import transformers

    try:
        import sentence_transformers
        st_version = sentence_transformers.__version__
    except ImportError:
        st_version = "n/a"
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "physical_cores": len(cores) or logical, "logical_cpus": logical,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "sentence_transformers": st_version}


NOISY = 0.25  # cores used by other processes above which a measurement is flagged


def round_ratios(r: dict) -> dict[str, list[float]]:
    """Per paired round: bulk, concurrency and single-latency ratios (see bench.run)."""
    rounds = r.get("rounds") or [{"raw_bulk": r["reference"]["raw"]["bulk"], "bulk_1": r["server"]["bulk_1"],
                                  "raw_single": r["reference"]["raw"]["single"], "single": r["server"]["single"],
                                  "concurrent": r["server"]["concurrent"]}]
    out = {
        "bulk": [x["bulk_1"]["sentences_per_s"] / x["raw_bulk"]["sentences_per_s"] for x in rounds],
        "concurrency": [x["concurrent"]["sentences_per_s"] / x["single"]["sentences_per_s"] for x in rounds],
        "single": [x["single"]["p50_ms"] / x["raw_single"]["p50_ms"] for x in rounds],
    }
    if all("layer_batch8" in x for x in rounds):  # the small-request targets (issue 25)
        out["8 clients / layer batch of 8"] = [x["concurrent"]["sentences_per_s"]
                                              / x["layer_batch8"]["sentences_per_s"] for x in rounds]
        out["single p50 - layer single p50 (ms)"] = [x["single"]["p50_ms"] - x["layer_single"]["p50_ms"]
                                                     for x in rounds]
        out["event-loop CPU per query, 8 clients (ms)"] = [x["concurrent"]["loop_cpu_ms"] for x in rounds]
    return out


def _noisy_round(r: dict, keys: tuple[str, ...]) -> list[dict]:
    return [x[k] for x in (r.get("rounds") or []) for k in keys]


def targets(r: dict) -> list[dict]:
    """The issue's targets: measured value, threshold, pass, and whether its inputs were noisy.

    Bulk, concurrency and single latency are the median of the per-round ratios.
    """
    ref, srv = r["reference"], r["server"]
    raw = ref["raw"]
    ratios = {k: statistics.median(v) for k, v in round_ratios(r).items()}
    rows = [
        ("bulk 1 client / raw forward", ratios["bulk"], ">=", 0.95, "x",
         [srv["bulk_1"], raw["bulk"], *_noisy_round(r, ("raw_bulk", "bulk_1"))]),
        ("8 clients / sequential single (throughput)", ratios["concurrency"], ">=", 2.5, "x",
         [srv["concurrent"], srv["single"], *_noisy_round(r, ("concurrent", "single"))]),
        ("single p50 / in-process single p50", ratios["single"], "<=", 1.15, "x",
         [srv["single"], raw["single"], *_noisy_round(r, ("raw_single", "single"))]),
        ("fairness p95 / one full batch", srv["fairness"]["p95_ms"]
         / raw["bulk"]["batch_ms_median"], "<=", 2.0, "x", [srv["fairness"], raw["bulk"]]),
        *_small_request_rows(r, ratios),
        ("server RSS after warm-up", srv["rss_warm_mb"], "<=", 700, "MB", []),
        (f"peak RSS increase, {srv['fairness']['inputs']}-input request",
         srv["fairness"]["peak_increase_mb"], "<=", 300, "MB", []),
    ]
    out = []
    for name, val, op, thr, unit, parts in rows:
        ok = val >= thr if op == ">=" else val <= thr  # NaN compares False -> FAIL
        noisy = any(p.get("cpu", {}).get("other", 0) > NOISY for p in parts)
        out.append({"target": name, "measured": val, "op": op, "threshold": thr,
                    "unit": unit, "pass": bool(ok), "noisy": noisy})
    return out


def _small_request_rows(r: dict, ratios: dict) -> list[tuple]:
    """Issue 25's targets: small requests at the speed of the model layer's own forward."""
    if "8 clients / layer batch of 8" not in ratios:
        return []
    return [
        ("8 single-query clients / model layer's batch of 8 in-process (throughput)",
         ratios["8 clients / layer batch of 8"], ">=", 0.85, "x", _noisy_round(r, ("concurrent", "layer_batch8"))),
        ("1 client: single p50 - model layer's single p50", ratios["single p50 - layer single p50 (ms)"], "<=",
         1.0, "ms", _noisy_round(r, ("single", "layer_single"))),
        ("server event-loop CPU per query, 8 clients", ratios["event-loop CPU per query, 8 clients (ms)"], "<=",
         0.25, "ms", _noisy_round(r, ("concurrent",))),
    ]


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.2f} ms"
    return f"{v:.3f}x" if unit == "x" else f"{v:.0f} {unit}"  # 3 decimals: a ratio can sit right at its threshold


def _sps(v: float | None) -> str:
    return "skipped" if v is None else f"{v:.1f} sentences/s"


def _engine_rows(engine: dict | None) -> list[tuple[str, str, dict]]:
    if not engine:
        return []
    forward = engine["forward"]
    rows = [
        (f"Diagnostic: this service's model layer in-process ({forward}), batches of 32 in request order",
         f"{engine['bulk']['sentences_per_s']:.1f} sentences/s", engine["bulk"]),
        ("Diagnostic: this service's model layer in-process, one sentence (p50 / p95)",
         f"{engine['single']['p50_ms']:.1f} / {engine['single']['p95_ms']:.1f} ms", engine["single"]),
    ]
    if "layer_batch8" in engine:
        rows += [
            ("Reference: the model layer in-process, the query alone, paired with the server's single latency "
             "(p50 / p95)", f"{engine['layer_single']['p50_ms']:.2f} / {engine['layer_single']['p95_ms']:.2f} ms",
             engine["layer_single"]),
            ("Reference: the model layer in-process, a batch of 8 copies of the query (p50; throughput)",
             f"{engine['layer_batch8']['p50_ms']:.1f} ms; {engine['layer_batch8']['sentences_per_s']:.1f} "
             "sentences/s", engine["layer_batch8"]),
        ]
    return rows


def diagnostics(r: dict) -> list[str]:
    """Ratios that separate the server's own overhead from the forward's speed (not targets)."""
    engine, srv = r["reference"].get("engine"), r["server"]
    if not engine:
        return []
    return [
        f"server bulk 1 client / same model layer in-process: "
        f"{srv['bulk_1']['sentences_per_s'] / engine['bulk']['sentences_per_s']:.2f}x",
        f"server single p50 / same model layer in-process: "
        f"{srv['single']['p50_ms'] / engine['single']['p50_ms']:.2f}x "
        f"({srv['single']['p50_ms'] - engine['single']['p50_ms']:+.1f} ms)",
    ]


def _loop_cpu(m: dict) -> str:
    return f"; event loop {m['loop_cpu_ms']:.2f} ms CPU/request" if "loop_cpu_ms" in m else ""


def markdown(r: dict) -> str:
    m, ref, srv, cfg = r["machine"], r["reference"], r["server"], r["config"]
    raw, fair = ref["raw"], srv["fairness"]
    n = cfg["n_sentences"]
    lines = [
        f"Machine: {m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical), "
        f"torch {m['torch']} / transformers {m['transformers']} / sentence-transformers "
        f"{m['sentence_transformers']}, Python {m['python']}; {cfg['threads']} torch threads; "
        f"model all-MiniLM-L6-v2{' — QUICK MODE (small counts, indicative only)' if cfg['quick'] else ''}.",
        "",
        "| Measurement | Result | Others' CPU |",
        "|---|---|---|",
    ]
    rows = [
        (f"Reference: raw transformers forward, length-sorted batches of 32, in-process ({n} sentences)",
         f"{raw['bulk']['sentences_per_s']:.1f} sentences/s", raw["bulk"]),
        ("Diagnostic: the same, batches of 32 in request order (no global length sort)",
         f"{raw['bulk_unsorted']['sentences_per_s']:.1f} sentences/s", raw["bulk_unsorted"]),
        ("Reference: sentence-transformers `encode(batch_size=32)`",
         _sps(ref["st"]["sentences_per_s"]), ref["st"]),
        ("Reference: one sentence in-process, tokenise+forward+pool (p50 / p95)",
         f"{raw['single']['p50_ms']:.1f} / {raw['single']['p95_ms']:.1f} ms", raw["single"]),
        *_engine_rows(ref.get("engine")),
        ("Reference: one full batch of 32 (median / max over the sorted batches)",
         f"{raw['bulk']['batch_ms_median']:.0f} / {raw['bulk']['batch_ms_max']:.0f} ms", raw["bulk"]),
        ("Bulk, 32 inputs/request, 1 client", f"{srv['bulk_1']['sentences_per_s']:.1f} sentences/s",
         srv["bulk_1"]),
        ("Bulk, 32 inputs/request, 4 concurrent clients",
         f"{srv['bulk_4']['sentences_per_s']:.1f} sentences/s", srv["bulk_4"]),
        (f"Single latency, {srv['single']['n']} sequential 1-sentence requests (p50 / p95)",
         f"{srv['single']['p50_ms']:.1f} / {srv['single']['p95_ms']:.1f} ms "
         f"({srv['single']['sentences_per_s']:.1f} req/s){_loop_cpu(srv['single'])}", srv["single"]),
        (f"Diagnostic: HTTP round trip of `GET {srv['http_floor']['path']}` (p50; client + HTTP stack)",
         f"{srv['http_floor']['p50_ms']:.2f} ms", {}),
        (f"Concurrency, {srv['concurrent']['clients']} clients x {srv['concurrent']['per_client']} "
         "1-sentence requests", f"{srv['concurrent']['sentences_per_s']:.1f} sentences/s, "
         f"p95 {srv['concurrent']['p95_ms']:.1f} ms{_loop_cpu(srv['concurrent'])}", srv["concurrent"]),
        (f"Fairness: 1-sentence p95 during a {fair['inputs']}-input request (n={fair['n']}, "
         f"max {fair['max_ms']:.0f} ms, bulk took {fair['bulk_s']:.1f} s)",
         f"{fair['p95_ms']:.1f} ms", fair),
        ("Server RSS after warm-up / after all scenarios / peak since start",
         f"{srv['rss_warm_mb']:.0f} / {srv['rss_end_mb']:.0f} / {srv['rss_peak_mb']:.0f} MB", {}),
        (f"{fair['inputs']}-input request: RSS just before -> peak during (increase)",
         f"{fair['rss_before_mb']:.0f} -> {fair['peak_mb']:.0f} MB "
         f"(+{fair['peak_increase_mb']:.0f} MB)", {}),
    ]
    for label, value, part in rows:
        other = part.get("cpu", {}).get("other")
        lines.append(f"| {label} | {value} | {'' if other is None else f'{other:.2f}'} |")
    lines += [
        "",
        "| Target | Measured | Threshold | Status |",
        "|---|---|---|---|",
    ]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {_fmt(t['measured'], t['unit'])} | {t['op']} "
                     f"{_fmt(t['threshold'], t['unit'])} | {'PASS' if t['pass'] else 'FAIL'}{' (noisy)' if t['noisy'] else ''} |")
    per_round = round_ratios(r)
    if len(per_round["bulk"]) > 1:
        lines += ["", f"Bulk, concurrency and single latency: median of {len(per_round['bulk'])} paired rounds "
                  "(reference and server scenario back to back; for bulk, interleaved batch by batch); the tables show "
                  "the median round. Per-round "
                  "ratios: " + "; ".join(f"{name} " + ", ".join(f"{v:.3f}" for v in values)
                                         for name, values in per_round.items()) + "."]
    if diagnostics(r):
        lines += ["", "Server overhead (diagnostic, not targets): " + "; ".join(diagnostics(r)) + "."]
    if r.get("cpu_cores"):
        o = r["cpu_cores"]
        s = o["server"]
        lines += ["", f"CPU (average cores of {m['logical_cpus']}): other processes used "
                  f"{o['references']['other']:.2f} during the references and {s['other']:.2f} "
                  f"during the server scenarios (near 0 = clean ratios); during the scenarios "
                  f"the server used {s['server']:.2f} and the benchmark process (client threads, and the "
                  f"in-process references of the paired rounds) {s['bench']:.2f}. ""The last column of the first table is the same figure for that measurement."]
        if any(t["noisy"] for t in r["targets"]):
            lines += ["", f"**WARNING: other processes used > {NOISY} cores during the measurements "
                      "behind the targets marked (noisy); torch's threads slow down sharply when "
                      "the cores are oversubscribed, so those ratios are unreliable. Re-run on a "
                      "quiet machine.**"]
    if r.get("check"):
        lines += ["", f"Sanity: cosine(server, in-process) embedding of the query = {r['check']['cosine']:.6f}."]
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    """Two panels: throughputs (sentences/s) and latencies (ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, srv = r["reference"], r["server"]
    thr = {
        "raw forward (in-process)": ref["raw"]["bulk"]["sentences_per_s"],
        "raw forward, request order": ref["raw"]["bulk_unsorted"]["sentences_per_s"],
        "sentence-transformers": ref["st"]["sentences_per_s"],
        "model layer in-process, request order": (ref.get("engine") or {}).get("bulk", {}).get("sentences_per_s"),
        "server bulk, 1 client": srv["bulk_1"]["sentences_per_s"],
        "server bulk, 4 clients": srv["bulk_4"]["sentences_per_s"],
        "server 8 clients x 1 sentence": srv["concurrent"]["sentences_per_s"],
        "server sequential 1 sentence": srv["single"]["sentences_per_s"],
    }
    lat = {
        "in-process single p50": ref["raw"]["single"]["p50_ms"],
        "server single p50": srv["single"]["p50_ms"],
        "server single p95": srv["single"]["p95_ms"],
        "8 clients p95": srv["concurrent"]["p95_ms"],
        "one full batch (32)": ref["raw"]["bulk"]["batch_ms_median"],
        "fairness p95": srv["fairness"]["p95_ms"],
    }
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, data, title, unit, colors in (
        (a, thr, "Throughput", "sentences/s", ["#888", "#999", "#aaa", "#bbb"] + ["#1f77b4"] * 4),
        (b, lat, "Latency", "ms", ["#888"] + ["#d62728"] * 3 + ["#888", "#d62728"]),
    ):
        names = [k for k in data if data[k] is not None][::-1]
        vals = [data[k] for k in names]
        colors = [c for k, c in zip(data, colors) if data[k] is not None][::-1]
        bars = ax.barh(names, vals, color=colors)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], padding=3, fontsize=8)
        ax.set_title(f"{title} ({unit}{', log scale' if ax is b else ''})")
        if ax is b:
            ax.set_xscale("log")
            ax.set_xlim(min(vals) / 1.5, max(vals) * 3)
        else:
            ax.set_xlim(0, max(vals) * 1.2)
    m = r["machine"]
    fig.suptitle(f"embedding_server, all-MiniLM-L6-v2 — {m['cpu']}, {r['config']['threads']} "
                 f"threads{' (quick)' if r['config']['quick'] else ''}  (grey: in-process reference)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
