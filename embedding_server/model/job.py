"""A forward pass that runs in bounded pieces: ``EmbedJob.run(seconds)`` works until done or time is up.

The engine's worker gives a long job one slice at a time and runs short batches in between; the
state between slices lives in the job's generator (for the padding-free forward, the packed
hidden-state matrix). A job whose forward raises may switch to a fallback forward once.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Generator

from .heads import DENSE, ONLY_DENSE

Steps = Generator[None, None, dict]


class EmbedJob:
    """One batch's forward; ``result`` maps each head it computed to its outputs once ``run`` returned True.

    ``fallback`` (optional) builds replacement steps when the forward raises; ``fell_back`` then says
    why, and ``on_fallback(reason)`` is called once. Without a fallback, or if it raises too, the
    exception propagates from ``run``.
    """

    def __init__(self, steps: Steps, fallback: Callable[[], Steps] | None = None,
                 on_fallback: Callable[[str], None] | None = None):
        self._steps, self._fallback, self._on_fallback = steps, fallback, on_fallback
        self.result: dict | None = None
        self.fell_back: str | None = None
        self.slices = 0
        self.seconds = 0.0  # spent in run()

    @property
    def done(self) -> bool:
        return self.result is not None

    def run(self, seconds: float = math.inf) -> bool:
        """Advance for at most about ``seconds`` (at least one unit of work); True once the result is ready."""
        self.slices += 1
        started = time.perf_counter()
        try:
            return self._advance(started + seconds)
        finally:
            self.seconds += time.perf_counter() - started

    def _advance(self, deadline: float) -> bool:
        """Units until done, or until the next unit (assumed as long as the last) would end past ``deadline``."""
        import torch

        with torch.inference_mode():
            while True:
                unit_started = time.perf_counter()
                try:
                    next(self._steps)
                except StopIteration as finished:
                    self.result = finished.value
                    return True
                except Exception as exc:  # noqa: BLE001 - re-raised unless a fallback takes over
                    if self._fallback is None:
                        raise
                    self.fell_back = f"{type(exc).__name__}: {exc}"
                    self._steps, self._fallback = self._fallback(), None
                    if self._on_fallback is not None:
                        self._on_fallback(self.fell_back)
                    continue
                now = time.perf_counter()
                if now + (now - unit_started) > deadline:
                    return False


def one_step(compute: Callable[[], dict]) -> Steps:
    """Steps of a forward that cannot be cut: all of it in one unit."""
    return compute()
    yield  # unreachable: makes this a generator


def job_of(embedder, batch: list[list[int]], unit_ms: float | None = None, heads: frozenset[str] = ONLY_DENSE) -> EmbedJob:
    """``embedder.start(batch, unit_ms, heads)`` when it has one, else a one-unit job around ``embedder.embed``
    (whose vectors are the dense head: such an embedder has no other)."""
    start = getattr(embedder, "start", None)
    if start is not None:
        return start(batch, unit_ms, heads)
    return EmbedJob(one_step(lambda: {DENSE: embedder.embed(batch)}))
