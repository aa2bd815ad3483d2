"""How much CPU other processes took during a phase: the noise indicator of a shared machine.

other = (machine busy CPU-seconds from /proc/stat) - (this process) - (the server tree),
reported as average cores busy over the phase's wall time; the bench process (the client
during the server scenarios) and the server are reported too.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float:
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return (user + nice + system + irq + softirq + steal) / _TICK


def stat_cpu_s(stat: Path) -> float:
    """CPU seconds (user + system) in a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def proc_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += stat_cpu_s(Path(f"/proc/{pid}/stat"))
        except (OSError, ValueError, IndexError):
            pass
    return total


class CpuMeter:
    """start(server_pids); ...; stop(server_pids) -> average cores used by bench, server, others."""

    def start(self, server_pids: list[int] | None = None) -> None:
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_s()
        self.bench0 = proc_cpu_s([os.getpid()])
        self.server0 = proc_cpu_s(list(server_pids or []))

    def stop(self, server_pids: list[int] | None = None) -> dict:
        wall = max(time.monotonic() - self.t0, 1e-9)
        bench = proc_cpu_s([os.getpid()]) - self.bench0
        server = proc_cpu_s(list(server_pids or [])) - self.server0
        other = machine_busy_s() - self.busy0 - bench - server
        return {"bench": bench / wall, "server": server / wall, "other": max(other, 0.0) / wall}


def wait_quiet(max_wait_s: float, threshold: float = 0.3, window_s: float = 3.0) -> float:
    """Wait (up to max_wait_s) for a window in which other processes use < threshold cores.

    Returns the last window's usage by others (cores). On a shared machine this avoids
    starting a measurement in the middle of someone else's test run.
    """
    deadline = time.monotonic() + max_wait_s
    meter = CpuMeter()
    while True:
        meter.start()
        time.sleep(window_s)
        other = meter.stop()["other"]
        if other < threshold or time.monotonic() >= deadline:
            return other
