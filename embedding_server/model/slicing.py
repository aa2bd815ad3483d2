"""Bounded units of forward work: how a long padding-free forward is cut, and what its pieces cost.

A forward of 8,192 tokens through BGE-M3 takes about a minute on two cores. To let short requests
run in the middle of it, the padding-free forward is a generator that yields between units of work
of bounded cost (see ``PackedEncoder.steps``): dense products and layer norms over chunks of tokens,
attention over blocks of query rows. ``ForwardCost`` is measured once per model at load and turns
a time budget per unit into those chunk sizes, so one setting in milliseconds fits MiniLM (a
2,048-token batch in ~0.25 s) and BGE-M3 (~8 s) alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

# Fewest tokens per dense chunk: smaller products lose matrix-multiply efficiency (BGE-M3's four products
# on 2 threads: 131 GFLOP/s at 144 rows, 147 at 272, 170 at 544, 174 at 2,048).
MIN_ROWS = 512
# Fewest query rows per attention block, when one head over all rows is over a unit's budget: the fused
# kernel tiles fewer rows in smaller tiles (8,192 keys: 161 GFLOP/s at 256 rows, 184 at 1,024).
MIN_BLOCK_ROWS = 256


class Slicing(NamedTuple):
    """Unit sizes of a forward: dense work over at most ``rows`` tokens (None: all), attention over at
    most ``pairs`` (query, key) pairs per unit, counted over all heads (blocks of heads, then of at least
    ``block_rows`` query rows)."""

    rows: int | None = None
    pairs: float = math.inf
    block_rows: int = MIN_BLOCK_ROWS


WHOLE = Slicing()  # no slicing: each layer in one piece


@dataclass(frozen=True)
class ForwardCost:
    """Measured cost of the padding-free forward on this machine, per layer."""

    layers: int
    token_ms: float  # query/key/value, output, feed-forward and norms of one token in one layer
    pair_ms: float  # attention of one (query, key) pair in one layer, all heads

    def slicing(self, unit_ms: float) -> Slicing:
        """Unit sizes so that one unit of dense work or attention takes about ``unit_ms``."""
        rows = max(MIN_ROWS, int(unit_ms / max(self.token_ms, 1e-9)))
        rows -= rows % 16
        return Slicing(rows, unit_ms / max(self.pair_ms, 1e-12))


def _best_ms(fn, repeats: int = 3) -> float:
    fn()  # first call: one-off allocation and kernel selection
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


@torch.inference_mode()
def measure_cost(packed) -> ForwardCost:
    """Time one layer's dense work on MIN_ROWS tokens and one sequence's attention over 512 tokens."""
    layer, hidden, heads = packed.layers[0], packed.hidden, packed.heads
    dtype = layer.qkv.weight.dtype  # of the products; the residual stream is float32
    x = torch.randn(MIN_ROWS, hidden, generator=torch.Generator().manual_seed(0))
    attended = torch.randn(MIN_ROWS, hidden, generator=torch.Generator().manual_seed(1)).to(dtype)

    def dense():
        layer.qkv(x)
        packed._tail(layer, attended, x)

    q = torch.randn(1, heads, 512, hidden // heads, generator=torch.Generator().manual_seed(2)).to(dtype)
    token_ms = _best_ms(dense) / MIN_ROWS
    pair_ms = _best_ms(lambda: F.scaled_dot_product_attention(q, q, q)) / (512 * 512)
    return ForwardCost(len(packed.layers), token_ms, pair_ms)
