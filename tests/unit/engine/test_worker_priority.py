"""Small requests get batches of their own; bulk work still gets every other batch."""

from __future__ import annotations

import asyncio

from tests.unit.engine.test_worker import FakeEmbedder, inputs, run, wait_started, worker_for


def test_query_batch_has_no_bulk_inputs_and_bulk_is_not_starved():
    emb = FakeEmbedder(gated=True)

    async def main():
        with worker_for(emb, max_batch_size=8, coalesce_seconds=0.0) as w:
            bulk = w.submit(inputs(1, [5] * 64))
            await wait_started(emb)  # first bulk batch running
            queries = [w.submit(inputs(100 + k, [3])) for k in range(3)]  # three queries arrive meanwhile
            emb.gate.set()
            await asyncio.gather(bulk.future, *(q.future for q in queries))

    run(main())
    owners = [sorted({ids[0] // 1000 for ids in batch}) for batch in emb.batches]
    assert owners[0] == [1]
    assert owners[1] == [100, 101, 102]  # the queries, together, and nothing else
    assert owners[2] == [1]  # then bulk again


def test_stream_of_queries_alternates_with_bulk():
    emb = FakeEmbedder(gated=True)

    async def main():
        # 6 tokens a batch: two queries (3 tokens each) or one bulk input (5 tokens) per forward pass.
        with worker_for(emb, max_batch_size=8, max_batch_tokens=6, coalesce_seconds=0.0) as w:
            bulk = w.submit(inputs(1, [5] * 40))
            await wait_started(emb)
            for k in range(4):  # eight queries: four query batches, each followed by a bulk batch
                w.submit(inputs(100 + 2 * k, [3]))
                w.submit(inputs(101 + 2 * k, [3]))
            emb.gate.set()
            await bulk.future

    run(main())
    kinds = ["bulk" if batch[0][0] // 1000 == 1 else "query" for batch in emb.batches]
    assert kinds[:6] == ["bulk", "query", "bulk", "query", "bulk", "query"], kinds
