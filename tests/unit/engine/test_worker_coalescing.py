"""Coalescing: concurrent clients' next requests share a batch; a sequential client never waits."""

from __future__ import annotations

import asyncio
import time

from tests.unit.engine.test_worker import FakeEmbedder, inputs, run, wait_started, worker_for


def test_requests_following_a_shared_batch_are_coalesced():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, coalesce_seconds=5.0) as w:
            first = w.submit(inputs(0, [3]))
            await wait_started(emb)  # the worker is busy: the next three queue up together
            round1 = [w.submit(inputs(r, [3])) for r in (1, 2, 3)]
            emb.gate.set()
            await asyncio.gather(first.future, *(t.future for t in round1))
            # Round 2: the three "clients" come back one after another, 50 ms apart.
            round2 = []
            for r in (4, 5, 6):
                round2.append(w.submit(inputs(r, [3])))
                await asyncio.sleep(0.05)
            await asyncio.gather(*(t.future for t in round2))

    run(main())
    codes = [[ids[0] for ids in batch] for batch in emb.batches]
    assert codes[-1] == [4000, 5000, 6000], codes  # one batch, not 1 + 2


def test_sequential_client_is_not_delayed():
    emb = FakeEmbedder()

    async def main():
        with worker_for(emb, coalesce_seconds=5.0) as w:
            started = time.monotonic()
            for r in range(5):
                await w.submit(inputs(r, [4])).future
            return time.monotonic() - started

    assert run(main()) < 2.5  # five requests, none waited for the 5 s window
    assert [len(b) for b in emb.batches] == [1] * 5
