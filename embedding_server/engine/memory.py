"""How much resident memory loading a model folder will add, estimated before loading it.

From the checkpoint's tensor shapes (the safetensors headers, or the file size otherwise) and the dtype it will be
served in: the encoder's weights at that dtype, the short-batch blocked copies when the model is small enough to get
them, a share of the word-embedding table (read from the file; only the rows texts use become resident), the
tokenizer (its vocabulary) and a fixed overhead. Measured against the RSS growth of loads in the tests (within
~15% on all-MiniLM-L6-v2 and a 6-layer BGE-M3-shaped folder in both dtypes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}
EMBEDDING_SHARE = 0.05  # of the word-embedding table resident after typical use (file pages of the rows read)
BYTES_PER_VOCAB_ENTRY = 300  # the tokenizer's vocabulary, merges and lookup tables
OVERHEAD_BYTES = 32 * 2**20  # per model: module objects, oneDNN scratch, calibration


def _tensors(folder: Path) -> list[tuple[str, str, int]]:
    """(name, dtype, element count) of every tensor in the folder's safetensors files ([] if none)."""
    out = []
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with file.open("rb") as f:
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        except (OSError, ValueError):
            continue
        for name, meta in header.items():
            if name != "__metadata__":
                out.append((name, meta["dtype"], math.prod(meta["shape"])))
    return out


def estimate_bytes(folder: Path, dtype: str, short_batch_copy_mb: int = 0) -> int:
    """Resident bytes a load of ``folder`` served in ``dtype`` ("float32" or "bfloat16") is expected to add."""
    folder = Path(folder)
    tensors = _tensors(folder)
    if not tensors:  # pytorch_model.bin: its size, converted to float32 (bf16 halves it)
        size = sum(f.stat().st_size for f in folder.glob("*.bin"))
        return int(size * (0.5 if dtype == "bfloat16" else 1.0)) + OVERHEAD_BYTES
    served = 2 if dtype == "bfloat16" else 4
    embedding = sum(n * _BYTES.get(t, 4) for name, t, n in tensors if name.endswith("word_embeddings.weight"))
    rows = sum(n for name, _, n in tensors if name.endswith("word_embeddings.weight"))
    others = sum(n for name, _, n in tensors if not name.endswith("word_embeddings.weight"))
    dense = sum(n for name, _, n in tensors if ".layer." in name and name.endswith("dense.weight")
                or name.endswith(("query.weight", "key.weight", "value.weight"))) * served
    copies = dense if dense <= short_batch_copy_mb * 2**20 else 0
    width = max((n for name, _, n in tensors if name.endswith("position_embeddings.weight")), default=0)
    hidden = max(1, width // max(1, _positions(folder)))
    vocab = rows // hidden if rows else 0
    return int(others * served + copies + embedding * EMBEDDING_SHARE + vocab * BYTES_PER_VOCAB_ENTRY
               + OVERHEAD_BYTES)


def _positions(folder: Path) -> int:
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", 1))
    except (OSError, ValueError, TypeError):
        return 1
