"""Giving back the resident pages of weights that were copied and will not be read again.

transformers maps a safetensors checkpoint into memory and its tensors point into that mapping.
The padding-free forward copies the query, key and value weights into one fused matrix; the
originals are then unused, but the pages read while copying stay mapped and count in the
process's resident memory (BGE-M3: ~300 MB). ``madvise(MADV_DONTNEED)`` on a file mapping only
unmaps those pages (the file is unchanged and they would be read again from it if touched), so
it is applied to tensors that lie inside a file mapping, and to nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's mappings backed by a file on disk."""
    spans = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    if spans and spans[-1][1] == start:  # one file's mapping split by madvise: one span
                        start = spans.pop()[0]
                    spans.append((start, end))
    except OSError:
        return []
    return spans


def release_file_pages(tensors) -> int:
    """Drop the resident pages of ``tensors`` that lie in a file mapping; bytes released (0 where unsupported)."""
    spans = _file_mappings()
    if not spans:
        return 0
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return 0
    page, released = mmap.PAGESIZE, 0
    for tensor in tensors:
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        if not any(low <= start and end <= high for low, high in spans):
            continue  # heap memory: left to the allocator
        first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor only
        if last > first and libc.madvise(first, last - first, _MADV_DONTNEED) == 0:
            released += last - first
    return released
