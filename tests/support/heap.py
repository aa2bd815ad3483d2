"""A fragmented C heap on demand, and a fresh interpreter to measure it in, for the heap-trimmer tests."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def fragment_heap(mb: int) -> bytearray:
    """Leave ``mb`` MB free inside this thread's heap: blocks under the mmap threshold, then a block above
    them that stays allocated (returned; keep it alive), so that glibc cannot give the freed ones back by
    shrinking the heap top."""
    blocks = [bytearray(64 * 1024) for _ in range(mb * 16)]  # 64 KB: heap, not mmap
    keeper = bytearray(64 * 1024)
    del blocks
    return keeper


def rss_mb() -> float:
    """This process's resident memory (VmRSS) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def in_fresh_process(function: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``function()`` (module-level, returning JSON-able values) run in a new interpreter, and its result. The
    resident memory of a test session holds whatever earlier tests left and moves with their threads (a model
    worker gives every arena's free memory back when it goes idle); a fresh process holds only what it measures."""
    code = ("import importlib.util, json, sys\n"
            "spec = importlib.util.spec_from_file_location('fresh', sys.argv[1])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "print(json.dumps(getattr(module, sys.argv[2])()))\n")
    argv = [sys.executable, "-c", code, inspect.getfile(function), function.__name__]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])
