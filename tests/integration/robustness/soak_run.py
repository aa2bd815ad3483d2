"""Run the soak load (soak_load.py) and report it: answers by kind and status, latency, and the server's RSS.

``run_load`` drives the clients for a while, sampling RSS; ``run_soak`` runs a warm-up, then the load in
parts with an idle pause after each, to tell the memory the server keeps from what its allocator holds for
reuse while busy.
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
    """A warm-up load, then the load in parts, each followed by a pause long enough for the server to go idle.

    Under load the C allocator keeps freed blocks for reuse, up to the server's EMBED_HEAP_TRIM_MB, so RSS
    under load wanders within that allowance; a leak shows as growth of what the server keeps once idle.
    That also settles for minutes after start (oneDNN caches kernels by shape; the allocator's per-thread
    heaps fragment), in occasional steps of up to ~13 MB and ~2 MB per 15 s otherwise; a leak grows it
    in every part, so the median growth per part tells the two apart.
    """

    warmup: Report
    parts: list[Report]
    kept: list[float | None]  # RSS MB once idle after the warm-up and after each part

    @property
    def reports(self) -> list[Report]:
        return [self.warmup, *self.parts]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.reports)

    @property
    def server_errors(self) -> int:
        return sum(r.server_errors for r in self.reports)

    @property
    def problems(self) -> list[str]:
        return [p for r in self.reports for p in r.stats.problems]

    @property
    def problem_count(self) -> int:
        return sum(sum(r.stats.problem_count.values()) for r in self.reports)

    @property
    def steps(self) -> list[float] | None:
        """MB more kept once idle after each part than before it (None without a pid)."""
        if None in self.kept:
            return None
        return [after - before for before, after in zip(self.kept, self.kept[1:])]

    @property
    def kept_growth(self) -> float | None:
        """MB more kept once idle after the last part than after the warm-up."""
        return None if None in self.kept else self.kept[-1] - self.kept[0]

    @property
    def growth_rate(self) -> float | None:
        """Median over the parts of the kept growth per second of load, MB/s."""
        steps = self.steps
        if steps is None:
            return None
        return statistics.median(step / part.seconds for step, part in zip(steps, self.parts))

    @property
    def peak_over_kept(self) -> float | None:
        """The highest RSS under load in a part, in MB over what was kept before that part."""
        over = [part.rss_peak - kept for part, kept in zip(self.parts, self.kept)
                if part.rss_peak is not None and kept is not None]
        return max(over) if over else None

    def lines(self) -> list[str]:
        out = [f"warm-up: {line}" for line in self.warmup.lines()]
        out += [f"part {i + 1}: {line}" for i, r in enumerate(self.parts) for line in r.lines()]
        if self.steps is not None:
            out.append(f"server RSS MB kept once idle: {self.kept[0]:.0f} after the warm-up, then "
                       f"{', '.join(f'{k:.0f}' for k in self.kept[1:])} (steps "
                       f"{', '.join(f'{d:+.1f}' for d in self.steps)}; {self.kept_growth:+.1f} in all, median "
                       f"{self.growth_rate:+.3f} MB/s); peak {self.peak_over_kept:+.0f} MB over what was kept")
        return out


def run_soak(base: str, exp: Expected, seconds: float = 60.0, clients: int = 12, pid: int | None = None,
             seed: int = 1, parts: int = 4, warmup: float = 15.0) -> Soak:
    """``run_load`` for ``warmup`` seconds, then for ``seconds / parts`` ``parts`` times, reading the server's
    settled RSS after the warm-up and after each part."""
    done = [run_load(base, exp, warmup, clients, pid, seed=seed)]
    kept = [settled_rss_mb(pid) if pid is not None else None]
    for part in range(parts):
        done.append(run_load(base, exp, seconds / parts, clients, pid, seed=seed + 100 * (part + 1)))
        kept.append(settled_rss_mb(pid) if pid is not None else None)
    return Soak(done[0], done[1:], kept)
