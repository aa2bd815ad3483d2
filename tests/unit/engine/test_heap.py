"""HeapTrimmer: gives freed glibc heap memory back to the OS, only when resident memory grew past its limit."""

from __future__ import annotations

import platform

import pytest

from embedding_server.engine.heap import HeapTrimmer
from tests.support.heap import fragment_heap, in_fresh_process, rss_mb


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


def _trim_over_and_under_the_limit() -> dict:
    """In a fresh interpreter: 128 MB left free in the heap, then a trimmer with a 64 MB limit."""
    HeapTrimmer(1).release()  # start from a heap with nothing free: the 128 MB are new pages
    trimmer = HeapTrimmer(64, interval=3600)
    keeper = fragment_heap(128)
    before, grown = rss_mb(), trimmer.grown_bytes()
    trimmed = trimmer.maybe_trim(force=True)
    after, trims = rss_mb(), trimmer.trims
    again = trimmer.maybe_trim()  # not due again within the interval
    huge_limit = HeapTrimmer(100_000).maybe_trim(force=True)
    del keeper
    return {"grown_mb": grown / 2**20, "trimmed": trimmed, "trims": trims, "freed_mb": before - after,
            "again": again, "huge_limit": huge_limit}


@needs_glibc
def test_trim_returns_free_heap_memory_to_the_os_only_over_the_limit():
    r = in_fresh_process(_trim_over_and_under_the_limit)
    assert r["grown_mb"] > 64, r  # the fragmented heap counts as growth since the trimmer was made
    assert r["trimmed"] is True and r["trims"] == 1, r
    assert r["freed_mb"] > 64, r  # most of the 128 MB left the resident set
    assert r["again"] is False and r["huge_limit"] is False, r  # not due again; under a huge limit: left alone


def _trim_twice() -> dict:
    HeapTrimmer(1).release()
    trimmer = HeapTrimmer(64, interval=3600)
    keeper = fragment_heap(128)
    first, second = trimmer.maybe_trim(force=True), trimmer.maybe_trim(force=True)
    del keeper
    return {"first": first, "second": second, "trims": trimmer.trims}


@needs_glibc
def test_free_blocks_already_given_back_do_not_trigger_another_trim():
    """The free blocks stay in glibc's free count after a trim; trimming again on that count after
    every batch made each batch fault its working memory back in (bulk throughput -10-15%)."""
    assert in_fresh_process(_trim_twice) == {"first": True, "second": False, "trims": 1}


def _release_under_a_huge_limit() -> dict:
    HeapTrimmer(1).release()
    keeper = fragment_heap(96)
    trimmer = HeapTrimmer(100_000)
    before = rss_mb()
    trimmer.release()
    freed = before - rss_mb()
    del keeper
    return {"trims": trimmer.trims, "freed_mb": freed}


@needs_glibc
def test_release_trims_whatever_the_limit():
    r = in_fresh_process(_release_under_a_huge_limit)
    assert r["trims"] == 1 and r["freed_mb"] > 48, r
