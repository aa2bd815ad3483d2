"""The long-context bench (`make bench ARGS="--long-context --model-dir DIR"`, and so `--bge-m3-shape`) runs end to end
on a tiny BGE-M3-like XLM-R (its sparse and ColBERT heads, a 1,024-token context): every scenario measured, every
target reported (not judged: a tiny model on a shared machine says nothing about the targets)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkpoints import make_tiny_bge_m3

pytestmark = pytest.mark.slow  # the bench end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[3]


def test_long_context_bench_runs_every_scenario(tmp_path):
    folder = make_tiny_bge_m3(tmp_path / "models" / "long-xlmr", max_seq_length=1024)
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--long-context", "--model-dir", str(folder), "--quick",
                          "--long-tokens", "1024", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    server = result["server"]
    for scenario in ("long_alone_1", "long_alone_2", "long_open_loop", "long_sequential"):
        assert "error" not in server[scenario] and server[scenario]["long_s"] > 0, scenario
    # (On a tiny model the long input ends before queries are sent: their counts may be 0.)
    assert {"n", "p95_ms"} <= set(server["long_sequential"]["queries"]) and "sent" in server["long_open_loop"]
    assert server["idle_single"]["n"] >= 10 and server["rss_load_mb"] > 0 and server["load_s"] > 0
    assert result["workload"]["long_tokens_processed"] == 1024
    assert result["check"]["cosine"] > 0.99999  # the server and sentence-transformers agree
    targets = {t["target"]: t for t in result["targets"]}
    assert len(targets) == 6 and all({"measured", "pass", "noisy"} <= set(t) for t in targets.values())
    assert not math.isnan(targets["bulk cost of dense + sparse + ColBERT / dense only (`/api/encode`)"]["measured"])
    assert not math.isnan(targets["peak RSS during the long input - RSS after load"]["measured"])
    markdown = (out / "results.md").read_text()
    assert "| Target | Measured | Threshold | Status |" in markdown and "avx512_bf16" in markdown
