"""Giving back the resident pages of weights that were copied and will not be read again.

transformers maps a safetensors checkpoint into memory and its tensors point into that mapping.
The padding-free forward copies the query, key and value weights into one fused matrix; the
originals are then unused, but the pages read while copying stay mapped and count in the
process's resident memory (BGE-M3: ~300 MB). ``madvise(MADV_DONTNEED)`` on a file mapping only
unmaps those pages (the file is unchanged and they would be read again from it if touched), so
it is applied to tensors that lie inside a file mapping, and to nothing else. ``no_read_ahead`` gives the
kernel the other hint such tensors need when read sparsely (a word-embedding table left in the file).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap

log = logging.getLogger(__name__)

_MADV_RANDOM, _MADV_DONTNEED = 1, 4


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


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def _advise(libc, tensor, advice: int) -> int:
    """``madvise`` on the whole pages inside ``tensor``; the bytes advised (0 if none or it failed)."""
    page, start = mmap.PAGESIZE, tensor.data_ptr()
    first, last = -(-start // page) * page, (start + tensor.numel() * tensor.element_size()) // page * page
    return last - first if last > first and libc.madvise(first, last - first, advice) == 0 else 0


def release_file_pages(tensors) -> int:
    """Drop the resident pages of ``tensors`` that lie in a file mapping; bytes released (0 where unsupported)."""
    spans, libc = _file_mappings(), _libc()
    if not spans or libc is None:
        return 0
    released = 0
    for tensor in tensors:
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        if any(low <= start and end <= high for low, high in spans):  # heap memory is left to the allocator
            released += _advise(libc, tensor, _MADV_DONTNEED)
    return released


def no_read_ahead(tensor) -> bool:
    """Turn off the kernel's read-ahead on a file-mapped ``tensor`` (``MADV_RANDOM``): a page read from it costs
    that page, not the 128 KB+ around it. True if applied."""
    libc = _libc()
    return libc is not None and _advise(libc, tensor, _MADV_RANDOM) > 0
