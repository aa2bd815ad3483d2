"""Fixtures shared by the API tests."""

from __future__ import annotations

import pytest

from embedding_server.api import fast


@pytest.fixture
def served(monkeypatch) -> list[bool]:
    """Whether each request since was answered by the fast path itself."""
    seen: list[bool] = []
    real = fast._prepare
    monkeypatch.setattr(fast, "_prepare", lambda *a: seen.append((out := real(*a)) is not None) or out)
    return seen
