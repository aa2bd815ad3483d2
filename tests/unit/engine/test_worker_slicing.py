"""Bulk work runs in slices; interactive requests run between two slices, and abandoned jobs stop."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np

from embedding_server.model.job import EmbedJob
from tests.unit.engine.test_worker import dense_of, inputs, run, worker_for


class SlicedEmbedder:
    """Each batch's job has one unit per 100 tokens (at least one); every unit is logged as (first code, unit).
    The first unit of the first batch waits at ``gate``."""

    def __init__(self):
        self.log: list[tuple[int, int]] = []
        self.unit_ms: list[float | None] = []
        self.started, self.gate = threading.Event(), threading.Event()

    def start(self, batch, unit_ms=None, heads=None):
        self.unit_ms.append(unit_ms)
        return EmbedJob(self._steps(batch))

    def _steps(self, batch):
        code = batch[0][0]
        for unit in range(max(1, math.ceil(sum(map(len, batch)) / 100))):
            self.log.append((code, unit))
            if not self.started.is_set():
                self.started.set()
                assert self.gate.wait(10), "test never released the gate"
            yield
        return {"dense": np.array([[ids[0], len(ids), 0] for ids in batch], dtype=np.float32)}


def owners(log):
    return [code // 1000 for code, _ in log]


def test_queries_run_between_slices_of_a_long_document():
    emb = SlicedEmbedder()

    async def main():
        with worker_for(emb, slice_seconds=0.0, coalesce_seconds=0.0) as w:  # one unit per slice
            doc = w.submit(inputs(1, [1000]))  # 10 units
            assert await asyncio.to_thread(emb.started.wait, 10)
            queries = [w.submit(inputs(100 + k, [8])) for k in range(2)]
            emb.gate.set()
            got = await dense_of(doc), *[await dense_of(q) for q in queries]
            later = w.submit(inputs(200, [8]))  # nothing else running: at once
            return got, await dense_of(later)

    (doc, *queries), later = run(main())
    assert doc[0, 1] == 1000 and [q[0, 0] for q in queries] == [100_000, 101_000]
    # The document's first unit, then both queries together, then the rest of the document.
    assert owners(emb.log) == [1, 100, 1, 1, 1, 1, 1, 1, 1, 1, 1, 200]
    assert emb.unit_ms[0] == 0.0 and emb.unit_ms[1] is None  # bulk in units of a quarter slice; queries whole


def test_a_stream_of_queries_alternates_with_slices():
    emb = SlicedEmbedder()

    async def main():
        with worker_for(emb, slice_seconds=0.0, coalesce_seconds=0.0, max_batch_size=1) as w:
            doc = w.submit(inputs(1, [600]))  # 6 units
            assert await asyncio.to_thread(emb.started.wait, 10)
            queries = [w.submit(inputs(100 + k, [8])) for k in range(4)]  # one query per batch
            emb.gate.set()
            await asyncio.gather(doc.future, *(q.future for q in queries))

    run(main())
    assert owners(emb.log) == [1, 100, 1, 101, 1, 102, 1, 103, 1, 1]


def test_long_inputs_are_not_interactive():
    """A single input of more than 512 tokens is a bulk job even though it is one input: it runs in slices
    and queries overtake it (and it does not overtake a running bulk job's next slice)."""
    emb = SlicedEmbedder()

    async def main():
        with worker_for(emb, slice_seconds=0.0, coalesce_seconds=0.0) as w:
            first = w.submit(inputs(1, [300]))  # 3 units, short: interactive
            assert await asyncio.to_thread(emb.started.wait, 10)
            doc = w.submit(inputs(2, [600]))
            query = w.submit(inputs(3, [8]))
            emb.gate.set()
            await asyncio.gather(first.future, doc.future, query.future)

    run(main())
    assert owners(emb.log) == [1, 1, 1, 3, 2, 2, 2, 2, 2, 2]


def test_a_job_whose_clients_all_left_stops_between_slices():
    emb = SlicedEmbedder()

    async def main():
        with worker_for(emb, slice_seconds=0.0) as w:
            doc = w.submit(inputs(1, [1000]))
            assert await asyncio.to_thread(emb.started.wait, 10)
            w.cancel(doc)  # the client went away during the first slice
            emb.gate.set()
            return await dense_of(w.submit(inputs(2, [8])))

    assert run(main())[0, 0] == 2000
    assert owners(emb.log) == [1, 2]  # the document's other nine units never ran


def test_slices_are_timed_by_the_budget():
    """With a budget far above the job's cost, the whole document runs in one slice."""
    emb = SlicedEmbedder()
    emb.started.set()
    stats = []

    async def main():
        with worker_for(emb, slice_seconds=60.0, on_batch=stats.append) as w:
            return await dense_of(w.submit(inputs(1, [1000])))

    run(main())
    assert owners(emb.log) == [1] * 10
    assert [s.slices for s in stats] == [1] and emb.unit_ms == [30_000.0]


class HeadsEmbedder(SlicedEmbedder):
    """Records the heads each batch asks for; every head's output is the input's first id."""

    def __init__(self):
        super().__init__()
        self.started.set()
        self.heads: list[frozenset[str]] = []

    def start(self, batch, unit_ms=None, heads=None):
        self.heads.append(heads)
        return EmbedJob(iter_outputs(batch, heads))


def iter_outputs(batch, heads):
    yield
    return {head: (np.array([[ids[0], len(ids)] for ids in batch], np.float32) if head == "dense"
                   else [f"{head}:{ids[0]}" for ids in batch]) for head in heads}


def test_requests_asking_for_different_outputs_share_one_forward():
    emb = HeadsEmbedder()

    async def main():
        with worker_for(emb, start=False) as w:
            dense = w.submit(inputs(1, [4, 5]))
            sparse = w.submit(inputs(2, [3]), frozenset({"sparse"}))
            both = w.submit(inputs(3, [6]), frozenset({"dense", "colbert"}))
            w.start()
            return await dense.future, await sparse.future, await both.future

    dense, sparse, both = run(main())
    assert emb.heads == [frozenset({"dense", "sparse", "colbert"})]  # one batch, the union of the heads
    assert set(dense) == {"dense"} and dense["dense"][:, 0].tolist() == [1000, 1001]
    assert sparse == {"sparse": ["sparse:2000"]}
    assert set(both) == {"dense", "colbert"} and both["colbert"] == ["colbert:3000"]
