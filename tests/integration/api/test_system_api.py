"""Health/readiness, docs, body limits, API keys, failure isolation and client disconnects."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
from fastapi.testclient import TestClient

from embedding_server.app import create_app
from embedding_server.engine.engine import Engine
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.settings import Settings
from tests.support.wait import wait_until, wait_until_async


class GatedEncoder:
    """Wraps a real encoder: loading waits for ``load_gate``; ``fail`` makes forwards raise; counts inputs;
    ``forward_started`` is set when a forward begins, ``forward_gate`` (when cleared) holds it there."""

    def __init__(self, path, load_gate: threading.Event | None = None):
        if load_gate is not None:
            load_gate.wait(30)
        self.inner = SentenceEncoder(path)
        self.details, self.tokenizer = self.inner.details, self.inner.tokenizer
        self.fail = False
        self.embedded_inputs = 0
        self.forward_gate = threading.Event()
        self.forward_gate.set()
        self.forward_started = threading.Event()

    def tokenize(self, texts, truncate=True, **options):
        return self.inner.tokenize(texts, truncate, **options)

    def embed(self, batch):
        self.forward_started.set()
        self.forward_gate.wait(30)
        if self.fail:
            raise RuntimeError("secret internal detail /srv/weights")
        self.embedded_inputs += len(batch)
        return self.inner.embed(batch)


def gated_client(models_dir, gate=None, **settings) -> tuple[TestClient, dict]:
    settings = Settings(models_dir=models_dir, model="tiny-bert", **settings)
    made = {}

    def factory(entry):
        made[entry.name] = GatedEncoder(entry.path, gate)
        return made[entry.name]

    app = create_app(settings, engine=Engine(settings, encoder_factory=factory))
    return TestClient(app), made


HELD = 15  # seconds to wait for what happens while a forward is held: under the 30 s after which it goes ahead


def healthy(client: TestClient) -> bool:
    return client.get("/health").status_code == 200


def test_health_is_503_until_default_model_loaded(tiny_models_dir):
    gate = threading.Event()
    client, _ = gated_client(tiny_models_dir, gate)
    with client:
        assert client.get("/health").status_code == 503
        assert client.get("/ready").status_code == 503
        gate.set()
        wait_until(lambda: healthy(client), timeout=30, what="/health 200")
        assert client.get("/ready").json() == {"status": "ready"}


def test_failed_batch_is_500_without_internals_and_server_recovers(tiny_models_dir):
    client, made = gated_client(tiny_models_dir)
    with client:
        wait_until(lambda: healthy(client), timeout=30, what="/health 200")
        made["tiny-bert"].fail = True
        for path, body in (("/api/embed", {"input": "x"}), ("/v1/embeddings", {"input": "x"})):
            r = client.post(path, json={"model": "tiny-bert", **body})
            assert r.status_code == 500
            assert "secret" not in r.text and "Traceback" not in r.text and "/srv" not in r.text
        assert client.get("/ready").status_code == 503  # last batch failed
        assert client.get("/health").status_code == 200  # worker alive
        made["tiny-bert"].fail = False
        assert client.post("/api/embed", json={"model": "tiny-bert", "input": "x"}).status_code == 200
        assert client.get("/ready").status_code == 200


def test_disconnected_client_work_is_dropped(tiny_models_dir):
    """A request whose client leaves while queued never reaches the model: the worker is held inside the
    forward of a first request, a second (50 inputs) queues behind it, its client leaves, and its 50
    inputs leave the queue without ever being embedded."""
    client, made = gated_client(tiny_models_dir)
    with client:
        wait_until(lambda: healthy(client), timeout=30, what="/health 200")
        enc = made["tiny-bert"]
        enc.forward_gate.clear()  # the worker blocks inside its next forward
        enc.forward_started.clear()
        app = client.app
        worker = app.state.engine.registry.resolve("tiny-bert").worker

        async def scenario():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
                blocker = asyncio.create_task(ac.post("/api/embed", json={"model": "tiny-bert", "input": "first"}))
                await wait_until_async(enc.forward_started.is_set, HELD, what="the first request's forward to start")
                assert worker.queued_inputs == 0 and enc.embedded_inputs == 0
                leaver = asyncio.create_task(ac.post("/api/embed", json={"model": "tiny-bert", "input": ["x"] * 50}))
                await wait_until_async(lambda: worker.queued_inputs == 50, HELD,
                                       what="the second request's 50 inputs to be queued")
                leaver.cancel()  # the client goes away
                await wait_until_async(lambda: worker.queued_inputs == 0, HELD,
                                       what="the departed client's inputs to leave the queue")
                assert not blocker.done() and enc.embedded_inputs == 0  # the worker is still in the first forward
                enc.forward_gate.set()
                assert (await blocker).status_code == 200

        client.portal.call(scenario)
        assert enc.embedded_inputs == 1


def test_body_limit_is_413_in_each_dialect(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", max_body_bytes=4096)
    big = {"model": "tiny-bert", "input": "x" * 10_000}
    r = c.post("/api/embed", json=big)
    assert r.status_code == 413 and "max_body_bytes=4096" in r.json()["error"]
    r = c.post("/v1/embeddings", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no content-length: the limit applies while streaming
        for _ in range(10):
            yield b"x" * 1000

    r = c.post("/api/embed", content=chunks())
    assert r.status_code == 413


def test_api_keys(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", api_key="k1,k2")
    body = {"model": "tiny-bert", "input": "x"}
    r = c.post("/v1/embeddings", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = c.post("/api/embed", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
    for key in ("k1", "k2"):
        assert c.post("/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert c.get("/api/tags", headers={"Authorization": "Basic k1"}).status_code == 401
    assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200


def test_x_api_key_header_is_accepted_on_every_protected_route(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", api_key="k1,k2")
    body = {"model": "tiny-bert", "input": "x"}
    for key in ("k1", "k2"):
        headers = {"X-API-Key": key}
        assert c.post("/api/embed", json=body, headers=headers).status_code == 200
        assert c.post("/v1/embeddings", json=body, headers=headers).status_code == 200
        assert c.get("/api/tags", headers=headers).status_code == 200
        assert c.get("/v1/models", headers=headers).status_code == 200
    message = "invalid or missing API key (send Authorization: Bearer <key> or X-API-Key: <key>)"
    r = c.post("/api/embed", json=body, headers={"X-API-Key": "wrong", "Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json() == {"error": message}
    r = c.post("/v1/embeddings", json=body, headers={"X-API-Key": ""})
    assert r.status_code == 401 and r.json()["error"]["message"] == message
    # either header may carry the key when both are sent
    assert c.post("/api/embed", json=body, headers={"X-API-Key": "k1", "Authorization": "Bearer x"}).status_code == 200


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/embed", "/v1/embeddings", "/v1/models", "/api/tags", "/health"} <= set(paths)


def test_concurrent_requests_get_their_own_vectors(client):
    texts = [f"sentence number {i} about topic {i % 7}" * (1 + i % 5) for i in range(40)]
    expected = np.array(client.post("/api/embed", json={"model": "all-minilm-l6-v2", "input": texts}).json()["embeddings"])
    app = client.app

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as ac:
            rs = await asyncio.gather(*(ac.post("/api/embed", json={"model": "all-minilm-l6-v2", "input": t})
                                        for t in texts))
            return [r.json()["embeddings"][0] for r in rs]

    got = np.array(client.portal.call(scenario))
    assert np.allclose(got, expected, atol=1e-5)


def test_cors_closed_by_default_and_configurable(client, make_client, tiny_models_dir):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/embeddings", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/v1/models", headers={"Origin": "https://app.example"}).headers
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", cors_origins="https://app.example")
    r = c.options("/v1/embeddings", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    other = c.options("/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
