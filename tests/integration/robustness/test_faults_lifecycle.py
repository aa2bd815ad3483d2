"""Faults injected into loading and unloading, through the HTTP app: concurrent cold loads under the model cap and
the memory limit, a stalled load, unloads racing requests and stops that hang, ``ollama stop`` during a long
request, and reads of a model after its hold ends."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from embedding_server.engine.heap import resident_bytes
from embedding_server.engine.lifecycle import Lifecycle
from embedding_server.engine.worker import ModelWorker
from embedding_server.settings import Settings
from tests.integration.api.test_observability_api import scrape, value
from tests.support.checkpoints import make_tiny_bert
from tests.support.faults import Faults, open_faulty
from tests.support.wait import wait_until


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-models")
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        make_tiny_bert(root / name, seed=seed)
    shutil.copytree(__import__("tests.unit.model.test_m3_heads", fromlist=["FOLDER"]).FOLDER, root / "m3")
    return root


@pytest.fixture
def faulty(models):
    opened = []

    def factory(faults: Faults | None = None, **settings):
        faults = faults or Faults(models={"none"})
        client = open_faulty(Settings(models_dir=models, model="a", **settings), faults)
        opened.append((client, faults))
        return client, faults

    yield factory
    for client, faults in opened:
        faults.release.set()
        if faults.load_gate is not None:
            faults.load_gate.set()
        client.__exit__(None, None, None)


def in_memory(engine) -> list[str]:
    """Models loaded, loading or being unloaded, and workers that did not stop: what holds memory."""
    held = [e.name for e in engine.registry.entries.values()
            if e.loaded or e.loading is not None or e.unloading is not None]
    return held + ["stuck"] * len([w for w in engine.lifecycle.stuck if w.thread_alive])


def embed(client, model: str, **extra):
    return client.post("/api/embed", json={"model": model, "input": "hello world", **extra})


def cold_loads_at_once(client, faults: Faults, sample) -> list:
    """First requests to b and c while both would load at once (their loads held at a gate); ``sample()`` is called
    throughout. The answers, in order."""
    faults.load_gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(embed, client, "b")
        assert faults.loading.wait(30)
        second = pool.submit(embed, client, "c")

        def decided() -> bool:  # refused, or its own load started: sampled all the while
            sample()
            return second.done() or len(faults.loads_started) >= 2

        wait_until(decided, timeout=30, interval=0.01, what="the second request to be refused or to load")
        faults.load_gate.set()
        answers = [first.result(), second.result()]
    sample()
    return answers


def test_concurrent_cold_loads_never_exceed_the_model_cap(faulty):
    client, faults = faulty(Faults(models={"b", "c"}), max_loaded_models=2)
    engine, seen = client.app.state.engine, []
    answers = cold_loads_at_once(client, faults, lambda: seen.append(len(in_memory(engine))))
    assert max(seen) <= 2, f"models in memory over time: {seen}"
    assert [r.status_code for r in answers] == [200, 503]
    assert "EMBED_MAX_LOADED_MODELS=2" in answers[1].json()["error"]
    assert faults.loads_started == ["b"]
    assert embed(client, "c").status_code == 200  # b is idle now: unloaded to make room
    assert sorted(in_memory(engine)) == ["a", "c"]


def test_concurrent_cold_loads_reserve_their_estimate_under_the_memory_limit(faulty):
    client, faults = faulty(Faults(models={"b", "c"}))
    engine = client.app.state.engine
    estimate = engine._estimate(engine.registry.resolve("b"))
    limit_mb = (resident_bytes() + estimate * 3 // 2) // 2**20  # room for one more model, not two
    engine.settings.memory_limit_mb = limit_mb
    rss = []
    answers = cold_loads_at_once(client, faults, lambda: rss.append(resident_bytes()))
    assert [r.status_code for r in answers] == [200, 503]
    assert "reserved by loads under way" in answers[1].json()["error"]
    assert faults.loads_started == ["b"] and max(rss) <= limit_mb * 2**20


def test_a_stalled_load_fails_its_requests_at_the_deadline_in_each_dialect(faulty):
    client, faults = faulty(Faults(models={"b"}))
    client.app.state.engine.loader.timeout_seconds = 0.5  # after the default model's load
    faults.load_gate = threading.Event()
    r = embed(client, "b")
    assert r.status_code == 503 and "EMBED_LOAD_TIMEOUT_S" in r.json()["error"]
    r = client.post("/v1/embeddings", json={"model": "b", "input": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    assert faults.loads_started == ["b"]  # no second copy while the first is still loading
    assert embed(client, "a").status_code == 200  # other models keep serving
    faults.load_gate.set()
    wait_until(lambda: client.app.state.engine.registry.resolve("b").loaded, timeout=30, what="the late load")
    assert embed(client, "b").status_code == 200 and faults.loads_started == ["b"]


def test_a_request_during_an_unload_waits_for_it_instead_of_loading_a_second_copy(faulty, monkeypatch):
    client, faults = faulty(Faults(models={"b"}))
    engine, events, release = client.app.state.engine, [], threading.Event()
    assert embed(client, "b").status_code == 200
    faults.loading.clear()
    real_stop = ModelWorker.stop

    def slow_stop(self, timeout=30.0):
        events.append("stopping")
        assert release.wait(30)
        stopped = real_stop(self, timeout)
        events.append("stopped")
        return stopped

    monkeypatch.setattr(ModelWorker, "stop", slow_stop)
    real_on_load = engine.on_load
    engine.on_load = lambda name, seconds: (events.append(f"loaded {name}"), real_on_load(name, seconds))
    with ThreadPoolExecutor(1) as pool:
        assert client.post("/api/generate", json={"model": "b", "keep_alive": 0}).status_code == 200
        wait_until(lambda: events == ["stopping"], timeout=30, what="the unload to begin")
        again = pool.submit(embed, client, "b")
        wait_until(lambda: engine.registry.resolve("b").active == 1, timeout=30, what="the request to arrive")
        second_copy = faults.loading.wait(3)  # the bound is the property: no load of b while its unload runs
        release.set()
        assert not second_copy, "a second copy of b started loading while the first was still being stopped"
        assert again.result().status_code == 200
    assert events == ["stopping", "stopped", "loaded b"]


def test_a_stop_that_times_out_is_reported_and_counted(faulty, monkeypatch, caplog):
    client, faults = faulty(Faults(models={"b"}), max_loaded_models=2)
    lifecycle = client.app.state.engine.lifecycle
    assert embed(client, "b").status_code == 200
    entry = client.app.state.engine.registry.resolve("b")
    monkeypatch.setattr(Lifecycle, "STOP_SECONDS", 0.2)
    faults.hang = True
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(embed, client, "b")  # the worker is wedged in this forward: its stop cannot finish
        assert faults.entered.wait(30)
        client.portal.call(lifecycle.unload, entry)  # as make_room or the expiry would, had its client gone
        assert lifecycle.stuck and not entry.loaded
        assert "did not stop within 0.2 s" in caplog.text
        assert value(scrape(client)["embed_unload_timeouts"], "embed_unload_timeouts_total", model="b") == 1
        assert embed(client, "c").status_code == 503  # the stuck worker still counts against the cap
        faults.hang = False
        faults.release.set()
        busy.result()
    wait_until(lambda: not any(w.thread_alive for w in lifecycle.stuck), timeout=30, what="the stuck worker to end")
    assert embed(client, "c").status_code == 200


def test_ollama_stop_during_a_long_request_unloads_the_model_when_it_ends(faulty):
    client, faults = faulty(Faults(models={"b"}))
    assert embed(client, "b").status_code == 200
    faults.hang = True
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(embed, client, "b")
        assert faults.entered.wait(30)
        r = client.post("/api/generate", json={"model": "b", "keep_alive": 0})
        assert r.status_code == 200 and r.json()["done_reason"] == "unload"
        faults.hang = False
        faults.release.set()
        assert long.result().status_code == 200
    ps = lambda: {m["name"] for m in client.get("/api/ps").json()["models"]}  # noqa: E731
    wait_until(lambda: "b:latest" not in ps(), timeout=30, what="b unloaded once its last request ended")


def test_reads_of_a_model_happen_inside_the_requests_hold(faulty, monkeypatch):
    """The model is unloaded the moment any request's hold ends: every answer must still be whole."""
    client, _ = faulty()
    engine = client.app.state.engine
    real_use = engine.lifecycle.use

    class UnloadOnRelease:
        def __init__(self, entry, keep_alive=None):
            self.entry, self.hold = entry, real_use(entry, keep_alive)

        async def __aenter__(self):
            return await self.hold.__aenter__()

        async def __aexit__(self, *exc):
            await self.hold.__aexit__(*exc)
            if self.entry.active == 0 and self.entry.loaded and self.entry is not engine.default_entry():
                await engine.lifecycle.unload(self.entry)

    monkeypatch.setattr(engine.lifecycle, "use", UnloadOnRelease)
    r = client.post("/api/encode", json={"model": "m3", "input": ["hello world"], "outputs": ["sparse"],
                                         "sparse_tokens": True})
    assert r.status_code == 200, r.text
    assert r.json()["sparse_tokens"][0] and "m3:latest" not in str(client.get("/api/ps").json())


def test_too_many_inputs_are_refused_without_loading_the_model(faulty):
    client, faults = faulty(Faults(models={"b"}), max_inputs=2)
    r = client.post("/api/embed", json={"model": "b", "input": ["x", "y", "z"]})
    assert r.status_code == 400 and "max_inputs=2" in r.json()["error"]
    assert "b" not in in_memory(client.app.state.engine) and faults.loads_started == []


def test_the_expiry_loop_survives_a_failed_unload(faulty, monkeypatch, caplog):
    client, _ = faulty()
    lifecycle, calls = client.app.state.engine.lifecycle, []
    real_unload = lifecycle.unload

    async def flaky_unload(entry):
        calls.append(entry.name)
        if len(calls) == 1:
            raise RuntimeError("simulated failure while unloading")
        await real_unload(entry)

    monkeypatch.setattr(lifecycle, "unload", flaky_unload)
    assert embed(client, "b", keep_alive=0).status_code == 200
    wait_until(lambda: len(calls) >= 2, timeout=30, what="the expiry loop to try again")
    wait_until(lambda: "b" not in in_memory(client.app.state.engine), timeout=30, what="b unloaded")
    assert "unloading expired models failed" in caplog.text
