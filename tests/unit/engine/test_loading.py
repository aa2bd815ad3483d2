"""Loads: shared by concurrent callers, failures reported to each and retried, a deadline on waiting, a worker
installed only by the event loop (never a dead one), and a failed load's weights freed."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref

import pytest

from embedding_server.engine import loading
from embedding_server.engine.errors import ModelUnavailable
from embedding_server.engine.loading import Loader
from embedding_server.engine.registry import ModelEntry
from embedding_server.engine.worker import ModelWorker
from embedding_server.model.checkpoint import CheckpointError


class FakeWorker:
    def __init__(self, alive: bool = True):
        self.alive, self.died, self.embedder = alive, None if alive else "RuntimeError: boom", object()


def loader_for(build, timeout: float = 30.0, deaths: list | None = None, loads: list | None = None) -> Loader:
    return Loader(build, timeout, on_load=lambda e: (loads if loads is not None else []).append(e.name),
                  on_death=lambda e, reason: (deaths if deaths is not None else []).append(reason))


async def ensure(loader: Loader, entry: ModelEntry) -> None:
    """What Engine.ensure_loaded does once room is made."""
    if entry.loaded:
        return
    if entry.loading is None:
        loader.start(entry)
    await loader.wait(entry)


def test_concurrent_callers_share_one_load_in_a_thread(tmp_path):
    entry, calls, loads = ModelEntry("m", tmp_path), [], []

    def build(e):
        calls.append(threading.current_thread().name)
        return FakeWorker()

    loader = loader_for(build, loads=loads)

    async def main():
        await asyncio.gather(*(ensure(loader, entry) for _ in range(5)))

    asyncio.run(main())
    assert len(calls) == 1 and loads == ["m"]
    assert calls[0] != threading.main_thread().name, "loading must not block the event loop"
    assert entry.loaded and entry.loading is None


def test_a_failure_is_logged_reported_to_every_waiter_and_retried(tmp_path, caplog):
    entry, calls = ModelEntry("m", tmp_path), []

    def build(e):
        calls.append(1)
        if len(calls) <= 2:
            raise CheckpointError(f"{tmp_path}: cannot load the weights: bad file")
        return FakeWorker()

    loader = loader_for(build)

    async def waiters(n):
        return await asyncio.gather(*(ensure(loader, entry) for _ in range(n)), return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger=loading.__name__):
        first = asyncio.run(waiters(1))[0]
    assert isinstance(first, ModelUnavailable) and "bad file" not in first.message  # details go to the log only
    assert "cannot load the weights" in entry.error and "bad file" in caplog.text
    outcomes = asyncio.run(waiters(3))  # concurrent requests share one load, and its failure
    assert len(calls) == 2 and all(isinstance(o, ModelUnavailable) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3, "each waiter raises its own exception"
    assert not entry.loaded and entry.loading is None
    asyncio.run(waiters(2))  # the next request tries again
    assert len(calls) == 3 and entry.loaded and entry.error is None


def test_waiting_ends_at_the_load_deadline_and_the_late_load_is_still_served(tmp_path, caplog):
    """A stalled load (a hung network filesystem): its requests fail at the deadline, nobody starts a second
    copy meanwhile, and once the load finishes the model is served."""
    entry, release, calls = ModelEntry("m", tmp_path), threading.Event(), []

    def build(e):
        calls.append(1)
        assert release.wait(30)
        return FakeWorker()

    loader = loader_for(build, timeout=0.3)

    async def main():
        with caplog.at_level(logging.ERROR, logger=loading.__name__):
            with pytest.raises(ModelUnavailable, match="loading for more than 0.3 s"):
                await ensure(loader, entry)
        assert "still loading after 0.3 s" in caplog.text
        with pytest.raises(ModelUnavailable, match="EMBED_LOAD_TIMEOUT_S"):  # past the deadline: at once
            await asyncio.wait_for(ensure(loader, entry), 0.2)
        assert len(calls) == 1 and entry.loading is not None
        release.set()
        await asyncio.wait_for(asyncio.shield(entry.loading), 10)

    asyncio.run(main())
    assert entry.loaded and len(calls) == 1


def test_a_worker_dead_before_it_is_installed_is_never_installed(tmp_path):
    """The thread returns a worker whose thread already died: the loop counts the death and leaves the entry
    unloaded (not a dead worker answering 503 for ever); the next load installs a live one."""
    entry, deaths, built = ModelEntry("m", tmp_path), [], []

    def build(e):
        built.append(FakeWorker(alive=len(built) > 0))
        return built[-1]

    loader = loader_for(build, deaths=deaths)
    with pytest.raises(ModelUnavailable, match="stopped working"):
        asyncio.run(ensure(loader, entry))
    assert not entry.loaded and entry.deaths == 1 and deaths == ["RuntimeError: boom"]
    assert loader.worker_died(entry) is False  # its late death notice changes nothing
    asyncio.run(ensure(loader, entry))
    assert entry.worker is built[1] and entry.deaths == 1


class Weights:
    """Stands for the tensors a load had built when it failed."""


def test_a_failed_load_keeps_nothing_it_built_alive(tmp_path):
    """The model's own thread builds it (ModelWorker.launch) and fails: once the request has its answer, what the
    load had built is freed at once, by reference counting alone (the cycle collector is off here), every retry."""
    entry, refs = ModelEntry("m", tmp_path), []

    def factory():
        weights = Weights()
        refs.append(weakref.ref(weights))
        raise RuntimeError("out of memory while loading")

    loader = loader_for(lambda e: ModelWorker.launch(factory, "m", 2048, 8, 100))
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):  # each retry fails the same way: nothing may pile up
            with pytest.raises(ModelUnavailable) as info:
                asyncio.run(ensure(loader, entry))
            assert info.value.__context__ is None and info.value.__cause__ is None
            del info
        alive = [ref() is not None for ref in refs]
    finally:
        gc.enable()
    assert alive == [False, False, False], "a failed load's frames keep its weights alive"
