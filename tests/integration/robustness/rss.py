"""The resident memory (VmRSS) of a server process: sampled in a thread during a load, or read once the
server has gone idle and given its allocator's free memory back (see embedding_server/engine/heap.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (None if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def settled_rss_mb(pid: int, wait: float = 1.5, timeout: float = 15.0) -> float | None:
    """RSS once the server has been idle: after ``wait`` seconds (its trimmer releases free memory after 1 s
    without work), read every 0.5 s until two readings agree within 1 MB."""
    time.sleep(wait)
    last, deadline = rss_mb(pid), time.monotonic() + timeout
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_mb(pid)
        if now is None or abs(now - last) < 1.0:
            return now
        last = now
    return last


class RssSampler:
    """VmRSS of ``pid`` every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int | None, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            rss = rss_mb(self.pid) if self.pid is not None else None
            if rss is not None:
                self.samples.append((time.monotonic() - started, rss))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def window(self, start: float, end: float) -> list[float]:
        """Samples taken between fractions ``start`` and ``end`` of the run."""
        if not self.samples:
            return []
        total = self.samples[-1][0] or 1.0
        return [mb for t, mb in self.samples if start * total <= t <= end * total]
