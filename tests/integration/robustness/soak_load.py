"""A mixed valid/invalid load generator that checks every answer (run by soak_run.py for test_load_soak.py
and bench/load_run.py).

Valid requests draw texts from a fixed pool whose vectors and token counts were computed once up front;
every answer must match them (allclose 1e-5), in order, with the right counts. Invalid requests must get
their exact expected status and error shape. Any transport error (reset, timeout, no answer) is a lost
response. Some clients abandon requests mid-flight (the engine must drop that work).
"""

from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

MODEL = "all-minilm-l6-v2"
ATOL = 1e-5

_WORDS = ["river", "mountain", "engine", "signal", "library", "market", "window", "garden", "theory", "channel", "protocol", "harvest", "lantern", "orbit", "pattern", "quartz", "ribbon", "summit", "thunder", "velvet", "whisper", "anchor", "beacon", "canvas", "dialect", "ember", "fabric", "glacier", "harbor", "island", "jungle", "kernel", "ledger", "meadow", "needle", "oracle", "pepper", "quiver", "rocket", "saddle"]
_ODD = ["🚀 emoji 🔥", "日本語のテキスト", "שלום עולם", "مرحبا بالعالم", "Ünïcödé", " ", "a\u0000b", "[CLS] [SEP]"]


def text_pool(size: int = 64, seed: int = 7) -> list[str]:
    """Deterministic texts from 1 to ~300 words (some beyond MiniLM's 256-token context), odd ones included."""
    rng = random.Random(seed)
    pool = list(_ODD)
    while len(pool) < size:
        n = rng.choice([1, 3, 8, 20, 60, 300])
        pool.append(" ".join(rng.choice(_WORDS) for _ in range(n)) + f" #{len(pool)}")
    return pool


@dataclass
class Expected:
    texts: list[str]
    vectors: np.ndarray  # (n, 384) float64
    tokens: list[int]
    token_ids: list[list[int]] | None  # cl100k ids of each text, when tiktoken is available


def expected_for(base: str, texts: list[str]) -> Expected:
    """Vectors and token counts for each pool text, one request per text (no batching effects)."""
    vectors, tokens = [], []
    with httpx.Client(timeout=120) as client:
        for text in texts:
            r = client.post(base + "/api/embed", json={"model": MODEL, "input": [text]})
            r.raise_for_status()
            vectors.append(r.json()["embeddings"][0])
            tokens.append(r.json()["prompt_eval_count"])
    try:
        from tests.support.cl100k import cl100k

        enc = cl100k()
        ids = [enc.encode(t) for t in texts]
        ids = [x if enc.decode(x) == t and x else None for x, t in zip(ids, texts)]
    except Exception:  # noqa: BLE001 - token-array requests are simply left out
        ids = None
    return Expected(texts, np.asarray(vectors, dtype=np.float64), tokens, ids)


class Mismatch(Exception):
    """An answer that does not match what the request must produce."""


@dataclass
class Stats:
    requests: Counter = field(default_factory=Counter)   # kind -> sent
    statuses: Counter = field(default_factory=Counter)   # status -> count
    problems: list[str] = field(default_factory=list)    # lost or mismatched answers (first ones kept)
    problem_count: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int | None, seconds: float, problem: str | None = None) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses["lost" if status is None else status] += 1
            self.latencies.append(seconds)
            if problem:
                self.problem_count[problem.split(":")[0]] += 1
                if len(self.problems) < 20:
                    self.problems.append(f"{kind}: {problem}")


def _check_vectors(got: np.ndarray, want: np.ndarray, what: str) -> None:
    if got.shape != want.shape:
        raise Mismatch(f"mismatch: {what} shape {got.shape} != {want.shape}")
    if not np.allclose(got, want, atol=ATOL):
        raise Mismatch(f"mismatch: {what} vectors differ by {np.abs(got - want).max():.2e}")


def _renorm(v: np.ndarray, d: int) -> np.ndarray:
    cut = v[:, :d]
    return cut / np.linalg.norm(cut, axis=1, keepdims=True)


