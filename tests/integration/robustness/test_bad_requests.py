"""Malformed and odd requests against a live server, in every dialect.

Every case asserts the status, the dialect's error shape (Ollama ``{"error": str}``, OpenAI
``{"error": {"message", "type", "param", "code"}}``, the small FastAPI services' /embeddings
``{"detail": str}``), and that a normal request on the same kept-alive client succeeds right after it.
Decisions: malformed input is 400 (never 422 or 5xx), Ollama's routes refuse wrong JSON types with
Ollama's (Go's) messages, valid-but-odd text (emoji, CJK, RTL, NUL escapes, whitespace,
special-token look-alikes) is 200.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.integration.robustness.bad_request_cases import CASES, SIMPLE, Case
from tests.integration.robustness.robustness_support import (
    assert_ollama_error,
    assert_openai_error,
    assert_serving,
    assert_unit_vectors,
    server_errors,
    vectors_of,
)

pytestmark = pytest.mark.slow  # live server processes: left out of make test-fast


@pytest.mark.parametrize("case", CASES, ids=[c.param_id() for c in CASES])
def test_bad_or_odd_request(case: Case, bad_server, http):
    r = http.post(bad_server.base + case.path, content=case.data, headers=case.headers)
    if case.status == 200:
        assert r.status_code == 200, r.text[:500]
        if case.check is not None:
            case.check(r)
        if case.n is not None:
            body = r.json()
            vectors = np.asarray(body["embeddings"]) if case.path == SIMPLE and "embeddings" in body \
                else vectors_of(case.path, r)
            assert_unit_vectors(vectors, case.n, case.dim)
    elif case.path.startswith("/v1") or case.openai:
        kw = {k: getattr(case, k) for k in ("param", "code") if getattr(case, k) != "unchecked"}
        err = assert_openai_error(r, case.status, contains=case.contains, **kw)
        assert err["type"] == ("invalid_request_error" if case.status < 500 else "server_error")
    elif case.path == SIMPLE:
        assert_detail_error(r, case.status, case.contains)
    else:
        assert_ollama_error(r, case.status, case.contains)
    assert_serving(bad_server, http)  # same client: the connection (if kept alive) still works


def assert_detail_error(r: httpx.Response, status: int, contains: str | None = None) -> None:
    """FastAPI's error shape: exactly ``{"detail": "<non-empty message>"}``, JSON content type."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], str), body
    assert body["detail"] and (contains is None or contains in body["detail"]), body


def test_bad_requests_leave_no_server_errors(bad_server, http):
    """Run last in this module's table order: the bad_server recorded no 5xx at all so far."""
    assert_serving(bad_server, http)
    assert server_errors(bad_server.base) == {}
