"""fair_order, cut_segments and plan_batch on plain data (no model, no threads)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from embedding_server.engine.scheduler import CostModel, cut_segments, fair_order, plan_batch


@dataclass(eq=False)
class P:
    length: int
    request_id: int
    tag: str = ""

    def __repr__(self) -> str:
        return f"P({self.tag or self.request_id}:{self.length})"


def queue(request_id: int, lengths, prefix: str = "") -> list[P]:
    """A request's queue as the worker keeps it: sorted by length."""
    return [P(n, request_id, f"{prefix or request_id}{i}") for i, n in enumerate(sorted(lengths))]


def tags(items) -> list[str]:
    return [p.tag for p in items]


def padded_cost(batch) -> int:
    return len(batch) * max(p.length for p in batch)


# ----- fair_order ------------------------------------------------------------------------
def test_fair_order_smallest_first_round_robin():
    a, b, c = queue(0, [1, 1, 1], "a"), queue(1, [1], "b"), queue(2, [1, 1], "c")
    assert tags(fair_order([a, b, c])) == ["b0", "c0", "a0", "c1", "a1", "a2"]


def test_fair_order_ties_keep_arrival_order():
    a, b = queue(0, [1, 1], "a"), queue(1, [1, 1], "b")
    assert tags(fair_order([a, b])) == ["a0", "b0", "a1", "b1"]
    assert tags(fair_order([b, a])) == ["b0", "a0", "b1", "a1"]


def test_fair_order_limit():
    a, b, c = queue(0, [1, 1, 1], "a"), queue(1, [1], "b"), queue(2, [1, 1], "c")
    assert tags(fair_order([a, b, c], limit=4)) == ["b0", "c0", "a0", "c1"]
    assert tags(fair_order([a, b, c], limit=1)) == ["b0"]
    assert len(fair_order([a, b, c], limit=100)) == 6


def test_fair_order_empty():
    assert fair_order([]) == []
    assert fair_order([[], []]) == []
    assert tags(fair_order([[], queue(0, [3], "x"), []])) == ["x0"]


# ----- cut_segments ----------------------------------------------------------------------
def test_cut_no_overhead_distinct_lengths_each_alone():
    # Without overhead, padding is pure waste: distinct lengths are never grouped.
    assert cut_segments([1, 2, 3, 4], CostModel(overhead=0)) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_cut_huge_overhead_one_batch():
    assert cut_segments([1, 5, 50, 500], CostModel(overhead=1e9)) == [(0, 4)]


def test_cut_small_ones_apart_from_outlier():
    # together: 10 + 5*100 = 510; [1]*4 | [100]: 14 + 110 = 124; all alone: 4*11 + 110 = 154.
    assert cut_segments([1, 1, 1, 1, 100], CostModel(overhead=10)) == [(0, 4), (4, 5)]


def test_cut_trades_padding_against_overhead():
    # [10,10,12]: together 5 + 36 = 41 < split 25 + 17 = 42.
    assert cut_segments([10, 10, 12], CostModel(overhead=5)) == [(0, 3)]
    # [10,10,20]: together 5 + 60 = 65 > split 25 + 25 = 50.
    assert cut_segments([10, 10, 20], CostModel(overhead=5)) == [(0, 2), (2, 3)]


def test_cut_per_token_weight():
    # Cheap tokens make the overhead dominate: [1, 10] together costs 10 + 0.1*20 = 12 < 10+0.1 + 10+1.
    assert cut_segments([1, 10], CostModel(overhead=10, per_token=0.1)) == [(0, 2)]
    assert cut_segments([1, 10], CostModel(overhead=1, per_token=10)) == [(0, 1), (1, 2)]


def test_cut_empty_and_single():
    assert cut_segments([], CostModel()) == []
    assert cut_segments([7], CostModel()) == [(0, 1)]


