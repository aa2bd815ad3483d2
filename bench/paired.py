"""Bulk throughput of the raw reference and of the server, measured interleaved, batch by batch.

The bulk target is a ratio of two ~20 s measurements. Run one after the other, they can see two
different machines: on the shared 2-core VM this was built on, the rounds of one run gave 0.95,
0.81 and 0.84, and identical in-process runs differ by up to 30% from one minute to the next.
Here the reference's length-sorted batches and the server's 32-input requests alternate one by
one (~0.3 s each), so a drift lasting longer than a second or so hits both sides alike.

Each side's throughput is its sentences over the sum of its own timed steps: for the reference,
tokenising all texts (once, as `RawModel.bulk` does) plus each batch's pad, forward and pooling;
for the server, each request's whole round trip as the client sees it (JSON encoding, HTTP, the
server's work, JSON decoding). The server still gets one request at a time on one connection,
as in the 1-client scenario.
"""
from __future__ import annotations

import time
from itertools import zip_longest

from . import load
from .reference import RawModel, bulk_result


def bulk(raw_model: RawModel, base_url: str, texts: list[str], requests: list[list[str]]) -> dict:
    """{"raw": reference bulk result, "server": 1-client bulk result}, interleaved step by step."""
    tokenize_s, batches = raw_model.batches(texts)
    raw_ms: list[float] = []
    server_s = 0.0
    with load.client(base_url) as c:
        for batch, request in zip_longest(batches, requests):
            if batch is not None:
                raw_ms.append(raw_model.run_batch(batch))
            if request is not None:
                t0 = time.perf_counter()
                load.embed(c, request)
                server_s += time.perf_counter() - t0
    raw = bulk_result(len(texts), tokenize_s + sum(raw_ms) / 1e3, raw_ms)
    n = sum(len(r) for r in requests)
    return {"raw": raw, "server": {"clients": 1, "sentences_per_s": n / server_s, "elapsed_s": server_s,
                                   "interleaved": True}}
