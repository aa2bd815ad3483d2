"""Soak: 12 concurrent clients mixing valid and invalid requests for ~60 s against a live server with the
real MiniLM. No 5xx, no lost or mismatched answer (every vector checked against vectors computed once up
front, allclose 1e-5), and the server's RSS flat over the second half (< 50 MB growth).

ROBUSTNESS_SOAK_SECONDS and ROBUSTNESS_SOAK_CLIENTS change the run; bench/load_run.py runs the same load
against any server for as long as wanted.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.robustness.robustness_support import assert_serving, live_server, server_errors
from tests.integration.robustness.soak_load import expected_for, run_load, text_pool

SECONDS = float(os.environ.get("ROBUSTNESS_SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("ROBUSTNESS_SOAK_CLIENTS", "12"))
MAX_SECOND_HALF_GROWTH_MB = 50.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory, "soak") as s:
        yield s


@pytest.mark.slow
def test_mixed_load_soak(server):
    expected = expected_for(server.base, text_pool())
    report = run_load(server.base, expected, seconds=SECONDS, clients=CLIENTS, pid=server.pid)
    print("\n[soak] " + "\n[soak] ".join(report.lines()))
    print(f"[soak] server-side 5xx counted by the server: {server_errors(server.base) or 'none'}")
    assert report.total > CLIENTS * 10, "the load barely ran"
    assert report.server_errors == 0, report.stats.statuses
    assert not report.stats.problem_count, report.stats.problems
    assert report.second_half_growth is not None and report.second_half_growth < MAX_SECOND_HALF_GROWTH_MB
    assert server.alive()
    assert_serving(server)
