"""``embedding-server embed`` throughput against the server's bulk throughput (``python -m bench.index_throughput``).

The benchmark workload (``workload.py``: sentences of 12-80 words) repeated to ``--rows`` rows in a CSV. Per round,
one after the other (never at once; the side going first alternating):
- *server bulk*: the rows sent as requests of 32 inputs, one after the other, to ``POST /api/embed`` (make bench's
  bulk scenario), inputs/s;
- *embed in-process*: ``embedding-server embed rows.csv`` (the engine in its own process, default settings);
- *embed --url*: ``embedding-server embed rows.csv --url <the server>``.
The command's rows/s is its own report (from the model being ready to the output in place). Targets (issue #19):
in-process >= 0.95x and --url >= 0.9x the server's bulk throughput, the median of the per-round ratios.
Writes bench/results/index/results.md and .json.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from . import load, report, workload
from .run import write_results
from .server import Server

TARGETS = {"in_process": 0.95, "url": 0.9}


def _embed(rows_csv: Path, out: Path, threads: int, url: str | None = None) -> float:
    cmd = [sys.executable, "-m", "embedding_server", "embed", str(rows_csv), "--out", str(out)]
    done = subprocess.run(cmd + (["--url", url] if url else []), capture_output=True, text=True, timeout=3600,
                          env={**__import__("os").environ, "EMBED_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(re.search(r"([0-9.]+) rows/s", done.stderr).group(1))


def _bulk(url: str, texts: list[str]) -> float:
    with load.client(url) as c:
        started = time.perf_counter()
        for i in range(0, len(texts), 32):
            status, body = c.post("/api/embed", orjson.dumps({"input": texts[i:i + 32]}))
            assert status == 200, body[:200]
        return len(texts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.index_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=report.machine()["physical_cores"])
    p.add_argument("--out", type=Path, default=Path("bench/results/index"))
    args = p.parse_args(argv)
    sentences = workload.sentences()
    texts = [sentences[i % len(sentences)] for i in range(args.rows)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-"))
    rows_csv = tmp / "rows.csv"
    with rows_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    rounds = []
    with Server(args.threads, model_dir=str(tmp / "models")) as server:
        _bulk(server.base_url, texts[:256])  # warm-up
        for n in range(args.rounds):
            sides = {"bulk": lambda: _bulk(server.base_url, texts),
                     "in_process": lambda: _embed(rows_csv, tmp / f"a{n}.npy", args.threads),
                     "url": lambda: _embed(rows_csv, tmp / f"b{n}.npy", args.threads, server.base_url)}
            order = list(sides) if n % 2 == 0 else list(reversed(sides))
            rounds.append({name: sides[name]() for name in order})
            print(f"round {n + 1}: {rounds[-1]}", file=sys.stderr)
    ratios = {k: [r[k] / r["bulk"] for r in rounds] for k in TARGETS}
    result = {"machine": report.machine(), "rows": args.rows, "rounds": rounds,
              "targets": {k: {"ratio": statistics.median(v), "rounds": v, "threshold": TARGETS[k],
                              "pass": statistics.median(v) >= TARGETS[k]} for k, v in ratios.items()}}
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['physical_cores']} cores; torch {m['torch']}; {args.rows} rows of the "
             f"benchmark workload, {args.threads} threads, all-MiniLM-L6-v2.", "",
             "| | rows/s (median) | / server bulk | target | status |", "|---|---|---|---|---|",
             f"| server bulk (/api/embed, 32 per request) | {statistics.median(r['bulk'] for r in rounds):.0f} | | | |"]
    for k, label in (("in_process", "embedding-server embed (in-process)"), ("url", "embedding-server embed --url")):
        t = result["targets"][k]
        lines.append(f"| {label} | {statistics.median(r[k] for r in rounds):.0f} | {t['ratio']:.3f}x (rounds "
                     f"{', '.join(f'{x:.3f}' for x in t['rounds'])}) | >= {t['threshold']} | "
                     f"{'PASS' if t['pass'] else 'FAIL'} |")
    write_results(args.out, "\n".join(lines) + "\n", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
