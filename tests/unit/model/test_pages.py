"""Pages of copied weights leave the resident set only when they are mapped from a file."""

from __future__ import annotations

import numpy as np
import torch

from embedding_server.model.pages import release_file_pages


def _rss_file_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


def test_file_mapped_pages_are_released_and_stay_readable(tmp_path):
    data = np.arange(8 * 2**20 // 4, dtype=np.float32)  # 8 MB
    path = tmp_path / "weights.bin"
    data.tofile(path)
    mapped = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c"))  # copy-on-write, as a private mapping of a checkpoint
    assert float(mapped.sum()) == float(data.sum())  # every page read: resident
    before = _rss_file_kb()
    released = release_file_pages([mapped])
    assert released >= 8 * 2**20 - 2 * 4096
    assert before - _rss_file_kb() >= 7 * 1024  # KB: most of the 8 MB left the resident set
    assert torch.equal(mapped, torch.from_numpy(data))  # read again from the file


def test_heap_tensors_are_left_alone():
    heap = torch.arange(4 * 2**20, dtype=torch.float32)
    assert release_file_pages([heap]) == 0
    assert torch.equal(heap, torch.arange(4 * 2**20, dtype=torch.float32))
