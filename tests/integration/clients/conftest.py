"""Fixtures for driving the real client libraries against the live server on loopback.

Every test here runs with the network closed to everything but 127.0.0.1/::1 (a socket guard),
dummy credentials in the environment, and tiktoken's cache pre-filled on demand, so that a
client trying to reach the internet fails loudly instead of hanging or silently succeeding.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import socket
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest

from tests.integration.clients import tiktoken_cache
from tests.support.server import running_server

MODEL = "all-minilm-l6-v2"
OPENAI_ALIAS = "text-embedding-3-small"
MIN_COSINE = 0.9999
M3_MODEL = "tiny-bge-m3"  # tests/fixtures/tiny-bge-m3: BGE-M3's shape with its sparse head, tiny
API_KEY = "sk-loopback-test-key"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

_CLEARED_ENV = ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_API_BASE",
                "OLLAMA_HOST", "OLLAMA_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "http_proxy", "https_proxy", "all_proxy", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def offline_clients(monkeypatch):
    """Dummy keys, no proxies, and a socket guard refusing any non-loopback lookup or connection."""
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-offline")
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")

    real_getaddrinfo, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def check(address) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"client test tried to reach {address!r}: only loopback is allowed")

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise socket.gaierror(f"client test tried to resolve {host!r}: only loopback is allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="session")
def tiktoken_dir(tmp_path_factory):
    """A tiktoken cache directory holding cl100k_base, filled from the bpe-openai wheel."""
    directory = tmp_path_factory.mktemp("tiktoken-cache")
    tiktoken_cache.prefill(directory)
    return directory


@pytest.fixture
def tiktoken_offline(tiktoken_dir, monkeypatch):
    """Point tiktoken at the pre-filled cache (what an air-gapped user does with TIKTOKEN_CACHE_DIR)."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_dir))
    return tiktoken_dir


@pytest.fixture(scope="session")
def alias_server(empty_models_dir, tmp_path_factory):
    """A second live server where ``text-embedding-3-small`` is an alias of the embedded MiniLM."""
    log = tmp_path_factory.mktemp("logs") / "alias-server.log"
    env = {"EMBED_MODEL_ALIASES": f"{OPENAI_ALIAS}={MODEL}"}
    with running_server(empty_models_dir, env=env, log_path=log) as (base, _proc):
        yield base


@pytest.fixture(scope="session")
def m3_server(tmp_path_factory):
    """A live server whose default model is the tiny BGE-M3 fixture (a sparse head: TEI's /embed_sparse answers)
    and which demands an API key (``EMBED_API_KEY``): for the clients' sparse embedders and their auth options."""
    root = tmp_path_factory.mktemp("m3-models")
    shutil.copytree(FIXTURES / M3_MODEL, root / M3_MODEL)
    log = tmp_path_factory.mktemp("logs") / "m3-server.log"
    with running_server(root, model=M3_MODEL, env={"EMBED_API_KEY": API_KEY}, log_path=log) as (base, _proc):
        yield base


def reference_vectors(base: str, texts: list[str], dimensions: int | None = None, model: str = MODEL,
                      headers: dict[str, str] | None = None) -> np.ndarray:
    """What the server's own /api/embed returns for ``texts`` (the reference every client must match)."""
    body: dict[str, Any] = {"model": model, "input": texts}
    if dimensions:
        body["dimensions"] = dimensions
    r = httpx.post(f"{base}/api/embed", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], dtype=np.float64)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def matching_vectors(got, base: str, texts: list[str], **reference) -> tuple[np.ndarray, np.ndarray]:
    """(``got`` as an (n, d) array, /api/embed's vectors for ``texts``), asserted equal in direction (cosine >=
    MIN_COSINE); ``reference`` goes to ``reference_vectors`` (dimensions, model, headers)."""
    got = np.asarray(got, dtype=np.float64)
    if got.ndim == 1:
        got = got[None, :]
    want = reference_vectors(base, texts, **reference)
    assert got.shape == want.shape, (got.shape, want.shape)
    cos = cosines(got, want)
    assert cos.min() >= MIN_COSINE, cos
    return got, want


@pytest.fixture
def assert_matches(live_server) -> Callable[..., np.ndarray]:
    """``assert_matches(got, texts, base=None, dimensions=None)``: each vector is /api/embed's, cosine >= 0.9999."""

    def check(got, texts: list[str], base: str | None = None, dimensions: int | None = None) -> np.ndarray:
        return matching_vectors(got, base or live_server, texts, dimensions=dimensions)[0]

    return check


class Wire:
    """Records the JSON bodies (and headers) a client really sends, through httpx event hooks."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each recorded request's headers (lower-case names), in order

    def _record(self, request) -> None:
        raw = request.read()
        self.requests.append((request.method, request.url.path, json.loads(raw) if raw else None))
        self.headers.append({k.lower(): v for k, v in request.headers.items()})

    async def _arecord(self, request) -> None:
        raw = await request.aread()
        self.requests.append((request.method, request.url.path, json.loads(raw) if raw else None))
        self.headers.append({k.lower(): v for k, v in request.headers.items()})

    @property
    def hooks(self) -> dict:
        return {"request": [self._record]}

    @property
    def async_hooks(self) -> dict:
        return {"request": [self._arecord]}

    def bodies(self, path_suffix: str) -> list[Any]:
        """JSON bodies of the requests whose path ends with ``path_suffix``."""
        return [body for _method, path, body in self.requests if path.endswith(path_suffix)]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def wire_httpx(wire, monkeypatch) -> Wire:
    """``wire``, recording what every ``httpx.Client``/``httpx.AsyncClient`` made during the test sends: for clients
    that build their own and take no hooks (llama-index's TextEmbeddingsInference opens one per call)."""

    def with_hook(kwargs: dict, hook) -> dict:
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [*hooks.get("request", []), hook]
        return {**kwargs, "event_hooks": hooks}

    class Client(httpx.Client):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **with_hook(kwargs, wire._record))

    class AsyncClient(httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **with_hook(kwargs, wire._arecord))

    monkeypatch.setattr(httpx, "Client", Client)
    monkeypatch.setattr(httpx, "AsyncClient", AsyncClient)
    return wire


_WORDS = ("river mountain engine signal library market window garden theory channel protocol "
          "harvest lantern orbit pattern quartz ribbon summit thunder velvet whisper anchor beacon "
          "canvas dialect ember fabric glacier harbor island jungle kernel ledger meadow needle "
          "oracle pepper quiver rocket saddle tunnel umbrella vessel walnut yonder zephyr compile "
          "measure observe gather refine balance deliver explore imagine predict restore").split()


@pytest.fixture(scope="session")
def long_texts() -> list[str]:
    """Three deterministic texts of about 2,000 words: far beyond MiniLM's 256-token context."""
    texts = []
    for seed in (1, 2, 3):
        rng = random.Random(seed)
        sentences, count = [], 0
        while count < 2000:
            n = rng.randint(6, 16)
            words = [rng.choice(_WORDS) for _ in range(n)]
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
            count += n
        texts.append(" ".join(sentences))
    return texts
