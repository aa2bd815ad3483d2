"""Client scenarios against a running server (POST /api/embed), timed with perf_counter.

Each client thread owns one keep-alive HTTP/1.1 connection of a minimal raw-socket client,
with bodies encoded/decoded by orjson, so that the client costs as little CPU as possible:
it shares the machine's cores with the server, and httpx (what the official Python clients
use) costs about 1.5 ms of CPU per request on the 2-core benchmark machine (stdlib
http.client ~0.4 ms), which would be charged to the server.
"""
from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import orjson

from .reference import percentile

MODEL = "all-minilm-l6-v2"


class Client:
    """One keep-alive HTTP/1.1 connection on a raw socket: ``post``/``get`` -> (status, body bytes).

    Requests are written as prebuilt bytes and responses read by Content-Length: about a tenth
    of the CPU of stdlib ``http.client`` (whose header parsing alone costs ~0.2 ms here).
    """

    def __init__(self, base_url: str, timeout: float = 900.0):
        url = urlsplit(base_url)
        self._host = f"{url.hostname}:{url.port}".encode()
        self._sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), path.encode(), self._host)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self._sock.sendall(head + b"\r\n" + (body or b""))
        while b"\r\n\r\n" not in self._buf:
            self._recv()
        header, _, self._buf = self._buf.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields = dict(line.split(b":", 1) for line in lines[1:])
        length = int(next((v for k, v in fields.items() if k.lower() == b"content-length"), b"-1"))
        if length < 0:
            raise RuntimeError(f"{method} {path}: response without Content-Length")
        while len(self._buf) < length:
            self._recv()
        data, self._buf = self._buf[:length], self._buf[length:]
        return status, data

    def _recv(self) -> None:
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.request("POST", path, body)

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()


def client(base_url: str) -> Client:
    return Client(base_url)


def embed(c: Client, texts: list[str], model: str = MODEL) -> list[list[float]]:
    status, body = c.post("/api/embed", orjson.dumps({"model": model, "input": texts}))
    if status != 200:
        raise RuntimeError(f"/api/embed -> {status}: {body[:300]!r}")
    vecs = orjson.loads(body)["embeddings"]
    if len(vecs) != len(texts):
        raise RuntimeError(f"/api/embed returned {len(vecs)} embeddings for {len(texts)} inputs")
    return vecs


def _timed(c: Client, texts: list[str]) -> float:
    t0 = time.perf_counter()
    embed(c, texts)
    return (time.perf_counter() - t0) * 1e3


def _run_threads(n: int, target) -> float:
    """Run target(i) in n threads released together; return wall seconds."""
    barrier = threading.Barrier(n + 1)
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # surface client errors in the main thread
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def warmup(base_url: str, texts: list[str], query: str) -> None:
    """Same warm-up as the references (the first 128 texts, in batches of 32) + 5 singles."""
    with client(base_url) as c:
        for i in range(0, 128, 32):
            embed(c, texts[i : i + 32])
        for _ in range(5):
            embed(c, [query])


def bulk(base_url: str, batches: list[list[str]], clients: int) -> dict:
    """All batches, `clients` threads pulling the next batch from a shared cursor."""
    cursor = iter(range(len(batches)))
    lock = threading.Lock()

    def worker(_: int) -> None:
        with client(base_url) as c:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                embed(c, batches[i])

    elapsed = _run_threads(clients, worker)
    n = sum(len(b) for b in batches)
    return {"clients": clients, "sentences_per_s": n / elapsed, "elapsed_s": elapsed}


def single(base_url: str, query: str, n: int = 200) -> dict:
    """`n` sequential one-sentence requests on one connection."""
    with client(base_url) as c:
        t0 = time.perf_counter()
        lat = [_timed(c, [query]) for _ in range(n)]
        elapsed = time.perf_counter() - t0
    return {"n": n, "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
            "sentences_per_s": n / elapsed}


def http_floor(base_url: str, n: int = 100) -> dict:
    """Round trip of a trivial GET (/api/version, else /health): client + HTTP stack cost."""
    with client(base_url) as c:
        path = "/api/version" if c.get("/api/version")[0] == 200 else "/health"
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            c.get(path)
            lat.append((time.perf_counter() - t0) * 1e3)
    return {"path": path, "n": n, "p50_ms": percentile(lat, 50)}


def concurrent(base_url: str, query: str, clients: int = 8, per_client: int = 50) -> dict:
    """`clients` threads each sending `per_client` sequential one-sentence requests."""
    lat: list[float] = []

    def worker(_: int) -> None:
        with client(base_url) as c:
            mine = [_timed(c, [query]) for _ in range(per_client)]
        lat.extend(mine)

    elapsed = _run_threads(clients, worker)
    return {"clients": clients, "per_client": per_client, "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95), "sentences_per_s": clients * per_client / elapsed}


def fairness(base_url: str, big: list[str], query: str, server=None) -> dict:
    """Sequential one-sentence requests while one `len(big)`-input request is in flight.

    Only queries that finished before the big request returned count. With `server`, the
    peak RSS during the big request is read (VmHWM reset just before it is sent).
    """
    done = threading.Event()
    result: dict = {}

    def big_request() -> None:
        try:
            with client(base_url) as c:
                t0 = time.perf_counter()
                embed(c, big)
                result["bulk_s"] = time.perf_counter() - t0
        except BaseException as e:
            result["error"] = e
        finally:
            done.set()

    if server is not None:
        base_rss = server.rss_mb()
        server.reset_peak()
    t = threading.Thread(target=big_request)
    t.start()
    lat: list[float] = []
    with client(base_url) as c:
        time.sleep(0.05)  # let the big body reach the server first
        while not done.is_set():
            ms = _timed(c, [query])
            if not done.is_set():
                lat.append(ms)
    t.join()
    if "error" in result:
        raise result["error"]
    out = {"inputs": len(big), "bulk_s": result["bulk_s"], "n": len(lat),
           "p50_ms": percentile(lat, 50) if lat else float("nan"),
           "p95_ms": percentile(lat, 95) if lat else float("nan"),
           "max_ms": max(lat) if lat else float("nan")}
    if server is not None:
        peak = server.hwm_mb()
        out.update(rss_before_mb=base_rss, peak_mb=peak, peak_increase_mb=peak - base_rss)
    return out
