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

With ``--ray`` (issue #26; needs the ray extra), per round, one after the other (the side going first alternating):
``embedding-server embed rows.csv`` (in-process, EMBED_NUM_THREADS=--threads) and ``embedding-server embed rows.csv
--ray`` (a local Ray instance of this machine's CPUs, actors of --cpus-per-actor CPUs each), each its own rows/s from
the (first) model ready to the output in place, and its wall-clock time from the command's start (Ray's start and the
models' loads included). Target: the Ray path >= 0.9x the in-process one (median of the per-round ratios). Writes
bench/results/index-ray/results.md and .json.
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
RAY_TARGET = 0.9


def _embed(rows_csv: Path, out: Path, threads: int, url: str | None = None) -> float:
    cmd = [sys.executable, "-m", "embedding_server", "embed", str(rows_csv), "--out", str(out)]
    done = subprocess.run(cmd + (["--url", url] if url else []), capture_output=True, text=True, timeout=3600,
                          env={**__import__("os").environ, "EMBED_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(re.search(r"([0-9.]+) rows/s", done.stderr).group(1))


def _timed_embed(args: list[str], threads: int, pattern: str) -> tuple[float, float]:
    """(the command's rows/s, its wall-clock seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "embedding_server", "embed", *args], capture_output=True, text=True,
                          timeout=3600, env={**__import__("os").environ, "EMBED_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return float(re.search(pattern, done.stderr).group(1)), seconds


def ray_main(args: argparse.Namespace, rows_csv: Path, tmp: Path) -> int:
    """The Ray path against the single-machine command (see the module's docstring)."""
    import os
    import shutil

    models = tmp / "models"  # empty: the embedded all-MiniLM-L6-v2
    models.mkdir(exist_ok=True)
    os.environ["EMBED_MODELS_DIR"] = str(models)
    rounds = []
    for n in range(args.rounds):
        ray_out = tmp / f"ray{n}"
        shutil.rmtree(ray_out, ignore_errors=True)
        sides = {"in_process": lambda: _timed_embed([str(rows_csv), "--out", str(tmp / f"a{n}.npy")], args.threads,
                                                    r"([0-9.]+) rows/s"),
                 "ray": lambda: _timed_embed([str(rows_csv), "--out", str(ray_out), "--ray", "--cpus-per-actor",
                                              str(args.cpus_per_actor)], args.threads,
                                             r"([0-9.]+) rows/s from the first model ready")}
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        measured = {name: sides[name]() for name in order}
        rounds.append({k: v[0] for k, v in measured.items()} | {f"{k}_wall_s": v[1] for k, v in measured.items()})
        print(f"round {n + 1}: {rounds[-1]}", file=sys.stderr)
    ratios = [r["ray"] / r["in_process"] for r in rounds]
    walls = [r["in_process_wall_s"] / r["ray_wall_s"] for r in rounds]
    ratio = statistics.median(ratios)
    result = {"machine": report.machine(), "rows": args.rows, "cpus_per_actor": args.cpus_per_actor,
              "rounds": rounds, "target": {"ratio": ratio, "rounds": ratios, "threshold": RAY_TARGET,
                                           "pass": ratio >= RAY_TARGET, "wall_clock_ratios": walls}}
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['physical_cores']} cores; torch {m['torch']}; {args.rows} rows of the "
             f"benchmark workload, all-MiniLM-L6-v2; in-process {args.threads} threads; Ray: a local instance, "
             f"actors of {args.cpus_per_actor:g} CPU(s).", "",
             "| | rows/s (median) | wall clock, s (median) | Ray / in-process | target | status |",
             "|---|---|---|---|---|---|",
             f"| embedding-server embed (in-process) | {statistics.median(r['in_process'] for r in rounds):.0f} | "
             f"{statistics.median(r['in_process_wall_s'] for r in rounds):.1f} | | | |",
             f"| embedding-server embed --ray | {statistics.median(r['ray'] for r in rounds):.0f} | "
             f"{statistics.median(r['ray_wall_s'] for r in rounds):.1f} | {ratio:.3f}x (rounds "
             f"{', '.join(f'{x:.3f}' for x in ratios)}; wall clock {statistics.median(walls):.3f}x) | "
             f">= {RAY_TARGET} | {'PASS' if ratio >= RAY_TARGET else 'FAIL'} |"]
    write_results(args.out if args.out != Path("bench/results/index") else Path("bench/results/index-ray"),
                  "\n".join(lines) + "\n", result)
    return 0


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
    p.add_argument("--ray", action="store_true", help="the Ray path against the in-process command (issue #26)")
    p.add_argument("--cpus-per-actor", dest="cpus_per_actor", type=float, default=1.0, help="with --ray")
    args = p.parse_args(argv)
    sentences = workload.sentences()
    texts = [sentences[i % len(sentences)] for i in range(args.rows)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-"))
    rows_csv = tmp / "rows.csv"
    with rows_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    if args.ray:
        return ray_main(args, rows_csv, tmp)
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
