"""Each request's timeline (engine.types.Timeline): the worker notes every forward pass its inputs ran in, with the
batch's size and tokens and this request's share, in wall-clock order."""

from __future__ import annotations

import asyncio
import time

from tests.unit.engine.test_worker import FakeEmbedder, inputs, run, wait_started, worker_for


def test_each_forward_pass_is_noted_on_the_tickets_it_served():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, max_batch_size=4) as w:
            before = time.time_ns()
            first = w.submit(inputs(1, [3]))
            await wait_started(emb)  # the first request alone in a batch; the next two share batches
            big, small = w.submit(inputs(2, [2] * 6)), w.submit(inputs(3, [5]))
            emb.gate.set()
            await asyncio.gather(first.future, big.future, small.future)
            return before, first, big, small

    before, first, big, small = run(main())
    (alone,) = first.forwards
    assert (alone.batch_size, alone.batch_tokens, alone.inputs, alone.slices) == (1, 3, 1, 1)
    assert before <= alone.start_ns <= alone.end_ns <= time.time_ns()
    assert sum(f.inputs for f in big.forwards) == 6 and sum(f.inputs for f in small.forwards) == 1
    assert all(f.batch_size <= 4 and f.inputs <= f.batch_size for f in big.forwards + small.forwards)
    for forward in big.forwards:
        assert alone.end_ns <= forward.start_ns <= forward.end_ns
    shared = [f for f in big.forwards if f in small.forwards]
    assert all(f.batch_size == f.inputs + 1 for f in shared)  # the same pass, seen by both requests