def _error_shape(r: httpx.Response, openai: bool) -> None:
    body = r.json()
    if openai:
        if set(body) != {"error"} or set(body["error"]) != {"message", "type", "param", "code"}:
            raise Mismatch(f"mismatch: OpenAI error shape {body!r:.200}")
    elif set(body) != {"error"} or not isinstance(body["error"], str):
        raise Mismatch(f"mismatch: Ollama error shape {body!r:.200}")


class Client:
    """One simulated client: its own connection pool and random stream."""

    def __init__(self, base: str, exp: Expected, stats: Stats, seed: int):
        self.base, self.exp, self.stats = base, exp, stats
        self.rng = random.Random(seed)
        self.http = httpx.Client(base_url=base, timeout=120)
        self.port = int(base.rsplit(":", 1)[1])
        self.actions: list[tuple[str, float, Callable[[], int | None]]] = [
            ("ollama", 20, self.ollama), ("openai_float", 15, self.openai_float),
            ("openai_base64", 10, self.openai_base64), ("openai_dimensions", 5, self.openai_dimensions),
            ("legacy", 8, self.legacy), ("bad_json", 5, self.bad_json), ("unknown_model", 5, self.unknown_model),
            ("wrong_type", 5, self.wrong_type), ("too_many_inputs", 3, self.too_many_inputs),
            ("bad_dimensions", 4, self.bad_dimensions), ("bad_token_id", 3, self.bad_token_id),
            ("abandon", 3, self.abandon), ("models", 4, self.models), ("health", 2, self.health),
        ]
        if exp.token_ids is not None and any(ids is not None for ids in exp.token_ids):
            self.actions.append(("openai_token_ids", 8, self.openai_token_ids))
        self.weights = [w for _, w, _ in self.actions]

    def pick(self, most: int = 8) -> list[int]:
        return [self.rng.randrange(len(self.exp.texts)) for _ in range(self.rng.randint(1, most))]

    # ----- valid ------------------------------------------------------------------------------------
    def ollama(self) -> int:
        idx = self.pick()
        r = self.http.post("/api/embed", json={"model": MODEL, "input": [self.exp.texts[i] for i in idx]})
        if r.status_code != 200:
            raise Mismatch(f"status: {r.status_code} {r.text[:200]}")
        body = r.json()
        _check_vectors(np.asarray(body["embeddings"]), self.exp.vectors[idx], "ollama")
        if body["prompt_eval_count"] != sum(self.exp.tokens[i] for i in idx) or body["model"] != MODEL:
            raise Mismatch("mismatch: ollama prompt_eval_count/model")
        return r.status_code

    def _openai(self, payload: dict, idx: list[int], decode, dims: int | None = None) -> int:
        r = self.http.post("/v1/embeddings", json=payload)
        if r.status_code != 200:
            raise Mismatch(f"status: {r.status_code} {r.text[:200]}")
        body = r.json()
        if [d["index"] for d in body["data"]] != list(range(len(idx))):
            raise Mismatch("mismatch: openai indexes")
        got = np.asarray([decode(d["embedding"]) for d in body["data"]], dtype=np.float64)
        want = self.exp.vectors[idx] if dims is None else _renorm(self.exp.vectors[idx], dims)
        _check_vectors(got, want, "openai")
        tokens = sum(self.exp.tokens[i] for i in idx)
        if body["usage"] != {"prompt_tokens": tokens, "total_tokens": tokens}:
            raise Mismatch(f"mismatch: usage {body['usage']} != {tokens}")
        return r.status_code

    def openai_float(self) -> int:
        idx = self.pick()
        return self._openai({"model": MODEL, "input": [self.exp.texts[i] for i in idx]}, idx, lambda e: e)

    def openai_base64(self) -> int:
        idx = self.pick()
        return self._openai({"model": MODEL, "input": [self.exp.texts[i] for i in idx], "encoding_format": "base64"},
                            idx, lambda e: np.frombuffer(base64.b64decode(e), dtype="<f4"))

    def openai_dimensions(self) -> int:
        idx, dims = self.pick(), self.rng.choice([8, 64, 256])
        return self._openai({"model": MODEL, "input": [self.exp.texts[i] for i in idx], "dimensions": dims}, idx,
                            lambda e: e, dims)

    def openai_token_ids(self) -> int:
        idx = [i for i in self.pick() if self.exp.token_ids[i] is not None]
        idx = idx or [next(i for i, ids in enumerate(self.exp.token_ids) if ids is not None)]
        return self._openai({"model": MODEL, "input": [self.exp.token_ids[i] for i in idx]}, idx, lambda e: e)

    def legacy(self) -> int:
        i = self.rng.randrange(len(self.exp.texts))
        r = self.http.post("/api/embeddings", json={"model": MODEL, "prompt": self.exp.texts[i]})
        if r.status_code != 200:
            raise Mismatch(f"status: {r.status_code} {r.text[:200]}")
        _check_vectors(np.asarray([r.json()["embedding"]]), self.exp.vectors[[i]], "legacy")
        return r.status_code

    def models(self) -> int:
        r = self.http.get("/v1/models" if self.rng.random() < 0.5 else "/api/tags")
        if r.status_code != 200:
            raise Mismatch(f"status: {r.status_code}")
        return r.status_code

    def health(self) -> int:
        r = self.http.get("/health")
        if r.status_code != 200:
            raise Mismatch(f"status: {r.status_code}")
        return r.status_code

    # ----- invalid ----------------------------------------------------------------------------------
    def _expect(self, r: httpx.Response, status: int, openai: bool) -> int:
        if r.status_code != status:
            raise Mismatch(f"status: {r.status_code} instead of {status}: {r.text[:200]}")
        _error_shape(r, openai)
        return r.status_code

    def _path(self) -> tuple[str, bool]:
        openai = self.rng.random() < 0.5
        return ("/v1/embeddings" if openai else "/api/embed"), openai

    def bad_json(self) -> int:
        path, openai = self._path()
        # (A "null" body is Ollama's empty request, like Go's decoder reads it: only OpenAI refuses it.)
        body = self.rng.choice([b'{"model": "x", "input": ', b"[1, 2", b"\xff\xfe", b""] + ([b"null"] if openai else []))
        return self._expect(self.http.post(path, content=body, headers={"content-type": "application/json"}), 400,
                            openai)

    def unknown_model(self) -> int:
        path, openai = self._path()
        return self._expect(self.http.post(path, json={"model": f"nope-{self.rng.random()}", "input": "x"}), 404,
                            openai)

    def wrong_type(self) -> int:
        path, openai = self._path()
        value = self.rng.choice([["a", 1], [["a"]], {"x": 1}, 3.5, [None]])
        return self._expect(self.http.post(path, json={"model": MODEL, "input": value}), 400, openai)

    def too_many_inputs(self) -> int:
        path, openai = self._path()
        return self._expect(self.http.post(path, json={"model": MODEL, "input": ["x"] * 2049}), 400, openai)

    def bad_dimensions(self) -> int:
        path, openai = self._path()
        dims = self.rng.choice([-1, 385, 10 ** 9] + ([0] if openai else []))
        return self._expect(self.http.post(path, json={"model": MODEL, "input": "x", "dimensions": dims}), 400, openai)

    def bad_token_id(self) -> int:
        ids = self.rng.choice([[100277], [-1], [2 ** 63], [[1, 2], [100300]]])
        return self._expect(self.http.post("/v1/embeddings", json={"model": MODEL, "input": ids}), 400, True)

    def abandon(self) -> None:
        """A valid request whose client leaves before the answer (raw socket, closed right away)."""
        idx = self.pick(32)
        body = json.dumps({"model": MODEL, "input": [self.exp.texts[i] for i in idx]}).encode()
        head = (f"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(head + body)
            time.sleep(self.rng.random() * 0.2)

    # ----- loop -------------------------------------------------------------------------------------
    def run(self, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                kind, _, action = self.rng.choices(self.actions, weights=self.weights)[0]
                started = time.monotonic()
                try:
                    status = action()
                    self.stats.record(kind, status if status is not None else "abandoned", time.monotonic() - started)
                except Mismatch as exc:
                    status = _status_of(str(exc))
                    self.stats.record(kind, status, time.monotonic() - started, str(exc))
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    self.stats.record(kind, None, time.monotonic() - started, f"lost: {exc!r}")
        finally:
            self.http.close()


def _status_of(message: str) -> int | str:
    if message.startswith("status: "):
        head = message.split()[1]
        return int(head) if head.isdigit() else "mismatch"
    return "mismatch"
