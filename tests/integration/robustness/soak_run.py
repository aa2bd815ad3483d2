"""Run the soak load (soak_load.py) and report it: answers by kind and status, latency, and the server's RSS.

``run_load`` drives the clients for a while, sampling RSS; ``run_soak`` runs the load in two halves with an
idle pause after each, to tell the memory the server keeps from what its allocator holds for reuse while busy.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from tests.integration.robustness.rss import RssSampler, settled_rss_mb
from tests.integration.robustness.soak_load import Client, Expected, Stats


@dataclass
class Report:
    seconds: float
    clients: int
    stats: Stats
    rss_start: float | None
    rss_end: float | None
    rss_peak: float | None

    @property
    def total(self) -> int:
        return sum(self.stats.requests.values())

    @property
    def server_errors(self) -> int:
        return sum(v for k, v in self.stats.statuses.items() if isinstance(k, int) and k >= 500)

    def lines(self) -> list[str]:
        lat = sorted(self.stats.latencies) or [0.0]
        by_status = dict(sorted(self.stats.statuses.items(), key=lambda kv: str(kv[0])))
        out = [(f"{self.total} requests in {self.seconds:.1f}s from {self.clients} clients = "
               f"{self.total / self.seconds:.1f} req/s; latency p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
               f"p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"),
               f"by kind: {dict(sorted(self.stats.requests.items()))}",
               f"by status: {by_status}",
               (f"problems (lost or mismatched): {sum(self.stats.problem_count.values())} "
               f"{dict(self.stats.problem_count)}")]
        if self.rss_start is not None:
            out.append(f"server RSS MB under load: start {self.rss_start:.0f}, end {self.rss_end:.0f}, "
                       f"peak {self.rss_peak:.0f}")
        out += [f"  {p}" for p in self.stats.problems[:10]]
        return out


def run_load(base: str, exp: Expected, seconds: float = 60.0, clients: int = 12, pid: int | None = None,
             seed: int = 1) -> Report:
    stats = Stats()
    deadline = time.monotonic() + seconds
    with RssSampler(pid) as rss:
        started = time.monotonic()
        threads = [threading.Thread(target=Client(base, exp, stats, seed * 1000 + i).run, args=(deadline,))
                   for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 300)
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # one more sample after the last answers
    med = lambda xs: statistics.median(xs) if xs else None
    all_mb = [mb for _, mb in rss.samples]
    return Report(elapsed, clients, stats, med(rss.window(0.0, 0.05)), med(rss.window(0.95, 1.0)),
                  max(all_mb) if all_mb else None)


@dataclass
class Soak:
    """A load run in two halves, each followed by a pause long enough for the server to go idle.

    Under load the C allocator keeps freed blocks for reuse, up to the server's EMBED_HEAP_TRIM_MB, so RSS
    under load wanders within that allowance; a leak shows as growth of what the server keeps once idle.
    """

    halves: list[Report]
    kept: list[float | None]  # RSS MB once idle after each half

    @property
    def total(self) -> int:
        return sum(h.total for h in self.halves)

    @property
    def server_errors(self) -> int:
        return sum(h.server_errors for h in self.halves)

    @property
    def problems(self) -> list[str]:
        return [p for h in self.halves for p in h.stats.problems]

    @property
    def problem_count(self) -> int:
        return sum(sum(h.stats.problem_count.values()) for h in self.halves)

    @property
    def kept_growth(self) -> float | None:
        """MB more kept once idle after the second half than after the first (None without a pid)."""
        return None if None in self.kept else self.kept[1] - self.kept[0]

    @property
    def peak_over_kept(self) -> float | None:
        """The second half's RSS peak under load, in MB over what was kept before it."""
        peak = self.halves[1].rss_peak
        return None if peak is None or self.kept[0] is None else peak - self.kept[0]

    def lines(self) -> list[str]:
        out = [f"half {i + 1}: {line}" for i, h in enumerate(self.halves) for line in h.lines()]
        if self.kept_growth is not None:
            out.append(f"server RSS MB kept once idle: {self.kept[0]:.0f} after half 1, {self.kept[1]:.0f} after half 2 "
                       f"({self.kept_growth:+.1f}); half 2 peaked {self.peak_over_kept:+.0f} MB over what was kept")
        return out


def run_soak(base: str, exp: Expected, seconds: float = 60.0, clients: int = 12, pid: int | None = None,
             seed: int = 1) -> Soak:
    """``run_load`` for ``seconds / 2`` twice, reading the server's settled RSS after each half."""
    halves, kept = [], []
    for half in range(2):
        halves.append(run_load(base, exp, seconds / 2, clients, pid, seed=seed + 100 * half))
        kept.append(settled_rss_mb(pid) if pid is not None else None)
    return Soak(halves, kept)
