"""Pages of copied weights leave the resident set only when they are mapped from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from embedding_server.model.pages import release_file_pages


def _resident_kb(path) -> int:
    """Resident KB of this process's mappings of ``path`` (/proc/self/smaps): that file's pages only, whatever else
    the process maps or unmaps meanwhile."""
    total, ours = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header: range perms offset dev inode [path]
            ours = len(fields) >= 6 and fields[5] == str(path)
        elif ours and fields and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_file_mapped_pages_are_released_and_stay_readable(tmp_path):
    data = np.arange(8 * 2**20 // 4, dtype=np.float32)  # 8 MB
    path = tmp_path / "weights.bin"
    data.tofile(path)
    mapped = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c"))  # copy-on-write, as a private mapping of a checkpoint
    assert float(mapped.sum()) == float(data.sum())  # every page read: resident
    assert _resident_kb(path) >= 8 * 1024 - 8
    released = release_file_pages([mapped])
    assert released >= 8 * 2**20 - 2 * 4096
    assert _resident_kb(path) <= 8  # KB: the mapping left the resident set (but for a partial page at an end)
    assert torch.equal(mapped, torch.from_numpy(data))  # read again from the file
    assert _resident_kb(path) >= 8 * 1024 - 8


def test_heap_tensors_are_left_alone():
    heap = torch.arange(4 * 2**20, dtype=torch.float32)
    assert release_file_pages([heap]) == 0
    assert torch.equal(heap, torch.arange(4 * 2**20, dtype=torch.float32))
