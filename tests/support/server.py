"""Starting the real server as a subprocess on a loopback port, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tests.support.wait import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Until ``base_url``'s /health answers 200; RuntimeError at once if ``proc`` exits meanwhile."""

    def healthy() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout, interval=0.2, what=f"{base_url}/health to answer 200")


@contextmanager
def running_server(models_dir: Path, env: dict[str, str] | None = None, model: str | None = None,
                   log_path: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m embedding_server serve`` on a free port; yields (base_url, process)."""
    port = free_port()
    full_env = {**os.environ, "EMBED_MODELS_DIR": str(models_dir), **(env or {})}
    cmd = [sys.executable, "-m", "embedding_server", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if model:
        cmd += ["--model", model]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()
