"""Where a small request's CPU goes outside the forward: py-spy samples of the server's event-loop thread while
clients send single-query requests, grouped into stages.

    python -m bench.profile_requests                       # 8 clients, /api/embed, 20 s
    python -m bench.profile_requests --clients 1 --path /v1/embeddings --seconds 10
    python -m bench.profile_requests --out /tmp/prof       # keeps py-spy's raw stacks there
    python -m bench.profile_requests --no-spy              # only the per-thread CPU and the batch sizes

Needs py-spy (the bench extra; it attaches to the server, a child process: root or ptrace rights). Samples
include native frames, so that the loop's idle waits (epoll) are left out and its socket syscalls counted. The
table gives each stage's share of the event loop's busy samples and, from the thread's CPU time over the same
window, its milliseconds of CPU per request. The per-thread CPU of the whole server (event loop, model worker,
torch's other threads) and the mean batch size are printed too.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from . import load, reference, report, run, workload
from .cpumeter import stat_cpu_s
from .server import Server

# The first rule matching a frame, walking from the leaf to the root, names the sample's stage.
IDLE = re.compile(r"^(epoll_pwait|epoll_wait|uv__io_poll) ")  # the loop waiting for work (with --native)
STAGES: list[tuple[str, str]] = [
    ("socket reads and writes (kernel)", r"^(write|writev|read|recv|send|sendmsg|recvmsg) |UVStream_write|uv__read"),
    ("tokenize", r"tokenizers|tokenization|transformers/tokenization|token_ids|tokenize_inline"),
    ("access log + metrics", r"prometheus_client|/logging/|observability\.py"),
    ("request body: read + decode + validate", r"go_json\.py|_inputs|_encoding|keep_alive_seconds|"
                                                r"openai\.py.*\(_|request_body|\.body \(|json\.py|"
                                                r"pydantic|_validate|decode \("),
    ("response: build + encode", r"responses\.py|json_response|float32_base64|render|serialize_response"),
    ("engine: hold, queue, wait", r"engine/|until_disconnect|common\.py"),
    ("fast path: header checks, dispatch", r"api/fast\.py"),
    ("middleware (ours, Starlette's, uvicorn's proxy headers)", r"middleware\.py|cors\.py|/middleware/|exceptions\.py"),
    ("routing + FastAPI handler", r"starlette/routing|fastapi/routing|fastapi/dependencies|solve_dependencies|"
                                  r"starlette/requests|concurrency"),
    ("HTTP server (uvicorn, httptools)", r"uvicorn|httptools|h11"),
    ("asyncio / uvloop scheduling", r"asyncio|uvloop|Loop__|Handle__|^uv_|^uv__|task_step|TaskStep|_asyncio"),
]


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (name, CPU seconds)} of every thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[int(task.name)] = (name, stat_cpu_s(task / "stat"))
        except (OSError, ValueError):
            pass
    return out


def stage_of(frames: list[str]) -> str:
    """The stage of one stack (``frames`` leaf first)."""
    for frame in frames:
        for stage, pattern in STAGES:
            if re.search(pattern, frame):
                return stage
    return "other"


def parse_raw(path: Path, tid: int) -> Counter:
    """Samples per stage of thread ``tid`` in py-spy's raw (collapsed) output recorded with --threads."""
    stages: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or f"{tid:#x}" not in frames[0] and f"({tid})" not in frames[0] and str(tid) not in frames[0]:
            continue
        leaf_first = frames[1:][::-1]
        if leaf_first and IDLE.match(leaf_first[0]):
            continue
        stages[stage_of(leaf_first)] += int(count)
    return stages


