"""Ray for the tests: skipping with a reason when the ray extra is absent, Ray nodes started with ``ray start --block``
as our own child processes (stopped by their process group, never by ``ray stop``, which would stop every Ray
process of the machine), and reading an ``embed --ray`` output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RAY_MISSING = "the ray extra is not installed (pip install 'embedding-server[ray]'; make test installs it)"


def need_ray():
    """The ray module, or the test skipped with the reason printed in pytest's summary."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        print(f"SKIPPED: {RAY_MISSING}", file=sys.stderr)
        pytest.skip(RAY_MISSING)
    return ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``ray start ARGS --block`` in its own session: its raylet, object store and workers are its descendants."""
    return subprocess.Popen([ray_bin(), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def session_pids(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (a process we started with start_new_session, and what it started);
    zombies, already ended, are left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
            continue
    return pids


def stop_session(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM to the session we started (a node stops its processes on it), then SIGKILL to what is left of it."""
    from tests.support.wait import wait_until

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: proc.poll() is not None and not session_pids(proc.pid), timeout=timeout, interval=0.2,
                       what=f"the processes of session {proc.pid} to end")
            break
        except AssertionError:
            continue
    if proc.poll() is None:
        proc.wait(timeout=10)


def read_output(out: Path) -> dict[str, dict]:
    """An ``embed --ray`` output folder: row by id; an id found twice fails."""
    import pyarrow.dataset as pads

    table = pads.dataset(out, format="parquet").to_table()
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} ids written more than once"
    columns = {name: table.column(name).to_pylist() for name in table.column_names if name != "id"}
    return {key: {name: values[i] for name, values in columns.items()} for i, key in enumerate(ids)}


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def committed_checkpoints(out: Path) -> list[Path]:
    """Write tasks whose data file and checkpoint are both in place (committed: not ``.pending``)."""
    folder = out.with_name(out.name + ".checkpoint")
    return [p for p in folder.glob("*.parquet") if not p.name.endswith(".pending.parquet")] if folder.is_dir() else []


def wait_pid_gone(pid: int, timeout: float = 30.0) -> None:
    from tests.support.wait import wait_until

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_until(gone, timeout=timeout, interval=0.05, what=f"process {pid} to end")


def ray_test_models(root: Path) -> Path:
    """``root`` holding the tiny BGE-M3 fixture and a generated tiny BERT: the models of the Ray tests."""
    import shutil

    from tests.support.checkpoints import make_tiny_bert

    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "tiny-bge-m3", root / "tiny-bge-m3")
    make_tiny_bert(root / "tiny-bert")
    return root
