"""Through the HTTP app: a dead worker fails its requests at once and the model is reloaded; a forward that
raises falls back (and is counted); an input the model cannot run fails only its own request."""

from __future__ import annotations

import asyncio
import shutil
import threading

import httpx
import numpy as np
from fastapi.testclient import TestClient

from embedding_server.app import create_app
from embedding_server.engine.engine import Engine
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.settings import Settings
from tests.integration.api.test_observability_api import scrape, value
from tests.support.wait import wait_until


def wait_healthy(client: TestClient) -> None:
    wait_until(lambda: client.get("/health").status_code == 200, timeout=60, what="/health 200")


class WorkerKilled(BaseException):
    """Escapes the worker loop's handlers, as a bug in the loop itself would."""


class KillableEncoder(SentenceEncoder):
    """A real encoder whose next forward can be held at ``gate`` and then made to kill the worker thread."""

    def __init__(self, path, load_gate: threading.Event):
        assert load_gate.wait(30)
        super().__init__(path)
        self.kill, self.entered, self.gate = False, threading.Event(), threading.Event()
        self.gate.set()

    def start(self, batch, unit_ms=None, heads=None):
        self.entered.set()
        assert self.gate.wait(30)
        if self.kill:
            raise WorkerKilled("simulated worker crash")
        return super().start(batch, unit_ms, heads) if heads else super().start(batch, unit_ms)


def test_a_dead_worker_fails_waiting_requests_in_their_dialect_and_the_model_is_reloaded(tiny_models_dir):
    settings = Settings(models_dir=tiny_models_dir, model="tiny-bert")
    made, load_gate = [], threading.Event()
    load_gate.set()

    def factory(entry):
        made.append(KillableEncoder(entry.path, load_gate))
        return made[-1]

    app = create_app(settings, engine=Engine(settings, encoder_factory=factory))
    with TestClient(app) as client:
        wait_healthy(client)
        before = client.post("/api/embed", json={"model": "tiny-bert", "input": "still the same"}).json()
        first = made[0]
        first.kill, first.entered = True, threading.Event()
        first.gate.clear()
        load_gate.clear()  # the reload waits until the test has seen /health say so

        async def scenario():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as ac:
                running = asyncio.ensure_future(ac.post("/api/embed", json={"model": "tiny-bert", "input": "a"}))
                assert await asyncio.to_thread(first.entered.wait, 30)
                queued = [asyncio.ensure_future(ac.post(path, json={"model": "tiny-bert", "input": ["b", "c"]}))
                          for path in ("/api/embed", "/v1/embeddings", "/api/embed")]
                engine = app.state.engine
                while engine.queued_inputs().get("tiny-bert", 0) < 6:
                    await asyncio.sleep(0.01)
                first.gate.set()
                return await asyncio.gather(running, *queued)

        responses = client.portal.call(scenario)
        assert [r.status_code for r in responses] == [503] * 4
        ollama, openai = responses[0].json(), responses[2].json()
        assert "stopped working" in ollama["error"] and "Traceback" not in responses[0].text
        assert openai["error"]["code"] == "model_unavailable" and "stopped working" in openai["error"]["message"]
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "reloading"}
        load_gate.set()
        wait_healthy(client)
        after = client.post("/api/embed", json={"model": "tiny-bert", "input": "still the same"})
        assert after.status_code == 200 and after.json()["embeddings"] == before["embeddings"]
        assert len(made) == 2
        assert value(scrape(client)["embed_worker_deaths"], "embed_worker_deaths_total", model="tiny-bert") == 1


def test_a_raising_padding_free_forward_is_redone_and_counted(tiny_models_dir, monkeypatch):
    settings = Settings(models_dir=tiny_models_dir, model="tiny-bert")
    made = []

    def factory(entry):
        made.append(SentenceEncoder(entry.path))
        return made[-1]

    app = create_app(settings, engine=Engine(settings, encoder_factory=factory))
    with TestClient(app) as client:
        wait_healthy(client)
        body = {"model": "tiny-bert", "input": ["one sentence", "and another one"]}
        good = client.post("/api/embed", json=body).json()["embeddings"]

        def broken(batch, slicing=None):
            raise RuntimeError("kernel exploded")
            yield

        monkeypatch.setattr(made[0]._packed, "steps", broken)
        r = client.post("/api/embed", json=body)
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["embeddings"], good, atol=1e-5)
        metrics = scrape(client)  # read right after the answer: recorded before it was sent
        assert value(metrics["embed_forward_fallbacks"], "embed_forward_fallbacks_total", model="tiny-bert") == 1
        assert value(metrics["embed_batch_failures"], "embed_batch_failures_total", model="tiny-bert") == 0
        assert client.get("/ready").status_code == 200


def test_a_token_the_model_has_no_embedding_for_fails_only_its_request(tiny_models_dir, tmp_path, make_client):
    """A tokenizer with an added token beyond the embedding matrix: text holding it is refused with 400 (it
    would make the forward raise), and requests batched with it are answered."""
    from transformers import AutoTokenizer

    folder = tmp_path / "models" / "extra-token"
    shutil.copytree(tiny_models_dir / "tiny-bert", folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(["zzextrazz"])
    tokenizer.save_pretrained(folder)
    client = make_client(models_dir=folder.parent, model="extra-token")
    bad = client.post("/api/embed", json={"model": "extra-token", "input": ["fine", "a zzextrazz here"]})
    assert bad.status_code == 400 and "input 1" in bad.json()["error"] and "no embedding" in bad.json()["error"]
    openai = client.post("/v1/embeddings", json={"model": "extra-token", "input": "zzextrazz"})
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "input"
    ok = client.post("/api/embed", json={"model": "extra-token", "input": ["fine", "also fine"]})
    assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 2