def drive(url: str, path: str, clients: int, stop: threading.Event, latencies: list[float],
          model: str = load.MODEL) -> list[threading.Thread]:
    """``clients`` threads sending one-query requests until ``stop``; each answer's latency (ms) is appended."""
    body = orjson.dumps({"model": model, "input": [workload.QUERY]})

    def run() -> None:
        with load.client(url) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                status, _ = c.post(path, body)
                assert status == 200, status
                latencies.append((time.perf_counter() - t0) * 1e3)  # list.append is atomic

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def window(pid: int, latencies: list[float], seconds: float, during=None) -> dict:
    """Requests, their latencies and every thread's CPU over ``seconds`` (or while ``during()`` runs)."""
    before, n0, t0 = thread_cpu(pid), len(latencies), time.perf_counter()
    if during is None:
        time.sleep(seconds)
    else:
        during()
    after, lat, elapsed = thread_cpu(pid), latencies[n0:], time.perf_counter() - t0
    cpu = {tid: (name, c - before.get(tid, ("", 0.0))[1]) for tid, (name, c) in after.items()}
    return {"requests": len(lat), "elapsed": elapsed, "p50_ms": reference.percentile(lat, 50), "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--path", default="/api/embed")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--python-only", action="store_true", help="Python frames only (py-spy --nonblocking: the "
                   "server is not paused to sample, but the loop's idle waits cannot be told from its C work)")
    p.add_argument("--bge-m3-shape", action="store_true", help="serve the generated BGE-M3-shaped folder "
                   "(bench/bge_m3_shape.py, built once into its cache) instead of the embedded MiniLM")
    p.add_argument("--reference", action="store_true", help="first the model layer in-process: the query alone "
                   "(p50) and a batch of as many copies as clients (throughput)")
    p.add_argument("--no-spy", action="store_true", help="only the per-thread CPU and the batch sizes")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = args.out or Path(tempfile.mkdtemp(prefix="profile-"))
    out.mkdir(parents=True, exist_ok=True)
    model, models_dir, folder = load.MODEL, None, None
    if args.bge_m3_shape:
        from . import bge_m3_shape

        folder = bge_m3_shape.build(bge_m3_shape.cache_dir())
        model, models_dir = folder.name, str(folder.parent)
    print(f"Machine: {report.machine()['cpu']}, {args.threads} torch threads; model {model}; {args.clients} "
          f"clients sending one query each to {args.path}.\n")
    if args.reference:
        layer = reference.ModelLayer(folder or run.default_model_dir(), args.threads)
        one = layer.single(workload.QUERY, 50)
        batch = layer.batch(workload.QUERY, args.clients, 30)
        print(f"Model layer in-process: the query alone p50 {one['p50_ms']:.2f} ms; a batch of {args.clients} "
              f"p50 {batch['p50_ms']:.2f} ms = {batch['sentences_per_s']:.1f} queries/s\n")
        del layer
    with Server(args.threads, model_dir=models_dir, extra_env={"EMBED_MODEL": model}) as server:
        pid = server.proc.pid
        with load.client(server.base_url) as c:
            for _ in range(5):
                load.embed(c, [workload.QUERY] * 8, model)
        stop, latencies = threading.Event(), []
        threads = drive(server.base_url, args.path, args.clients, stop, latencies, model)
        time.sleep(1.0)  # the clients reach a steady state
        plain = window(pid, latencies, args.seconds)  # the figures, without a profiler attached
        raw = out / "py-spy.txt"
        if not args.no_spy:  # then the stage shares, from samples (py-spy pauses the server: more CPU)
            window(pid, latencies, 0, lambda: subprocess.run(
                [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration", str(int(args.seconds)),
                 "--format", "raw", "--threads", *(["--nonblocking"] if args.python_only else ["--native"]),
                 "--output", str(raw)], check=True, capture_output=True))
        stop.set()
        for t in threads:
            t.join()
        with load.client(server.base_url) as c:
            metrics = c.get("/metrics")[1].decode()
    n = plain["requests"]
    print(f"Server: {n} requests in {plain['elapsed']:.1f} s = {n / plain['elapsed']:.1f}/s, latency p50 "
          f"{plain['p50_ms']:.2f} ms")
    count, total = (float(next(line.split()[-1] for line in metrics.splitlines()
                               if line.startswith(f"embed_batch_size_{k}{{"))) for k in ("count", "sum"))
    print(f"Batches since start: {count:.0f}, mean size {total / count:.2f} inputs\n")
    print("CPU per request by thread (ms):\n\n| Thread | ms |\n|---|---|")
    for tid, (name, spent) in sorted(plain["cpu"].items(), key=lambda kv: -kv[1][1]):
        if spent > 0.001:
            print(f"| {'event loop' if tid == pid else name} | {spent * 1e3 / n:.3f} |")
    print(f"| whole server | {sum(c for _, c in plain['cpu'].values()) * 1e3 / n:.3f} |")
    loop_ms = plain["cpu"][pid][1] * 1e3 / n
    if args.no_spy:
        return 0
    stages = parse_raw(raw, pid)
    busy = sum(stages.values()) or 1
    print(f"\nEvent loop: {loop_ms:.3f} ms CPU per request, by stage (shares of {busy} busy samples):\n")
    print("| Stage | share | ms per request |\n|---|---|---|")
    for stage, k in stages.most_common():
        print(f"| {stage} | {k / busy:.1%} | {loop_ms * k / busy:.3f} |")
    print(f"\nraw stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
