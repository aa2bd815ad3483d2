"""ModelWorker with a fake embedder: ordering, limits, failures, cancel, fairness, overload, stop."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading

import numpy as np
import pytest

from embedding_server.engine.errors import InferenceFailed, Overloaded
from embedding_server.engine.worker import ModelWorker

POISON = -1  # an input holding this id makes its whole batch raise


class FakeEmbedder:
    """Records every batch; row = [first id, length, sum]; can be held at a gate."""

    def __init__(self, gated: bool = False):
        self.batches: list[list[list[int]]] = []
        self.started = threading.Event()  # set once the first batch is inside embed()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        self.batches.append([list(ids) for ids in batch])
        self.started.set()
        assert self.gate.wait(10), "test never released the gate"
        if any(POISON in ids for ids in batch):
            raise RuntimeError("boom")
        return np.array([[ids[0], len(ids), sum(ids)] for ids in batch], dtype=np.float32)

    def all_codes(self) -> list[int]:
        return [ids[0] for batch in self.batches for ids in batch]


def inputs(request: int, lengths) -> list[list[int]]:
    """Input i of ``request`` is ``length`` copies of the code request*1000 + i."""
    return [[request * 1000 + i] * n for i, n in enumerate(lengths)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def dense_of(ticket) -> np.ndarray:
    """The vectors a ticket resolves to (its dense outputs)."""
    return (await ticket.future)["dense"]


@contextlib.contextmanager
def worker_for(embedder: FakeEmbedder, start: bool = True, **kw):
    kw = {"max_batch_tokens": 10_000, "max_batch_size": 8, "max_queued_inputs": 10_000, **kw}
    worker = ModelWorker(embedder, "fake", **kw)
    if start:
        worker.start()
    try:
        yield worker
    finally:
        embedder.gate.set()
        if worker._thread.ident is not None:  # started, by us or by the test
            assert worker.stop(10)


async def wait_started(embedder: FakeEmbedder) -> None:
    assert await asyncio.to_thread(embedder.started.wait, 10)


def test_results_in_input_order_and_batches_within_limits():
    rng = random.Random(1)
    lengths = [rng.randint(1, 50) for _ in range(60)]
    emb, stats = FakeEmbedder(), []

    async def main():
        with worker_for(emb, max_batch_size=8, max_batch_tokens=200, on_batch=stats.append) as w:
            return await dense_of(w.submit(inputs(0, lengths)))

    rows = run(main())
    assert rows.shape == (60, 3) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[:, 0], np.arange(60))
    np.testing.assert_array_equal(rows[:, 1], lengths)
    assert sorted(emb.all_codes()) == list(range(60))
    assert len(emb.batches) > 1, "sorting by length must have reordered something across batches"
    for batch in emb.batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or len(batch) * max(map(len, batch)) <= 200
    assert [(s.size, s.tokens, s.padded_tokens, s.failed) for s in stats] == [
        (len(b), sum(map(len, b)), len(b) * max(map(len, b)), False) for b in emb.batches]


def test_concurrent_requests_each_get_their_rows():
    emb = FakeEmbedder()
    rng = random.Random(2)
    requests = {r: [rng.randint(1, 30) for _ in range(rng.randint(1, 20))] for r in range(1, 6)}

    async def main():
        with worker_for(emb, max_batch_size=4) as w:
            tickets = {r: w.submit(inputs(r, lengths)) for r, lengths in requests.items()}
            return {r: await dense_of(t) for r, t in tickets.items()}

    results = run(main())
    for r, lengths in requests.items():
        np.testing.assert_array_equal(results[r][:, 0], [r * 1000 + i for i in range(len(lengths))])
        np.testing.assert_array_equal(results[r][:, 1], lengths)


def test_failed_batch_fails_only_its_request():
    emb = FakeEmbedder(gated=True)
    observed: list[tuple[bool, bool]] = []

    async def main():
        with worker_for(emb, max_batch_size=1) as w:
            w.on_batch = lambda stats: observed.append((stats.failed, w.last_batch_failed))
            a = w.submit(inputs(1, [3]))
            await wait_started(emb)
            b = w.submit([[POISON, 5]])
            c = w.submit(inputs(3, [2]))
            emb.gate.set()
            ra = await dense_of(a)
            with pytest.raises(InferenceFailed, match="RuntimeError"):
                await b.future
            return ra, await dense_of(c), w

    ra, rc, w = run(main())
    assert ra[0, 0] == 1000 and rc[0, 0] == 3000
    assert observed == [(False, False), (True, True), (False, False)]
    assert w.batches_run == 2


def test_failure_drops_rest_of_request_and_worker_keeps_serving():
    emb = FakeEmbedder()

    async def main():
        with worker_for(emb, max_batch_size=1) as w:
            bad = w.submit([[POISON], [7000, 7000], [7001, 7001, 7001]])
            with pytest.raises(InferenceFailed):
                await bad.future
            assert w.last_batch_failed
            assert w.queued_inputs == 0
            good = await dense_of(w.submit(inputs(8, [4])))
            assert not w.last_batch_failed
            assert w.alive
            return good

    good = run(main())
    assert good[0, 0] == 8000
    # The failed request's other inputs never reached the model.
    assert emb.batches == [[[POISON]], [[8000] * 4]]


def test_cancel_drops_queued_inputs():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, max_batch_size=2) as w:
            a = w.submit(inputs(1, [3]))
            await wait_started(emb)
            b = w.submit(inputs(2, [3, 4, 5]))
            c = w.submit(inputs(3, [6]))
            assert w.queued_inputs == 4
            w.cancel(b)
            assert w.queued_inputs == 1
            emb.gate.set()
            await a.future
            await c.future
            assert not b.future.done()
            b.future.cancel()

    run(main())
    assert not any(code // 1000 == 2 for code in emb.all_codes())
    assert sorted(emb.all_codes()) == [1000, 3000]


def test_single_query_overtakes_bulk_request():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, max_batch_size=8) as w:
            bulk = w.submit(inputs(1, [10] * 200))
            await wait_started(emb)  # batch 0 (bulk only) is running
            query = w.submit(inputs(2, [10]))
            emb.gate.set()
            return await dense_of(bulk), await dense_of(query)

    bulk, query = run(main())
    holding = [i for i, b in enumerate(emb.batches) if 2000 in {ids[0] for ids in b}]
    assert holding == [1], f"query waited {holding} batches"
    assert query[0, 0] == 2000
    np.testing.assert_array_equal(bulk[:, 0], 1000 + np.arange(200))
    assert all(len(b) <= 8 for b in emb.batches)


def test_overload_beyond_max_queued_inputs():
    emb = FakeEmbedder()

    async def main():
        with worker_for(emb, start=False, max_queued_inputs=10) as w:
            a = w.submit(inputs(1, [1] * 8))
            with pytest.raises(Overloaded, match="max_queued_inputs=10") as info:
                w.submit(inputs(2, [1] * 5))
            assert info.value.retry_after_seconds >= 1
            assert w.queued_inputs == 8
            b = w.submit(inputs(3, [1] * 2))  # exactly at the limit: accepted
            assert w.queued_inputs == 10
            w.start()
            await a.future
            await b.future
            # With nothing queued, even a request over the limit is accepted (else it could never run).
            return await dense_of(w.submit(inputs(4, [1] * 25)))

    assert run(main()).shape == (25, 3)
    assert 2000 not in emb.all_codes()


def test_stop_drains_queue_then_ends_thread():
    emb = FakeEmbedder()

    async def main():
        w = ModelWorker(emb, "fake", max_batch_tokens=100, max_batch_size=4, max_queued_inputs=1000)
        tickets = [w.submit(inputs(r, [r] * 5)) for r in range(1, 4)]
        w.start()
        assert await asyncio.to_thread(w.stop, 10)
        assert not w.alive
        with pytest.raises(Overloaded, match="shutting down"):
            w.submit(inputs(9, [1]))
        return [await dense_of(t) for t in tickets]

    results = run(main())
    for r, rows in enumerate(results, start=1):
        np.testing.assert_array_equal(rows[:, 0], r * 1000 + np.arange(5))
    assert len(emb.all_codes()) == 15


def test_empty_submission_resolves_and_worker_survives():
    async def main():
        with worker_for(FakeEmbedder()) as w:
            assert len((await asyncio.wait_for(w.submit([]).future, 2))["dense"]) == 0
            after = await asyncio.wait_for(dense_of(w.submit(inputs(1, [3]))), 5)
            assert w.alive
            return after

    assert run(main())[0, 0] == 1000
