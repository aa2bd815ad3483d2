"""Shared helpers for the robustness suite: live servers, raw HTTP, error shapes, metrics, memory.

Everything talks to a real server process on 127.0.0.1 (``running_server``), never to anything else.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import select
import socket
import struct
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import running_server

MODEL = "all-minilm-l6-v2"
DIM = 384
OLLAMA, LEGACY, OPENAI = "/api/embed", "/api/embeddings", "/v1/embeddings"
JSON_HEADERS = {"content-type": "application/json"}
PROBE_TEXT = "The quick brown fox jumps over the lazy dog."

_ANY = object()  # "do not check this field"


# ----- live servers ----------------------------------------------------------------------------
@dataclass
class Live:
    """A running server: its base URL, process and log file."""

    base: str
    proc: Any
    log: Path
    reference: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status_kb(self, key: str) -> int:
        """A ``/proc/<pid>/status`` field in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self.status_kb("VmRSS") / 1024

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False if the kernel refuses."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return self.status_kb("VmHWM") <= self.status_kb("VmRSS") + 1024

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextmanager
def live_server(tmp_path_factory, name: str, env: dict[str, str] | None = None) -> Iterator[Live]:
    """A fresh server process serving the embedded MiniLM (empty models folder), with ``env`` on top."""
    models = tmp_path_factory.mktemp(f"{name}-models")
    log = tmp_path_factory.mktemp(f"{name}-logs") / f"{name}.log"
    with running_server(models, env=env, log_path=log) as (base, proc):
        yield Live(base, proc, log)


# ----- requests ----------------------------------------------------------------------------------
def jbytes(obj: Any, ascii_only: bool = False) -> bytes:
    """JSON bytes; non-ASCII text goes as raw UTF-8 unless ``ascii_only`` (needed for lone surrogates)."""
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")


def embed_body(path: str, text_or_texts: Any, **extra) -> dict:
    key = "prompt" if path == LEGACY else "input"
    return {"model": MODEL, key: text_or_texts, **extra}


def vectors_of(path: str, response: httpx.Response) -> np.ndarray:
    """The (n, d) vectors of a successful answer in any of the three embedding dialects (float format)."""
    body = response.json()
    if path == OLLAMA:
        return np.asarray(body["embeddings"], dtype=np.float64).reshape(len(body["embeddings"]), -1)
    if path == LEGACY:
        return np.asarray(body["embedding"], dtype=np.float64).reshape(1, -1)
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return np.asarray([d["embedding"] for d in body["data"]], dtype=np.float64).reshape(len(body["data"]), -1)


def assert_unit_vectors(vectors: np.ndarray, n: int, dim: int = DIM) -> None:
    assert vectors.shape == (n, dim), vectors.shape
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def reference_vector(server: Live, text: str = PROBE_TEXT) -> np.ndarray:
    """The server's own vector for ``text``, fetched once on a fresh connection."""
    if text not in server.reference:
        r = httpx.post(server.base + OLLAMA, json={"model": MODEL, "input": [text]}, timeout=120)
        assert r.status_code == 200, r.text
        server.reference[text] = np.asarray(r.json()["embeddings"][0], dtype=np.float64)
    return server.reference[text]


def assert_serving(server: Live, client: httpx.Client | None = None, paths=(OLLAMA, OPENAI)) -> None:
    """A normal request in each dialect succeeds (on ``client``'s kept-alive connection when given)
    and returns the usual vector."""
    assert server.alive(), f"server process died:\n{server.log_tail()}"
    want = reference_vector(server)
    for path in paths:
        body = embed_body(path, PROBE_TEXT if path == LEGACY else [PROBE_TEXT])
        if client is not None:
            r = client.post(server.base + path, json=body)
        else:
            r = httpx.post(server.base + path, json=body, timeout=120)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        got = vectors_of(path, r)
        assert got.shape == (1, DIM) and np.allclose(got[0], want, atol=1e-5), path


