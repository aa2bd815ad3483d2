"""HeapTrimmer: gives freed glibc heap memory back to the OS, only when resident memory grew past its limit."""

from __future__ import annotations

import platform

import pytest

from embedding_server.engine.heap import HeapTrimmer
from tests.support.heap import fragment_heap


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_disabled_trimmer_does_nothing():
    trimmer = HeapTrimmer(0)
    assert not trimmer.active and trimmer.grown_bytes() == 0
    assert trimmer.maybe_trim(force=True) is False


class FakeResident:
    """Resident memory the test sets by hand."""

    def __init__(self, mb: int):
        self.bytes = mb * 2**20

    def __call__(self) -> int:
        return self.bytes


needs_glibc = pytest.mark.skipif(platform.system() != "Linux" or not HeapTrimmer(1).active,
                                 reason="needs Linux with glibc (malloc_trim)")


@needs_glibc
def test_the_limit_is_on_growth_since_the_last_trim_not_on_the_resident_total():
    resident = FakeResident(600)
    trimmer = HeapTrimmer(256, resident=resident)
    resident.bytes += 200 * 2**20
    assert trimmer.maybe_trim(force=True) is False  # 200 MB grown since creation: under the limit
    resident.bytes += 100 * 2**20
    assert trimmer.maybe_trim(force=True) is True and trimmer.trims == 1
    resident.bytes = 1_000 * 2**20  # kept after the trim (say, another model loaded meanwhile)
    trimmer.release()
    resident.bytes += 100 * 2**20
    assert trimmer.maybe_trim(force=True) is False  # measured from 1,000 MB, not from 600


@needs_glibc
def test_trim_returns_free_heap_memory_to_the_os_only_over_the_limit():
    trimmer = HeapTrimmer(64, interval=3600)
    keeper = fragment_heap(128)
    before = _rss_mb()
    assert trimmer.grown_bytes() > 64 * 2**20
    assert trimmer.maybe_trim(force=True) is True and trimmer.trims == 1
    assert _rss_mb() < before - 64, (before, _rss_mb())
    assert trimmer.maybe_trim() is False  # not due again within the interval
    assert HeapTrimmer(100_000).maybe_trim(force=True) is False  # under a huge limit: left alone
    del keeper


@needs_glibc
def test_free_blocks_already_given_back_do_not_trigger_another_trim():
    """The free blocks stay in glibc's free count after a trim; trimming again on that count after
    every batch made each batch fault its working memory back in (bulk throughput -10-15%)."""
    trimmer = HeapTrimmer(64, interval=3600)
    keeper = fragment_heap(128)
    assert trimmer.maybe_trim(force=True) is True
    assert trimmer.maybe_trim(force=True) is False and trimmer.trims == 1
    del keeper


@needs_glibc
def test_release_trims_whatever_the_limit():
    keeper = fragment_heap(96)
    trimmer = HeapTrimmer(100_000)
    before = _rss_mb()
    trimmer.release()
    assert trimmer.trims == 1 and _rss_mb() < before - 48
    del keeper
