"""ModelWorker.launch: the worker's own thread builds, warms up and serves the model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from embedding_server.engine.heap import HeapTrimmer
from embedding_server.engine.scheduler import CostModel
from embedding_server.engine.worker import ModelWorker
from tests.support.heap import fragment_heap

LIMITS = {"max_batch_tokens": 1000, "max_batch_size": 8, "max_queued_inputs": 100}


class ThreadRecordingEmbedder:
    """Notes the thread of every call, so tests can see where torch work would run."""

    def __init__(self):
        self.threads: set[threading.Thread] = {threading.current_thread()}  # built here

    def embed(self, batch):
        self.threads.add(threading.current_thread())
        return np.ones((len(batch), 2), np.float32)


def test_factory_cost_model_and_batches_all_run_on_the_worker_thread():
    seen = {}

    def cost_of(embedder):
        seen["cost_thread"] = threading.current_thread()
        return CostModel(overhead=7.0, per_token=1.0, padding_weight=0.5)

    worker = ModelWorker.launch(ThreadRecordingEmbedder, "fake", cost_of=cost_of, **LIMITS)
    try:
        assert worker.alive and worker.cost == CostModel(overhead=7.0, per_token=1.0, padding_weight=0.5)

        async def go():
            return await worker.submit([[1, 2], [3]]).future

        assert asyncio.run(go())["dense"].shape == (2, 2)
        assert worker.embedder.threads == {worker._thread} == {seen["cost_thread"]}
        assert worker._thread is not threading.current_thread()
    finally:
        assert worker.stop(5)


def test_a_failing_factory_raises_from_launch_and_ends_the_thread():
    def broken():
        raise ValueError("weights missing")

    with pytest.raises(ValueError, match="weights missing"):
        ModelWorker.launch(broken, "fake", **LIMITS)
    leftover = [t for t in threading.enumerate() if t.name == "model-fake"]
    for thread in leftover:
        thread.join(5)
    assert not any(t.is_alive() for t in leftover)


def test_a_failing_cost_model_also_fails_the_launch():
    def cost_of(embedder):
        raise RuntimeError("calibration crashed")

    with pytest.raises(RuntimeError, match="calibration crashed"):
        ModelWorker.launch(ThreadRecordingEmbedder, "fake", cost_of=cost_of, **LIMITS)


class CountingTrimmer(HeapTrimmer):
    """Records calls instead of trimming; ``idle_seconds`` short so the test does not wait long."""

    def __init__(self):
        super().__init__(0, idle_seconds=0.2)
        self.calls: list[str] = []
        self.idle = threading.Event()

    @property
    def active(self) -> bool:
        return True

    def maybe_trim(self, force: bool = False) -> bool:
        self.calls.append("check")
        return False

    def release(self) -> None:
        self.calls.append("release")
        if len(self.calls) > 1:
            self.idle.set()


def test_the_heap_is_released_after_loading_checked_after_batches_and_released_when_idle():
    trimmer = CountingTrimmer()
    worker = ModelWorker.launch(ThreadRecordingEmbedder, "fake", trimmer=trimmer, **LIMITS)
    try:
        assert trimmer.calls == ["release"]  # right after the load

        async def go():
            for _ in range(3):
                await worker.submit([[1]]).future

        asyncio.run(go())
        assert trimmer.idle.wait(5), "no release after the worker went idle"
        assert trimmer.calls[1:] == ["check", "check", "check", "release"]  # one check per batch, then idle
        # Idle again: no further release until new work has run.
        assert not threading.Event().wait(0.5) and trimmer.calls[-1] == "release" and len(trimmer.calls) == 5
    finally:
        worker.stop(5)


class FragmentingEmbedder:
    """The first batch leaves ~96 MB free inside this thread's heap (as a large request's varied
    tensor sizes do): blocks freed below one that stays allocated, so glibc cannot shrink the heap."""

    def __init__(self):
        self.keeper = None

    def embed(self, batch):
        if self.keeper is None:
            self.keeper = fragment_heap(96)
        return np.ones((len(batch), 2), np.float32)


@pytest.mark.skipif(not HeapTrimmer(1).active, reason="needs Linux with glibc (malloc_trim)")
def test_after_one_large_burst_later_batches_are_not_each_followed_by_a_trim():
    """Trimming after every batch made each batch fault its working memory back in (bulk -10-15%)."""
    trimmer = HeapTrimmer(32, interval=0.0, idle_seconds=60)
    worker = ModelWorker.launch(FragmentingEmbedder, "fake", trimmer=trimmer, **LIMITS)
    try:
        loaded = trimmer.trims  # the release right after the load

        async def go():
            for _ in range(12):
                await worker.submit([[1, 2, 3]]).future

        asyncio.run(go())
        assert trimmer.trims - loaded == 1, trimmer.trims - loaded  # after the fragmenting batch only
    finally:
        worker.stop(5)
