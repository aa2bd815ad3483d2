"""Batch planning: which queued inputs go into the next forward pass.

Pure functions over plain data, so the policy is testable without a model:

1. Fairness: requests with fewer remaining inputs go first, and inputs are taken
   round-robin across requests. With ``only="small"`` a batch is formed from small
   (interactive) requests alone (a query does not share its forward pass with bulk inputs),
   with ``only="large"`` from the others; the worker alternates the two while both wait, so
   a query waits at most for one slice of the batch already running and bulk work still gets
   every other turn.
2. Packing: the chosen candidates are sorted by token length and cut where a batch's
   estimated cost (a fixed per-forward overhead plus tokens, padding included at the
   model's padding weight) is lowest, within the token budget and the batch-size cap.
   The budget counts the tokens a forward computes: padded length x count for a forward
   that computes on padding (weight 1), the real tokens for a padding-free one (weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


class Pending(Protocol):
    """A queued input: its token length and the request it belongs to."""

    length: int
    request_id: int


@dataclass(frozen=True)
class CostModel:
    """Estimated forward time = overhead + per_token x (tokens + padding_weight x padding tokens).

    ``padding_weight`` is 1 for a forward that computes on padding like on real tokens, near 0
    for a padding-free one (any unit).
    """

    overhead: float = 64.0
    per_token: float = 1.0
    padding_weight: float = 1.0

    def computed_tokens(self, count: int, padded_length: int, tokens: int | None = None) -> float:
        """Tokens one forward of ``count`` inputs padded to ``padded_length`` (``tokens`` real ones)
        computes: the real ones plus the padding at its weight."""
        padded = count * padded_length
        real = padded if tokens is None else tokens
        return real + self.padding_weight * (padded - real)

    def batch_cost(self, count: int, padded_length: int, tokens: int | None = None) -> float:
        """Cost of one forward of ``count`` inputs padded to ``padded_length`` (``tokens`` real ones)."""
        return self.overhead + self.per_token * self.computed_tokens(count, padded_length, tokens)


def fair_order(queues: Sequence[Sequence[Pending]], limit: int | None = None) -> list[Pending]:
    """Interleave per-request queues: smallest request first, then round-robin by position.

    ``queues`` are in arrival order; ties on size keep arrival order. Stops after ``limit``.
    """
    ordered = sorted((q for q in queues if q), key=len)
    out: list[Pending] = []
    depth = len(ordered[-1]) if ordered else 0
    for k in range(depth):
        for queue in ordered:
            if k < len(queue):
                out.append(queue[k])
                if limit is not None and len(out) >= limit:
                    return out
    return out


# Most tokens an interactive request may hold (a handful of queries). A single long document is not
# interactive: it runs in slices, with interactive batches in between (see the worker).
INTERACTIVE_TOKENS = 512


def is_small(queue: Sequence[Pending], max_size: int) -> bool:
    """A request small enough to count as interactive (a query, a handful of short texts)."""
    return len(queue) <= max(1, max_size // 4) and sum(p.length for p in queue) <= INTERACTIVE_TOKENS


def plan_batch(
    queues: Sequence[Sequence[Pending]],
    max_tokens: int,
    max_size: int,
    cost: CostModel = CostModel(),
    only: str | None = None,
) -> list[Pending]:
    """Choose the inputs of the next forward pass (never empty if anything is queued).

    ``only="small"`` / ``"large"``: plan over small / other requests alone, when there are any.
    """
    if only is not None:
        want_small = only == "small"
        kept = [q for q in queues if q and is_small(q, max_size) == want_small]
        queues = kept or queues
    order = fair_order(queues, limit=max_size)
    if not order:
        return []
    # Candidates: a prefix of the fair order whose computed tokens fit the budget.
    candidates = [order[0]]
    longest, tokens = order[0].length, order[0].length
    for item in order[1:]:
        padded = max(longest, item.length)
        if cost.computed_tokens(len(candidates) + 1, padded, tokens + item.length) > max_tokens:
            break
        candidates.append(item)
        longest, tokens = padded, tokens + item.length
    head = order[0]
    candidates.sort(key=lambda p: p.length)
    segments = cut_segments([p.length for p in candidates], cost)
    for start, end in segments:
        if any(p is head for p in candidates[start:end]):
            return candidates[start:end]
    raise AssertionError("head item lost")  # pragma: no cover


def cut_segments(lengths: Sequence[int], cost: CostModel) -> list[tuple[int, int]]:
    """Split sorted ``lengths`` into contiguous batches of least total estimated cost (DP)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    prefix = [0]
    for length in lengths:
        prefix.append(prefix[-1] + length)
    for end in range(1, n + 1):
        for start in range(end):
            value = best[start] + cost.batch_cost(end - start, lengths[end - 1], prefix[end] - prefix[start])
            if value < best[end]:
                best[end], cut[end] = value, start
    segments = []
    end = n
    while end > 0:
        segments.append((cut[end], end))
        end = cut[end]
    return segments[::-1]
