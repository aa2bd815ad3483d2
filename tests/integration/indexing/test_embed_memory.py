"""Memory of ``embedding-server embed`` stays bounded whatever the input size: the pipeline (reading, chunking,
storing, assembling the output) run on 100,000 and on 800,000 generated rows in fresh processes, with a backend
that answers at once (the model's own memory is not what grows with the input); their peak RSS must not differ by
more than a few MB, though the larger input's vectors alone are 200 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # 100,000 and 800,000 rows in fresh processes: left out of make test-fast

DRIVER = r"""
import asyncio, json, resource, sys
from pathlib import Path
import numpy as np
from embedding_server.indexing.run import index

class Instant:
    request_size, concurrency = 512, 2
    async def start(self): return "instant"
    async def embed(self, texts):
        return np.full((len(texts), 64), 0.125, np.float32)

source, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = asyncio.run(index(source, out, Instant(), "text", "id"))
print(json.dumps({"rows": summary.rows, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def generate(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        f.write("id,text\n")
        for i in range(rows):
            f.write(f"{i},row {i} of a generated dataset about cosine similarity and vector search\n")
    return path


def peak(tmp_path: Path, rows: int) -> int:
    source = generate(tmp_path / f"in-{rows}.csv", rows)
    done = subprocess.run([sys.executable, "-c", DRIVER, str(source), str(tmp_path / f"out-{rows}.npy")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == rows
    return result["peak_kb"] * 1024


def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    small, large = peak(tmp_path, 100_000), peak(tmp_path, 800_000)
    vectors_of_the_difference = 700_000 * 64 * 4  # 179 MB that a non-streaming run would hold at least
    assert large - small < 24 * 2**20, (small / 2**20, large / 2**20)
    assert (tmp_path / "out-800000.npy").stat().st_size > vectors_of_the_difference
