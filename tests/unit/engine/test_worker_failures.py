"""Failures stay with the request that caused them; a dead worker fails everything waiting at once."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedding_server.engine import worker as worker_module
from embedding_server.engine.errors import InferenceFailed, ModelUnavailable
from tests.unit.engine.test_worker import POISON, FakeEmbedder, dense_of, inputs, run, worker_for


class WorkerKilled(BaseException):
    """Not an Exception: escapes every handler of the worker loop, as a bug in it would."""


class KillingEmbedder(FakeEmbedder):
    def embed(self, batch):
        if any(ids[0] == 666 for ids in batch):
            self.batches.append(batch)
            self.started.set()
            assert self.gate.wait(10), "test never released the gate"
            raise WorkerKilled("simulated crash of the worker thread")
        return super().embed(batch)


def test_a_bad_input_fails_only_its_own_request():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, max_batch_size=8, coalesce_seconds=0.0) as w:
            first = w.submit(inputs(1, [3]))
            await asyncio.to_thread(emb.started.wait, 10)
            good_a, bad, good_b = w.submit(inputs(2, [4])), w.submit([[POISON, 5]]), w.submit(inputs(3, [2]))
            emb.gate.set()
            await first.future
            with pytest.raises(InferenceFailed):
                await bad.future
            return await dense_of(good_a), await dense_of(good_b), w

    a, b, w = run(main())
    assert a[0, 0] == 2000 and b[0, 0] == 3000
    assert not w.last_batch_failed or w.batches_run >= 3
    batches = [sorted(ids[0] for ids in batch) for batch in emb.batches]
    assert batches[1] == [POISON, 2000, 3000]  # together first; then each request alone
    assert sorted(batches[2:], key=lambda b: b[0]) == [[POISON], [2000], [3000]]


def test_metrics_are_recorded_before_the_result_is_delivered(monkeypatch):
    events = []
    real_settle, real_results = worker_module.settle, worker_module.settle_results
    monkeypatch.setattr(worker_module, "settle", lambda *a, **k: (events.append("settle"), real_settle(*a, **k)))
    monkeypatch.setattr(worker_module, "settle_results",
                        lambda tickets: (events.extend(["settle"] * len(tickets)), real_results(tickets)))

    async def main():
        with worker_for(FakeEmbedder(), on_batch=lambda stats: events.append("observe")) as w:
            await w.submit(inputs(1, [3])).future
            with pytest.raises(InferenceFailed):
                await w.submit([[POISON]]).future

    run(main())
    assert events == ["observe", "settle", "observe", "settle"]


def test_a_dead_worker_fails_every_waiting_request_at_once():
    emb = KillingEmbedder(gated=True)
    deaths = []

    async def main():
        with worker_for(emb, max_batch_size=1, on_death=deaths.append) as w:
            running = w.submit([[666, 1]])
            await asyncio.to_thread(emb.started.wait, 10)
            queued = [w.submit(inputs(k, [3])) for k in range(1, 4)]
            emb.gate.set()
            for ticket in [running, *queued]:
                with pytest.raises(ModelUnavailable, match="stopped working"):
                    await asyncio.wait_for(ticket.future, 10)
            with pytest.raises(ModelUnavailable):
                w.submit(inputs(9, [1]))
            return w

    w = run(main())
    assert not w.alive and w.died.startswith("WorkerKilled") and deaths == [w.died]
    assert [ids[0] for batch in emb.batches for ids in batch] == [666]  # nothing ran after the crash


def test_a_dead_worker_fails_the_requests_of_a_sliced_job_in_progress():
    from tests.unit.engine.test_worker_slicing import SlicedEmbedder

    class CrashingSlices(SlicedEmbedder):
        def _steps(self, batch):
            self.log.append((batch[0][0], 0))
            yield  # the first slice ends here
            raise WorkerKilled("crash in the middle of a long job")

    emb = CrashingSlices()

    async def main():
        with worker_for(emb, slice_seconds=0.0) as w:
            doc = w.submit(inputs(1, [1000]))
            with pytest.raises(ModelUnavailable):
                await asyncio.wait_for(doc.future, 10)
            return w

    assert not run(main()).alive and emb.log == [(1000, 0)]


def test_results_still_arrive_in_order_after_isolation_retries():
    emb = FakeEmbedder()

    async def main():
        with worker_for(emb, max_batch_size=8) as w:
            tickets = [w.submit(inputs(k, [2, 3])) for k in range(1, 4)] + [w.submit([[POISON], [7, 7]])]
            results = await asyncio.gather(*(t.future for t in tickets), return_exceptions=True)
            return results

    *good, bad = run(main())
    assert isinstance(bad, InferenceFailed)
    for k, outputs in enumerate(good, start=1):
        np.testing.assert_array_equal(outputs["dense"][:, 0], [k * 1000, k * 1000 + 1])
