"""Warming a model up and measuring its forward: the first calls pay one-off allocation costs, the padding-free
forward's per-layer costs size its slices, and a padding forward's fixed and per-token costs tell the scheduler
when splitting a batch by length beats padding it."""

from __future__ import annotations

import time

from .slicing import measure_cost


def calibration_batches(encoder) -> tuple[list[list[int]], list[list[int]]]:
    """Two batches of typical segment sizes: 64 and 1,024 tokens."""
    head, tail = encoder.text.template
    filler = head + [encoder.pad_id + 1] * 62 + tail
    return [filler[:32]] * 2, [filler[:64]] * 16


def warm_up(encoder) -> None:
    """One small and one large forward; for the padding-free forward, then measure its per-layer costs
    (``encoder.cost``)."""
    for batch in calibration_batches(encoder):
        encoder.embed(batch)
    if encoder._packed is not None:
        encoder.cost = measure_cost(encoder._packed)


def calibrate(encoder) -> tuple[float, float]:
    """Warm up and measure forward cost: (fixed overhead in ms, ms per padded token)."""
    warm_up(encoder)
    small, large = calibration_batches(encoder)

    def best(batch):
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            encoder.embed(batch)
            runs.append((time.perf_counter() - started) * 1000)
        return min(runs)

    t_small, t_large = best(small), best(large)
    per_token = max((t_large - t_small) / (1024 - 64), 1e-6)
    return max(t_small - 64 * per_token, 0.0), per_token
