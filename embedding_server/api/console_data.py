"""What the web console (api/console.py) shows that no API route gives as JSON: the models with every fact and the
memory budget, and the server's recent load, sampled from its own Prometheus metrics.

``LiveStats`` snapshots the cumulative counters of ``observability.Metrics`` (requests and latency per route, inputs
and tokens embedded) every ``interval`` seconds into a ring covering ``window`` seconds, and reads the queue depth
and the process's resident memory at the same time. Rates are differences between consecutive snapshots; latency
quantiles are read from the differences of the latency histogram's buckets, interpolated inside a bucket as
Prometheus' ``histogram_quantile`` does. Nothing here is on a request's path: the ring costs one read of a few
counters every two seconds, whether or not anyone looks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..engine.engine import Engine
from ..engine.heap import resident_bytes
from ..engine.memory import estimate_bytes
from .models_info import kind_of

CONSOLE_PREFIX = "/ui"  # the console's own routes: left out of the load it shows (it polls every few seconds)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Snapshot:
    """Cumulative counters at one moment (``at``: monotonic seconds, ``wall``: Unix seconds)."""

    at: float
    wall: float
    requests: dict[str, float] = field(default_factory=dict)  # route -> requests answered
    failed: dict[str, float] = field(default_factory=dict)  # route -> answered with status >= 400
    buckets: dict[str, list[float]] = field(default_factory=dict)  # route -> cumulative latency bucket counts
    inputs: float = 0.0
    tokens: float = 0.0
    queue: dict[str, int] = field(default_factory=dict)  # model -> inputs waiting
    resident: int = 0


def quantile(q: float, bounds: list[float], cumulative: list[float]) -> float | None:
    """The ``q`` quantile of observations counted in cumulative buckets with upper ``bounds`` (the last one
    ``inf``), as Prometheus' ``histogram_quantile``: linear inside the bucket it falls in, the largest finite bound
    when it falls in the last one. None without observations."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0.0, 0.0
    for bound, count in zip(bounds, cumulative):
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        below, lower = count, bound if not math.isinf(bound) else lower
    return lower


class LiveStats:
    """A ring of snapshots of ``metrics`` (an ``observability.Metrics``) and of ``queued()`` ({model: inputs})."""

    def __init__(self, metrics, queued: Callable[[], dict[str, int]], interval: float = 2.0, window: float = 300.0):
        self.metrics, self.queued, self.interval, self.window = metrics, queued, interval, window
        self.ring: deque[Snapshot] = deque(maxlen=int(window / interval) + 1)
        self.bounds: list[float] = []
        self.task: asyncio.Task | None = None

    def snapshot(self) -> Snapshot:
        """The counters now."""
        snap = Snapshot(at=time.monotonic(), wall=time.time())
        for family in self.metrics.requests.collect():
            for s in family.samples:
                route = s.labels.get("route", "")
                if not s.name.endswith("_total") or route.startswith(CONSOLE_PREFIX):
                    continue
                snap.requests[route] = snap.requests.get(route, 0.0) + s.value
                if s.labels.get("status", "0") >= "400":
                    snap.failed[route] = snap.failed.get(route, 0.0) + s.value
        bounds: dict[str, list[tuple[float, float]]] = {}
        for family in self.metrics.request_seconds.collect():
            for s in family.samples:
                route = s.labels.get("route", "")
                if s.name.endswith("_bucket") and not route.startswith(CONSOLE_PREFIX):
                    bounds.setdefault(route, []).append((float(s.labels["le"]), s.value))
        for route, pairs in bounds.items():
            pairs.sort()
            self.bounds = [b for b, _ in pairs]
            snap.buckets[route] = [c for _, c in pairs]
        snap.inputs = sum(s.value for f in self.metrics.inputs.collect() for s in f.samples if s.name.endswith("_total"))
        snap.tokens = sum(s.value for f in self.metrics.tokens.collect() for s in f.samples if s.name.endswith("_total"))
        try:
            snap.queue = dict(self.queued())
        except RuntimeError:  # the registry changed size while read (a model loading): the next sample has it
            snap.queue = {}
        snap.resident = resident_bytes()
        return snap

    def sample(self) -> None:
        self.ring.append(self.snapshot())

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start sampling on the running loop (once)."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    # ----- the view ----------------------------------------------------------------------------------------------
    def _route_quantiles(self, before: list[float] | None, after: list[float]) -> tuple[float | None, float | None]:
        delta = [a - (before[i] if before and i < len(before) else 0.0) for i, a in enumerate(after)]
        p50, p95 = quantile(0.5, self.bounds, delta), quantile(0.95, self.bounds, delta)
        return (None if p50 is None else p50 * 1000, None if p95 is None else p95 * 1000)

    def view(self) -> dict:
        """The window as JSON: one point per interval (rates, queue, memory), each route's requests, failures and
        latency quantiles over the window and per interval, and the totals from the window's start to now."""
        now = self.snapshot()
        snaps = list(self.ring)
        points, per_route = [], {}
        for before, after in zip(snaps, snaps[1:]):
            seconds = max(after.at - before.at, 1e-9)
            requests = sum(after.requests.values()) - sum(before.requests.values())
            failed = sum(after.failed.values()) - sum(before.failed.values())
            points.append({"t": after.wall, "requests_per_s": requests / seconds, "failed_per_s": failed / seconds,
                           "inputs_per_s": (after.inputs - before.inputs) / seconds,
                           "tokens_per_s": (after.tokens - before.tokens) / seconds,
                           "queue": sum(after.queue.values()), "resident_bytes": after.resident})
            for route, buckets in after.buckets.items():
                count = after.requests.get(route, 0.0) - before.requests.get(route, 0.0)
                p50, p95 = self._route_quantiles(before.buckets.get(route), buckets) if count else (None, None)
                per_route.setdefault(route, []).append({"t": after.wall, "requests_per_s": count / seconds,
                                                        "p50_ms": p50, "p95_ms": p95})
        first = snaps[0] if snaps else now
        routes = []
        for route in sorted(now.buckets):
            count = now.requests.get(route, 0.0) - first.requests.get(route, 0.0)
            if count <= 0:
                continue
            p50, p95 = self._route_quantiles(first.buckets.get(route), now.buckets[route])
            routes.append({"route": route, "requests": int(count),
                           "failed": int(now.failed.get(route, 0.0) - first.failed.get(route, 0.0)),
                           "p50_ms": p50, "p95_ms": p95, "points": per_route.get(route, [])})
        routes.sort(key=lambda r: -r["requests"])
        return {"interval_s": self.interval, "window_s": self.window, "since": first.wall, "now": now.wall,
                "points": points, "routes": routes,
                "totals": {"requests": int(sum(now.requests.values()) - sum(first.requests.values())),
                           "inputs": int(now.inputs - first.inputs), "tokens": int(now.tokens - first.tokens)},
                "queue": now.queue, "resident_bytes": now.resident}


