"""HeapTrimmer: gives freed glibc heap memory back to the OS, only when over its limit."""

from __future__ import annotations

import platform

import pytest

from embedding_server.engine.heap import HeapTrimmer


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fragment_heap(mb: int) -> bytearray:
    """Leave ``mb`` MB free inside the heap: blocks under the mmap threshold, then a block above them
    that stays allocated, so that glibc cannot give the freed ones back by shrinking the heap top."""
    blocks = [bytearray(64 * 1024) for _ in range(mb * 16)]  # 64 KB: heap, not mmap
    keeper = bytearray(64 * 1024)
    del blocks
    return keeper


def test_disabled_trimmer_does_nothing():
    trimmer = HeapTrimmer(0)
    assert not trimmer.active and trimmer.free_bytes() == 0
    assert trimmer.maybe_trim(force=True) is False


@pytest.mark.skipif(platform.system() != "Linux" or not HeapTrimmer(1).active,
                    reason="needs glibc >= 2.33 (mallinfo2, malloc_trim)")
def test_trim_returns_free_heap_memory_to_the_os_only_over_the_limit():
    keeper = _fragment_heap(128)
    trimmer = HeapTrimmer(64, interval=3600)
    assert trimmer.free_bytes() > 64 * 2**20
    before = _rss_mb()
    assert trimmer.maybe_trim(force=True) is True and trimmer.trims == 1
    assert _rss_mb() < before - 64, (before, _rss_mb())
    assert trimmer.maybe_trim() is False  # not due again within the interval
    assert HeapTrimmer(100_000).maybe_trim(force=True) is False  # under a huge limit: left alone
    del keeper


@pytest.mark.skipif(platform.system() != "Linux" or not HeapTrimmer(1).active,
                    reason="needs glibc >= 2.33 (mallinfo2, malloc_trim)")
def test_release_trims_whatever_the_limit():
    keeper = _fragment_heap(96)
    trimmer = HeapTrimmer(100_000)
    before = _rss_mb()
    trimmer.release()
    assert trimmer.trims == 1 and _rss_mb() < before - 48
    del keeper