def test_cut_padding_free_model_keeps_mixed_lengths_together():
    # Padding costs nothing: one forward beats any split as soon as there is an overhead.
    assert cut_segments([1, 1, 1, 1, 100], CostModel(overhead=10, padding_weight=0.0)) == [(0, 5)]
    # [10,10,20] split: 25 + 25 = 50. Together: 5 + 40 + w*20, i.e. 55 at w=0.5, 47 at w=0.1.
    assert cut_segments([10, 10, 20], CostModel(overhead=5, padding_weight=0.5)) == [(0, 2), (2, 3)]
    assert cut_segments([10, 10, 20], CostModel(overhead=5, padding_weight=0.1)) == [(0, 3)]


def test_batch_cost_counts_real_and_padding_tokens():
    cost = CostModel(overhead=3, per_token=2, padding_weight=0.25)
    assert cost.batch_cost(4, 10, tokens=30) == 3 + 2 * (30 + 0.25 * 10)
    assert cost.batch_cost(4, 10) == 3 + 2 * 40  # no token count: every position is a real token


def _brute_force(lengths, cost: CostModel) -> float:
    n, best = len(lengths), float("inf")
    for mask in range(2 ** (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        total = sum(cost.batch_cost(e - s, lengths[e - 1], sum(lengths[s:e])) for s, e in itertools.pairwise(cuts))
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_cut_matches_brute_force(seed):
    rng = random.Random(seed)
    lengths = sorted(rng.randint(1, 60) for _ in range(rng.randint(1, 9)))
    cost = CostModel(overhead=rng.choice([0, 4, 16, 64]), per_token=rng.choice([0.5, 1.0, 2.0]),
                     padding_weight=rng.choice([0.0, 0.05, 0.5, 1.0]))
    segments = cut_segments(lengths, cost)
    assert segments[0][0] == 0 and segments[-1][1] == len(lengths)
    assert all(e1 == s2 for (_, e1), (s2, _) in itertools.pairwise(segments))
    assert all(s < e for s, e in segments)
    total = sum(cost.batch_cost(e - s, lengths[e - 1], sum(lengths[s:e])) for s, e in segments)
    assert total == pytest.approx(_brute_force(lengths, cost))


# ----- plan_batch ------------------------------------------------------------------------
def test_plan_empty():
    assert plan_batch([], 100, 8) == []
    assert plan_batch([[]], 100, 8) == []


def test_plan_respects_max_size():
    batch = plan_batch([queue(0, [4] * 100)], max_tokens=10_000, max_size=8)
    assert len(batch) == 8


def test_plan_respects_max_tokens():
    batch = plan_batch([queue(0, [10] * 50)], max_tokens=35, max_size=32)
    assert len(batch) == 3
    assert padded_cost(batch) <= 35


def test_plan_budget_counts_padding():
    # Four short items would fit by their sum (2+2+2+20=26) but not padded (4*20=80 > 40).
    batch = plan_batch([queue(0, [2, 2, 2, 20])], max_tokens=40, max_size=10)
    assert sorted(p.length for p in batch) == [2, 2, 2]
    assert padded_cost(batch) <= 40


def test_plan_oversized_single_item_still_planned():
    big = queue(0, [500])
    assert plan_batch([big], max_tokens=100, max_size=8) == big
    both = plan_batch([queue(0, [500, 600])], max_tokens=100, max_size=8)
    assert len(both) == 1


@pytest.mark.parametrize("query_length", [3, 30, 200])
def test_plan_lone_query_after_bulk_is_in_next_batch(query_length):
    bulk = queue(0, [30] * 200, "bulk")
    query = P(query_length, 1, "query")
    batch = plan_batch([bulk, [query]], max_tokens=16384, max_size=32)
    assert any(p is query for p in batch)
    assert len(batch) <= 32
    assert len(batch) == 1 or padded_cost(batch) <= 16384


def test_plan_query_with_huge_length_still_first():
    bulk = queue(0, [5] * 100, "bulk")
    query = P(1000, 1, "query")
    batch = plan_batch([bulk, [query]], max_tokens=512, max_size=32)
    assert batch == [query]


def test_plan_small_requests_all_get_a_slot():
    bulk = queue(0, [8] * 300, "bulk")
    singles = [[P(8, i, f"s{i}")] for i in range(1, 6)]
    batch = plan_batch([bulk, *singles], max_tokens=16384, max_size=16)
    assert {p.tag for p in batch} >= {f"s{i}" for i in range(1, 6)}
    assert len(batch) == 16


def _drain(queues, max_tokens, max_size, cost=CostModel()):
    """Plan batches until nothing is left, removing chosen items as the worker does."""
    queues = [list(q) for q in queues]
    batches = []
    while any(queues):
        batch = plan_batch(queues, max_tokens, max_size, cost)
        assert batch, "plan_batch returned nothing while items were queued"
        chosen = {id(p) for p in batch}
        queues = [[p for p in q if id(p) not in chosen] for q in queues]
        batches.append(batch)
    return batches


def test_lone_bulk_gets_length_sorted_batches():
    rng = random.Random(7)
    bulk = queue(0, [rng.randint(1, 120) for _ in range(150)])
    batches = _drain([bulk], max_tokens=1024, max_size=16)
    assert sorted(id(p) for b in batches for p in b) == sorted(id(p) for p in bulk)
    for batch in batches:
        lengths = [p.length for p in batch]
        assert lengths == sorted(lengths)
        assert len(batch) <= 16
        assert len(batch) == 1 or padded_cost(batch) <= 1024
    # Batches follow each other in length order: no batch mixes lengths of two others.
    for before, after in itertools.pairwise(batches):
        assert max(p.length for p in before) <= min(p.length for p in after)


def test_drain_many_requests_respects_limits_and_covers_everything():
    rng = random.Random(3)
    queues = [queue(r, [rng.randint(1, 200) for _ in range(rng.randint(1, 40))]) for r in range(12)]
    batches = _drain(queues, max_tokens=2048, max_size=32)
    everything = [p for q in queues for p in q]
    seen = [p for b in batches for p in b]
    assert len(seen) == len(everything) and {id(p) for p in seen} == {id(p) for p in everything}
    for batch in batches:
        assert len(batch) <= 32
        assert len(batch) == 1 or padded_cost(batch) <= 2048


def test_plan_budget_counts_computed_tokens():
    # Lengths 2, 2, 2, 10 in arrival order: padded to the longest that is 4 x 10 = 40 tokens, real 16.
    mixed = [P(2, 0, "a"), P(2, 0, "b"), P(2, 0, "c"), P(10, 0, "d")]
    padded = plan_batch([mixed], max_tokens=20, max_size=8, cost=CostModel(overhead=1e9, padding_weight=1.0))
    assert tags(padded) == ["a", "b", "c"]  # adding d would compute 40 > 20 tokens
    free = plan_batch([mixed], max_tokens=20, max_size=8, cost=CostModel(overhead=1e9, padding_weight=0.0))
    assert sorted(tags(free)) == ["a", "b", "c", "d"]  # a padding-free forward computes the 16 real ones
    assert tags(plan_batch([mixed], max_tokens=15, max_size=8, cost=CostModel(overhead=1e9, padding_weight=0.0))) \
        == ["a", "b", "c"]


def test_plan_padding_free_keeps_a_mixed_request_in_one_forward():
    # 32 inputs of 16..110 tokens (a bulk request): the padding-free cost model never splits them.
    lengths = [16 + (i * 37) % 95 for i in range(32)]
    request = queue(0, lengths)
    batch = plan_batch([request], max_tokens=sum(lengths), max_size=32,
                       cost=CostModel(overhead=20, padding_weight=0.0))
    assert len(batch) == 32
    split = plan_batch([request], max_tokens=10_000, max_size=32, cost=CostModel(overhead=20, padding_weight=1.0))
    assert len(split) < 32  # a padding forward cuts them by length instead
