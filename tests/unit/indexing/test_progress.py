"""The embed command's progress: plain periodic lines when not on a terminal (rows, rows/s, ETA)."""

from __future__ import annotations

import io

from embedding_server.indexing.run import Progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_period_with_rate_and_eta(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("embedding_server.indexing.run.time.monotonic", clock)
    out = io.StringIO()  # not a terminal: no bar
    progress = Progress(total=1000, every=10.0, stream=out)
    assert progress.bar is None
    progress.update(100)
    assert out.getvalue() == ""  # nothing before the first period
    clock.now += 10
    progress.update(100)
    assert out.getvalue() == "embedded 200/1000 rows, 20 rows/s, ETA 40 s\n"
    clock.now += 5
    progress.update(100)
    assert out.getvalue().count("\n") == 1  # at most one line per period
    progress.close()


def test_unknown_total_has_no_eta(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("embedding_server.indexing.run.time.monotonic", clock)
    out = io.StringIO()
    progress = Progress(total=None, every=1.0, stream=out)
    clock.now += 2
    progress.update(50)
    assert out.getvalue() == "embedded 50 rows, 25 rows/s\n"