def assert_ollama_error(r: httpx.Response, status: int, contains: str | None = None) -> str:
    """Ollama's error shape: exactly ``{"error": "<non-empty message>"}``, JSON content type."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"], body
    if contains is not None:
        assert contains in body["error"], body["error"]
    return body["error"]


def assert_openai_error(r: httpx.Response, status: int, param: Any = _ANY, code: Any = _ANY,
                        type_: Any = _ANY, contains: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}`` and nothing else."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    if status >= 500:
        assert err["type"] == "server_error", err
    for name, want in (("param", param), ("code", code), ("type", type_)):
        if want is not _ANY:
            assert err[name] == want, (name, err)
    if contains is not None:
        assert contains in err["message"], err["message"]
    return err


def assert_error(path: str, r: httpx.Response, status: int, **openai_fields) -> str:
    """The error shape of the dialect ``path`` belongs to."""
    if path.startswith("/v1"):
        contains = openai_fields.pop("contains", None)
        return assert_openai_error(r, status, contains=contains, **openai_fields)["message"]
    return assert_ollama_error(r, status, openai_fields.get("contains"))


# ----- raw HTTP on a socket ---------------------------------------------------------------------
def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 content_length: int | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request (Content-Length may lie, to simulate a stalled body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(sock: socket.socket, method: str = "POST") -> RawResponse:
    resp = http.client.HTTPResponse(sock, method=method)
    resp.begin()
    body = resp.read()
    return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


def raw_exchange(port: int, data: bytes, timeout: float = 120.0) -> RawResponse:
    """Send ``data`` on a new connection and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def connection_closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True if the server closed ``sock`` (EOF or reset) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def server_read_everything(sock: socket.socket) -> bool:
    """True once the server process has read every byte sent on ``sock`` (a loopback IPv4 connection):
    none is left unacknowledged on this side (SIOCOUTQ) and none waits unread in the server's socket
    (its rx_queue in /proc/net/tcp)."""
    unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    if unsent:
        return False
    client_port, server_port = sock.getsockname()[1], sock.getpeername()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local, remote) == (server_port, client_port):
            return int(fields[4].split(":")[1], 16) == 0
    return False


def answer_pending(sock: socket.socket) -> bool:
    """True while nothing (no byte of an answer, no close) has arrived on ``sock``."""
    return not select.select([sock], [], [], 0)[0]


# ----- metrics ------------------------------------------------------------------------------------
def scrape(base: str) -> dict[str, list]:
    r = httpx.get(base + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def metric(samples: dict[str, list], family: str, sample: str | None = None, **labels) -> float:
    return sum(s.value for s in samples.get(family, [])
               if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()))


def inputs_embedded(base: str) -> float:
    return metric(scrape(base), "embed_inputs", "embed_inputs_total", model=MODEL)


def queue_depth(base: str) -> float:
    return metric(scrape(base), "embed_queue_depth", model=MODEL)


def server_errors(base: str) -> dict[tuple[str, str], float]:
    """{(route, status): count} of every 5xx the server's access counter recorded (except the probes'
    503 "loading", which ``running_server`` sees while the model loads)."""
    out: dict[tuple[str, str], float] = {}
    for s in scrape(base).get("embed_http_requests", []):
        if s.labels.get("route") in ("/health", "/ready"):
            continue
        if s.name == "embed_http_requests_total" and s.labels.get("status", "").startswith("5") and s.value:
            out[(s.labels["route"], s.labels["status"])] = s.value
    return out


_WORDS = ["river", "mountain", "engine", "signal", "library", "market", "window", "garden", "theory", "channel", "protocol", "harvest", "lantern", "orbit", "pattern", "quartz", "ribbon", "summit", "thunder", "velvet", "whisper", "anchor", "beacon", "canvas", "dialect", "ember", "fabric", "glacier", "harbor", "island", "jungle", "kernel", "ledger", "meadow", "needle", "oracle", "pepper", "quiver", "rocket", "saddle"]


def sentences(n: int, words: int, tag: str, seed: int = 0) -> list[str]:
    """``n`` distinct deterministic texts of about ``words`` words each."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=words)) + f" {tag}{i}" for i in range(n)]