def live_stats(app) -> LiveStats:
    """The app's ``LiveStats`` (made on first use)."""
    stats = getattr(app.state, "console_live", None)
    if stats is None:
        stats = app.state.console_live = LiveStats(app.state.metrics, lambda: app.state.engine.queued_inputs())
    return stats


def _state(entry) -> str:
    if entry is None:
        return "available"
    if entry.unloading is not None:
        return "unloading"
    if entry.loading is not None:
        return "loading"
    return "loaded" if entry.loaded else "available"


async def models_view(engine: Engine) -> dict:
    """Every servable model with all its facts (those of /api/tags, /api/show and /api/ps in one place), which is
    the default, the aliases, and the memory budget: the limit, what the process holds, what the models added."""
    engine.registry.rescan()  # a folder copied in since (at most once a second), as /api/tags does
    settings = engine.settings
    facts = await engine.all_facts()
    default = engine.default_entry()
    entries = engine.registry.entries

    def estimates() -> dict[str, int]:
        out = {}
        for f in facts:
            entry = entries.get(f.name)
            if entry is not None and not f.loaded:
                try:
                    out[f.name] = estimate_bytes(entry.path, engine.dtype_for(entry), settings.short_batch_copy_mb)
                except OSError:  # the folder is being removed
                    pass
        return out

    needs = await asyncio.to_thread(estimates)
    models = []
    for f in sorted(facts, key=lambda f: f.name):
        entry = entries.get(f.name)
        models.append({
            "name": f.name, "kind": kind_of(f), "architecture": f.architecture, "dimension": f.dimension,
            "context_length": f.context_length, "parameters": f.parameters, "pooling": f.pooling, "dtype": f.dtype,
            "outputs": [o for o in ("dense", "sparse", "colbert") if o in f.outputs], "size": f.size, "modified_at": _iso(f.modified), "loaded": f.loaded,
            "state": _state(entry), "resident_bytes": (f.resident_bytes or f.size) if f.loaded else 0,  # /api/ps's size
            "estimated_bytes": needs.get(f.name), "expires_at": _iso(f.expires_at) if f.loaded else None,
            "default": default is not None and f.name == default.name,
            "aliases": sorted(a for a, target in engine.registry.aliases.items() if target == f.name)})
    limit = settings.memory_limit_mb * 2**20
    return {"models": models, "default_model": default.name if default else settings.model,
            "keep_alive": settings.keep_alive, "max_loaded_models": settings.max_loaded_models,
            "loaded": sum(1 for m in models if m["loaded"]),
            "memory": {"limit_bytes": limit or None, "resident_bytes": resident_bytes(),
                       "models_bytes": sum(m["resident_bytes"] for m in models)},
            "now": time.time()}
