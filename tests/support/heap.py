"""A fragmented C heap on demand, for the heap-trimmer tests."""

from __future__ import annotations


def fragment_heap(mb: int) -> bytearray:
    """Leave ``mb`` MB free inside this thread's heap: blocks under the mmap threshold, then a block above
    them that stays allocated (returned; keep it alive), so that glibc cannot give the freed ones back by
    shrinking the heap top."""
    blocks = [bytearray(64 * 1024) for _ in range(mb * 16)]  # 64 KB: heap, not mmap
    keeper = bytearray(64 * 1024)
    del blocks
    return keeper
