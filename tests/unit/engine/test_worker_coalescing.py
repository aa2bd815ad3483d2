"""Coalescing: concurrent clients' next requests share a batch; a sequential client never waits.

The coalescing window is an hour here: what is stated is who waits for whom, not how long. A batch that waited
for a client who never comes would hang the test until ``run``'s 30 s limit, and fail it.
"""

from __future__ import annotations

import asyncio

from tests.unit.engine.test_worker import FakeEmbedder, inputs, run, wait_started, worker_for

WINDOW = 3600.0  # seconds: longer than any test, so only the arrival of the clients ends a wait


def test_requests_following_a_shared_batch_are_coalesced():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, coalesce_seconds=WINDOW) as w:
            first = w.submit(inputs(0, [3]))
            await wait_started(emb)  # the worker is busy: the next three queue up together
            round1 = [w.submit(inputs(r, [3])) for r in (1, 2, 3)]
            emb.gate.set()
            await asyncio.gather(first.future, *(t.future for t in round1))
            # Round 2: the three "clients" come back one after another, 50 ms apart (time enough for a worker
            # that did not wait to take the first alone, as it did before coalescing).
            round2 = []
            for r in (4, 5, 6):
                round2.append(w.submit(inputs(r, [3])))
                await asyncio.sleep(0.05)
            await asyncio.gather(*(t.future for t in round2))

    run(main())
    codes = [[ids[0] for ids in batch] for batch in emb.batches]
    assert codes == [[0], [1000, 2000, 3000], [4000, 5000, 6000]], codes  # round 2 in one batch, not 1 + 2


def test_sequential_client_is_not_delayed():
    """Each request is submitted once the previous one is answered: its last batch served one request, so the
    worker never waits for another (with an hour's window, waiting would hang the test)."""
    emb = FakeEmbedder()

    async def main():
        with worker_for(emb, coalesce_seconds=WINDOW) as w:
            return [(await w.submit(inputs(r, [4])).future)["dense"][0, 0] for r in range(5)]

    assert run(main()) == [0, 1000, 2000, 3000, 4000]
    assert [len(b) for b in emb.batches] == [1] * 5


def test_a_batch_of_requests_wakes_the_event_loop_once():
    """The worker resolves all the requests a batch completes in one call into the event loop (each call is a
    wake-up of the loop, and on two cores its CPU is the forward's)."""
    emb = FakeEmbedder(gated=True)
    wakes = []

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a, **k: (wakes.append(a[0]), real(*a, **k))[1]
        with worker_for(emb) as w:
            first = w.submit(inputs(0, [3]))
            await wait_started(emb)  # the worker is busy: the next eight queue up together
            batch = [w.submit(inputs(r, [3])) for r in range(1, 9)]
            emb.gate.set()
            await asyncio.gather(first.future, *(t.future for t in batch))

    run(main())
    assert [len(b) for b in emb.batches] == [1, 8]
    settles = [f for f in wakes if getattr(f, "__module__", "") == "embedding_server.engine.work_queue"]
    assert len(settles) == 2, wakes  # one per batch, not one per request
