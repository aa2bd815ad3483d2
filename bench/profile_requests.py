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

from . import load, workload
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
    ("middleware", r"middleware\.py|cors\.py|/middleware/|exceptions\.py"),
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


def drive(url: str, path: str, clients: int, stop: threading.Event, done: list[int]) -> list[threading.Thread]:
    """``clients`` threads sending one-query requests until ``stop``; ``done[0]`` counts the answers."""
    body = orjson.dumps({"model": load.MODEL, "input": [workload.QUERY]})
    lock = threading.Lock()

    def run() -> None:
        with load.client(url) as c:
            while not stop.is_set():
                status, _ = c.post(path, body)
                assert status == 200, status
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


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
    p.add_argument("--no-spy", action="store_true", help="only the per-thread CPU (no sampling profiler running)")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = args.out or Path(tempfile.mkdtemp(prefix="profile-"))
    out.mkdir(parents=True, exist_ok=True)
    with Server(args.threads) as server:
        pid = server.proc.pid
        load.warmup(server.base_url, workload.sentences()[:128], workload.QUERY)
        stop, done = threading.Event(), [0]
        threads = drive(server.base_url, args.path, args.clients, stop, done)
        time.sleep(1.0)  # the clients reach a steady state
        before, n0, t0 = thread_cpu(pid), done[0], time.perf_counter()
        raw = out / "py-spy.txt"
        if args.no_spy:
            time.sleep(args.seconds)
        else:
            subprocess.run([spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration",
                            str(int(args.seconds)), "--format", "raw", "--threads", *(["--nonblocking"] if args.python_only else ["--native"]), "--output",
                            str(raw)], check=True, capture_output=True)
        after, n1, elapsed = thread_cpu(pid), done[0], time.perf_counter() - t0
        stop.set()
        for t in threads:
            t.join()
        with load.client(server.base_url) as c:
            metrics = c.get("/metrics")[1].decode()
    requests = n1 - n0
    print(f"{args.clients} clients, {args.path}: {requests} requests in {elapsed:.1f} s = {requests / elapsed:.0f}/s")
    count, total = (float(next(line.split()[-1] for line in metrics.splitlines()
                               if line.startswith(f"embed_batch_size_{k}{{"))) for k in ("count", "sum"))
    print(f"batches since start: {count:.0f}, mean size {total / count:.2f} inputs")
    print("\nCPU per request by thread (ms):")
    for tid, (name, cpu) in sorted(after.items(), key=lambda kv: -(kv[1][1] - before.get(kv[0], ("", 0))[1])):
        spent = cpu - before.get(tid, ("", 0.0))[1]
        if spent > 0.001:
            label = "event loop" if tid == pid else name
            print(f"  {label:<24} {spent * 1e3 / requests:7.3f}")
    loop_ms = (after[pid][1] - before[pid][1]) * 1e3 / requests
    print(f"  {'whole server':<24} {sum(c for _, c in after.values()) * 1e3 / requests - sum(c for _, c in before.values()) * 1e3 / requests:7.3f}")
    if args.no_spy:
        return 0
    stages = parse_raw(raw, pid)
    total = sum(stages.values()) or 1
    print(f"\nEvent loop: {loop_ms:.3f} ms CPU per request, by stage ({total} samples):")
    print("| Stage | share | ms per request |\n|---|---|---|")
    for stage, n in stages.most_common():
        print(f"| {stage} | {n / total:.1%} | {loop_ms * n / total:.3f} |")
    print(f"\nraw stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
