"""Start/stop `python -m embedding_server serve` on a free loopback port and watch its memory.

Memory comes from /proc/<pid>/status (VmRSS, VmHWM) of the server process and its children.
`reset_peak()` writes "5" to /proc/<pid>/clear_refs, which resets VmHWM (Linux >= 4.0), so the
peak of one phase can be read exactly; where that is not allowed, a 10 ms VmRSS sampler
thread takes over.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from .cpumeter import stat_cpu_s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn may run workers as children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


class ProcessMemory:
    """Resident memory of a subprocess (``self.proc``) and its children: now, and peak since a reset."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._peak_kb = 0
        self._hwm_exact = True
        self._sampler: threading.Thread | None = None

    def pids(self) -> list[int]:
        return _tree(self.proc.pid)

    def rss_mb(self) -> float:
        """Current resident set of the process tree (MB)."""
        return sum(_status_kb(p, "VmRSS") for p in _tree(self.proc.pid)) / 1024

    def rss_parts_mb(self) -> dict[str, float]:
        """The resident set split into anonymous memory (heap: copied weights, activations) and file pages
        (e.g. an mmap-ed weights file; counted once touched, droppable by the kernel under pressure)."""
        pids = _tree(self.proc.pid)
        return {"anon": sum(_status_kb(p, "RssAnon") for p in pids) / 1024,
                "file": sum(_status_kb(p, "RssFile") for p in pids) / 1024}

    def thread_cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the process's main thread (the server's event loop)."""
        return stat_cpu_s(Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat"))

    def hwm_mb(self) -> float:
        """Peak resident set since start or the last reset_peak() (MB), kernel- or sampler-based."""
        if not self._hwm_exact:
            return self._peak_kb / 1024
        kernel = sum(_status_kb(p, "VmHWM") for p in _tree(self.proc.pid)) / 1024
        return max(kernel, self._peak_kb / 1024)

    def reset_peak(self) -> None:
        self._peak_kb = 0
        try:
            for p in _tree(self.proc.pid):
                Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:  # no permission / old kernel: VmHWM keeps the all-time peak, sample instead
            self._hwm_exact = False
            if self._sampler is None:  # started only when needed: it takes CPU from the scenarios
                self._sampler = threading.Thread(target=self._sample, daemon=True)
                self._sampler.start()

    def _sample(self) -> None:
        n, pids = 0, []
        while not self._stop.wait(0.01):
            if n % 100 == 0:
                pids = _tree(self.proc.pid)
            n += 1
            kb = sum(_status_kb(p, "VmRSS") for p in pids)
            self._peak_kb = max(self._peak_kb, kb)


class Server(ProcessMemory):
    """The server subprocess; use as a context manager."""

    def __init__(self, threads: int, model_dir: str | None = None, log_path: Path | None = None,
                 extra_env: dict[str, str] | None = None):
        super().__init__()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.threads = threads
        self.model_dir = model_dir
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"bench-server-{self.port}.log"
        self.extra_env = extra_env or {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> "Server":
        env = dict(os.environ, EMBED_NUM_THREADS=str(self.threads), **self.extra_env)
        if self.model_dir:
            env["EMBED_MODELS_DIR"] = self.model_dir
        elif "EMBED_MODELS_DIR" not in self.extra_env:
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-models-")
            env["EMBED_MODELS_DIR"] = self._tmp.name  # empty: the embedded default model only
        cmd = [sys.executable, "-m", "embedding_server", "serve",
               "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        paths = ["/ready", "/health"]
        with httpx.Client(base_url=self.base_url, timeout=5.0) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    r = c.get(paths[0])
                    if r.status_code == 200:
                        return
                    if r.status_code == 404 and len(paths) > 1:
                        paths.pop(0)  # no /ready route: fall back to /health
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
