"""Live servers of the robustness modules: one per module (``server``), and those the bad-request modules share
(test_bad_requests.py, test_oversized_requests.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.robustness.robustness_support import live_server, server_errors

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """A fresh server for the module, named after it, serving the embedded MiniLM with the default settings (a
    module needing other settings defines its own ``server``)."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with live_server(tmp_path_factory, name) as s:
        yield s


@pytest.fixture(scope="module")
def bad_server(tmp_path_factory):
    with live_server(tmp_path_factory, "bad-requests") as s:
        yield s
        errors = server_errors(s.base)
        print(f"\n[bad-requests] server-side 5xx counts: {errors or 'none'}")


@pytest.fixture(scope="module")
def small_body_server(tmp_path_factory):
    """Body limit 4 MiB: a 5 MB string must be refused with 413."""
    with live_server(tmp_path_factory, "small-body", env={"EMBED_MAX_BODY_BYTES": str(4 * MIB)}) as s:
        yield s


@pytest.fixture(scope="module")
def http(bad_server):
    """One kept-alive client for the module: a bad request must not spoil the connection for the next."""
    with httpx.Client(timeout=180) as c:
        yield c
