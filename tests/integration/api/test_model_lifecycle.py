"""Models loaded and unloaded like Ollama's: keep_alive (0, durations, negative), expiry when idle and never while
busy, a cap on loaded models and a memory budget (LRU unloading, refusals that disturb nothing), the models folder
rescanned, and Ollama's generate / chat / pull / delete answered as an embedding server should."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import numpy as np
import pytest

from embedding_server.engine.heap import resident_bytes
from embedding_server.engine.registry import ModelRegistry
from tests.support.checkpoints import make_tiny_bert, make_tiny_xlmr
from tests.support.wait import wait_until


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle-models")
    make_tiny_bert(root / "a")
    make_tiny_xlmr(root / "b")
    make_tiny_bert(root / "c", seed=1)
    return root


def loaded(client) -> dict[str, str]:
    return {m["name"].removesuffix(":latest"): m["expires_at"] for m in client.get("/api/ps").json()["models"]}


def wait_unloaded(client, name: str) -> None:
    """Until /api/ps no longer lists ``name`` (the expiry runs on the server's own clock)."""
    wait_until(lambda: name not in loaded(client), timeout=60, what=f"{name} to be unloaded")


def embed(client, model: str, **extra):
    r = client.post("/api/embed", json={"model": model, "input": "hello world", **extra})
    assert r.status_code == 200, r.text
    return r


def test_keep_alive_zero_duration_and_negative(make_client, models):
    c = make_client(models_dir=models, model="a")
    assert loaded(c) == {"a": "2318-01-01T00:00:00Z"}  # the default model: for ever
    embed(c, "b", keep_alive=-1)
    assert loaded(c)["b"] == "2318-01-01T00:00:00Z"
    started = time.time()
    embed(c, "c", keep_alive="1s")
    expires = loaded(c)["c"]
    assert expires.startswith(time.strftime("%Y-%m-%dT", time.gmtime(started)))
    wait_unloaded(c, "c")
    assert time.time() - started >= 0.9  # not before its keep_alive ran out
    embed(c, "b", keep_alive=0)
    wait_unloaded(c, "b")
    embed(c, "c")  # the default keep_alive (EMBED_KEEP_ALIVE, 5 minutes)
    assert 290 < _seconds_until(loaded(c)["c"]) <= 300
    assert set(loaded(c)) == {"a", "c"} and {m["name"] for m in c.get("/api/tags").json()["models"]} >= {
        "a:latest", "b:latest", "c:latest"}  # /api/tags lists every model, /api/ps the loaded ones


def _seconds_until(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - time.time()


def test_no_unload_while_busy(make_client, models):
    c = make_client(models_dir=models, model="a")
    engine = c.app.state.engine
    embed(c, "b")
    entry = engine.registry.resolve("b")

    async def busy_then_idle():
        async with engine.lifecycle.use(entry, 0):
            entry.expires_at = time.time() - 1  # expired, but a request holds it
            assert await engine.lifecycle.expire_due() == []
        assert entry.expires_at <= time.time()  # keep_alive 0: due as soon as the request ended
        return await engine.lifecycle.expire_due()

    assert c.portal.call(busy_then_idle) == ["b"]
    assert "b" not in loaded(c) and embed(c, "b").json()["load_duration"] > 0  # loads again on demand


def test_max_loaded_models_unloads_the_least_recently_used(make_client, models):
    c = make_client(models_dir=models, model="a", max_loaded_models=2)
    embed(c, "b")
    embed(c, "c")  # b is idle and least recently used: unloaded for c; the default model stays
    assert set(loaded(c)) == {"a", "c"}
    embed(c, "b")
    assert set(loaded(c)) == {"a", "b"}


def test_memory_limit_refuses_a_load_and_disturbs_nothing(make_client, models):
    c = make_client(models_dir=models, model="a")
    limit_mb = resident_bytes() // 2**20 + 1  # the default model loaded, no room for another
    c.app.state.engine.settings.memory_limit_mb = limit_mb
    r = c.post("/api/embed", json={"model": "b", "input": "x"})
    assert r.status_code == 503 and "estimated" in r.json()["error"] and f"EMBED_MEMORY_LIMIT_MB={limit_mb}" in \
        r.json()["error"]
    r = c.post("/v1/embeddings", json={"model": "b", "input": "x"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "model_memory_limit"
    embed(c, "a")  # the loaded model keeps serving
    assert set(loaded(c)) == {"a"}


def test_a_folder_copied_in_is_served_and_a_removed_one_leaves(make_client, models, tmp_path, monkeypatch):
    monkeypatch.setattr(ModelRegistry, "RESCAN_SECONDS", 0.0)
    shutil.copytree(models / "a", tmp_path / "a")
    c = make_client(models_dir=tmp_path, model="a")
    assert c.post("/api/embed", json={"model": "new", "input": "x"}).status_code == 404
    shutil.copytree(models / "b", tmp_path / "new")
    embed(c, "new", keep_alive=0)
    wait_unloaded(c, "new")
    shutil.rmtree(tmp_path / "new")
    # Gone from /api/tags once its unload has finished (/api/ps stops listing it as the unload begins).
    wait_until(lambda: "new:latest" not in {m["name"] for m in c.get("/api/tags").json()["models"]}, timeout=60,
               what="the removed folder to leave /api/tags")
    assert c.post("/api/embed", json={"model": "new", "input": "x"}).status_code == 404


def test_generate_chat_pull_and_unsupported_routes(make_client, models):
    c = make_client(models_dir=models, model="a")
    r = c.post("/api/generate", json={"model": "b"}).json()
    assert r["done"] is True and r["done_reason"] == "load" and r["response"] == "" and "b" in loaded(c)
    r = c.post("/api/chat", json={"model": "b", "messages": [], "keep_alive": 0}).json()
    assert r["done_reason"] == "unload" and r["message"] == {"role": "assistant", "content": ""}
    wait_unloaded(c, "b")
    for path, body in (("/api/generate", {"model": "b", "prompt": "hi"}),
                       ("/api/chat", {"model": "b", "messages": [{"role": "user", "content": "hi"}]})):
        r = c.post(path, json=body)
        assert r.status_code == 400 and "only embeds" in r.json()["error"]
    assert c.post("/api/pull", json={"model": "b", "stream": False}).json() == {"status": "success"}
    lines = c.post("/api/pull", json={"model": "b:latest"}).text.splitlines()
    assert lines[-1] == '{"status":"success"}'
    r = c.post("/api/pull", json={"model": "llama3"})
    assert r.status_code == 404 and "never downloads" in r.json()["error"] and "EMBED_MODELS_DIR" in r.json()["error"]
    assert c.request("DELETE", "/api/delete", json={"model": "b"}).status_code == 405
    for path in ("/api/create", "/api/copy", "/api/push"):
        r = c.post(path, json={"model": "b"})
        assert r.status_code == 405 and "folders" in r.json()["error"]
    assert c.get("/health").json()["status"] == "ok"


def test_unloading_the_default_model_keeps_health_ok(make_client, models):
    c = make_client(models_dir=models, model="a")
    c.post("/api/generate", json={"model": "a", "keep_alive": 0})
    wait_unloaded(c, "a")
    assert c.get("/health").status_code == 200
    embed(c, "a")
    assert loaded(c)["a"] == "2318-01-01T00:00:00Z"


def test_concurrent_first_requests_share_one_load(make_client, models):
    """Five requests for a model not loaded yet, all sent before any is answered: the model is loaded once (the
    engine calls its on_load observer once per load), and all five get the vector a later request gets."""
    c = make_client(models_dir=models, model="a")
    engine, loads = c.app.state.engine, []
    observer = engine.on_load  # the app's metrics: still called

    def counting(name: str, seconds: float) -> None:
        loads.append(name)
        if observer is not None:
            observer(name, seconds)

    engine.on_load = counting
    assert "b" not in loaded(c)

    async def five():
        transport = httpx.ASGITransport(app=c.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            return await asyncio.gather(*(ac.post("/api/embed", json={"model": "b", "input": "hello world"})
                                          for _ in range(5)))

    answers = c.portal.call(five)
    assert loads == ["b"]
    assert [r.status_code for r in answers] == [200] * 5, [r.text for r in answers]
    later = embed(c, "b").json()
    assert later["load_duration"] == 0 and loads == ["b"]  # resident: no second load
    for r in answers:
        assert r.json()["prompt_eval_count"] == later["prompt_eval_count"]
        assert np.allclose(r.json()["embeddings"], later["embeddings"], atol=1e-6)
