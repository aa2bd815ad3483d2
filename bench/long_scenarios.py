"""Long-context bench scenarios against a running server: single queries, bulk chunks, and one long input
alone, with sequential queries, or with an open-loop query every 200 ms (see long_context.py)."""
from __future__ import annotations

import queue
import threading
import time

import orjson

from . import load
from .reference import percentile
from .run import log
from .server import Server

NAN = float("nan")


def _embed_ms(c: load.Client, texts: list[str], model: str) -> float:
    t0 = time.perf_counter()
    load.embed(c, texts, model=model)
    return (time.perf_counter() - t0) * 1e3


def server_single(url: str, model: str, query: str, n: int) -> dict:
    with load.client(url) as c:
        ms = [_embed_ms(c, [query], model) for _ in range(n)]
    return {"n": n, "ms": ms, "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}


def server_bulk(url: str, model: str, chunks: list[str], per_request: int) -> dict:
    with load.client(url) as c:
        t0 = time.perf_counter()
        for i in range(0, len(chunks), per_request):
            load.embed(c, chunks[i : i + per_request], model=model)
        s = time.perf_counter() - t0
    return {"chunks": len(chunks), "s": s, "chunks_per_s": len(chunks) / s}


def server_bulk_outputs(url: str, model: str, chunks: list[str], per_request: int, outputs: list[str]) -> dict:
    """Like ``server_bulk`` through ``POST /api/encode`` asking for ``outputs`` (BGE-M3's dense/sparse/colbert)."""
    with load.client(url) as c:
        t0 = time.perf_counter()
        for i in range(0, len(chunks), per_request):
            body = orjson.dumps({"model": model, "input": chunks[i : i + per_request], "outputs": outputs})
            status, answer = c.post("/api/encode", body)
            if status != 200:
                raise RuntimeError(f"/api/encode -> {status}: {answer[:300]!r}")
        s = time.perf_counter() - t0
    return {"chunks": len(chunks), "s": s, "chunks_per_s": len(chunks) / s, "outputs": outputs}


def _long_request(url: str, model: str, text: str, done: threading.Event, out: dict) -> None:
    try:
        with load.client(url) as c:
            t0 = time.perf_counter()
            load.embed(c, [text], model=model)
            out["long_s"] = time.perf_counter() - t0
    except BaseException as e:  # noqa: BLE001 - reported, not raised in a thread
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        done.set()


def _lat_stats(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0, "p50_ms": NAN, "p95_ms": NAN, "max_ms": NAN}
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms)}


def long_alone(url: str, model: str, text: str, server: Server | None = None) -> dict:
    """One long input, nothing else; with `server`, its peak RSS (VmHWM reset just before)."""
    out: dict = {}
    if server is not None:
        out["rss_before_mb"] = server.rss_mb()
        server.reset_peak()
    _long_request(url, model, text, threading.Event(), out)
    if server is not None:
        out["peak_mb"] = server.hwm_mb()
    return out


def long_with_sequential_queries(url: str, model: str, text: str, query: str) -> dict:
    """The long input in flight; meanwhile the query, sequentially, on one connection. Latencies of the
    queries sent before the long input returned (a query stuck behind it counts with its whole wait)."""
    done, out = threading.Event(), {}
    t = threading.Thread(target=_long_request, args=(url, model, text, done, out))
    ms, errors = [], 0
    with load.client(url) as c:
        t.start()
        time.sleep(0.05)  # the long body reaches the server first
        while not done.is_set():
            try:
                ms.append(_embed_ms(c, [query], model))
            except (RuntimeError, OSError):
                errors += 1
                break
    t.join()
    return dict(out, queries=_lat_stats(ms), query_errors=errors, ms=ms)


def long_with_open_loop_queries(url: str, model: str, text: str, query: str, interval: float) -> dict:
    """The long input in flight; a query sent every `interval` s from its own thread (connections pooled),
    whether or not earlier ones returned, until the long input returns. All sent queries are waited for."""
    done, out = threading.Event(), {}
    idle: queue.SimpleQueue = queue.SimpleQueue()
    ms: list[float] = []
    errors = [0]
    lock = threading.Lock()
    clients: list[load.Client] = []

    def one() -> None:
        try:
            try:
                c = idle.get_nowait()
            except queue.Empty:
                c = load.client(url)
                with lock:
                    clients.append(c)
            v = _embed_ms(c, [query], model)
            with lock:
                ms.append(v)
            idle.put(c)
        except (RuntimeError, OSError):
            with lock:
                errors[0] += 1

    t = threading.Thread(target=_long_request, args=(url, model, text, done, out))
    t.start()
    t0, k, senders = time.perf_counter(), 1, []
    while not done.wait(max(0.0, t0 + k * interval - time.perf_counter())):
        s = threading.Thread(target=one, daemon=True)
        s.start()
        senders.append(s)
        k += 1
    t.join()
    for s in senders:
        s.join()
    for c in clients:
        c.__exit__()
    return dict(out, interval_s=interval, sent=len(senders), queries=_lat_stats(ms), query_errors=errors[0],
                max_concurrent=len(clients))


def served_context(url: str, model: str) -> int | None:
    try:
        with load.client(url) as c:
            status, body = c.post("/api/show", orjson.dumps({"model": model}))
        info = orjson.loads(body).get("model_info", {}) if status == 200 else {}
        return next((int(v) for k, v in info.items() if k.endswith(".context_length")), None)
    except (OSError, ValueError, RuntimeError):
        return None


def _safe(fn):
    """fn() -> dict, or {"error": ...}: a failing scenario is reported, it does not end the run."""
    def run() -> dict:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            log(f"  failed: {type(e).__name__}: {e}")
            return {"error": f"{type(e).__name__}: {e}"}
    return run


