"""Where vectors go: finished chunks in ``<out>.partial/`` (each written atomically, so a rerun after a crash or
Ctrl-C continues after the last one), then the output assembled chunk by chunk and renamed into place.

Outputs by suffix: ``.npy`` (float32 rows, with the ids in ``<stem>.ids.json``), ``.parquet`` (columns ``id``,
``embedding``) or ``.jsonl`` (``{"id", "embedding"}`` per line).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

OUTPUTS = (".npy", ".parquet", ".jsonl")


def ids_path(out: Path) -> Path:
    """The ids file next to a ``.npy`` output."""
    return out.with_name(out.stem + ".ids.json")


class ChunkStore:
    """Chunks of one run: ``chunk-<k>.npz`` (ids, vectors) and ``run.json`` (what the run is, so a rerun with
    other inputs or options starts afresh instead of mixing results)."""

    def __init__(self, out: Path, signature: dict):
        self.out = out
        self.dir = out.with_name(out.name + ".partial")
        manifest = self.dir / "run.json"
        if self.dir.is_dir() and (not manifest.is_file() or json.loads(manifest.read_text()) != signature):
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(manifest, json.dumps(signature).encode())

    def discard_if_empty(self) -> None:
        """Remove the chunk folder of a run that stopped before finishing any chunk."""
        if self.dir.is_dir() and not any(self.dir.glob("chunk-*.npz")):
            shutil.rmtree(self.dir)

    def _chunk(self, k: int) -> Path:
        return self.dir / f"chunk-{k:07d}.npz"

    def done(self, k: int) -> bool:
        return self._chunk(k).is_file()

    def skipped(self, k: int) -> int:
        """Empty rows skipped in a finished chunk."""
        with np.load(self._chunk(k)) as data:
            return int(data["skipped"])

    def write(self, k: int, ids: list[str], vectors: np.ndarray, skipped: int) -> None:
        tmp = self._chunk(k).with_suffix(".tmp.npz")
        np.savez(tmp, ids=np.array(ids, dtype=object).astype(str), vectors=vectors.astype(np.float32),
                 skipped=np.int64(skipped))
        os.replace(tmp, self._chunk(k))

    def _paths(self) -> list[Path]:
        return [p for p in sorted(self.dir.glob("chunk-*.npz")) if not p.name.endswith(".tmp.npz")]

    def chunks(self) -> Iterator[tuple[list[str], np.ndarray]]:
        for path in self._paths():
            with np.load(path) as data:
                yield data["ids"].tolist(), data["vectors"]

    def assemble(self) -> int:
        """Write the output from the chunks (atomically) and remove them; the number of rows written."""
        suffix = self.out.suffix.lower()
        tmp = self.out.with_name(self.out.name + ".tmp")
        rows = 0
        if suffix == ".npy":
            rows = self._npy(tmp)
        elif suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as f:
                for ids, vectors in self.chunks():
                    for key, vector in zip(ids, vectors.tolist()):
                        f.write(json.dumps({"id": key, "embedding": vector}) + "\n")
                    rows += len(ids)
        else:
            rows = self._parquet(tmp)
        os.replace(tmp, self.out)
        shutil.rmtree(self.dir)
        return rows

    def _npy(self, tmp: Path) -> int:
        """The .npy header for the final shape, then each chunk's bytes in turn (never the whole array in memory);
        the ids file alongside."""
        sizes = [_stored_shape(path) for path in self._paths()]  # from the headers: the vectors are read once
        shape = (sum(n for n, _ in sizes), next((d for n, d in sizes if n), 0))
        rows, ids_tmp = 0, Path(str(tmp) + ".ids")
        with tmp.open("wb") as out, ids_tmp.open("w", encoding="utf-8") as ids_file:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": shape})
            ids_file.write("[")
            for ids, vectors in self.chunks():
                out.write(np.ascontiguousarray(vectors, "<f4").tobytes())
                ids_file.write(("," if rows and ids else "") + ",".join(json.dumps(i) for i in ids))
                rows += len(ids)
            ids_file.write("]\n")
        os.replace(ids_tmp, ids_path(self.out))
        return rows

    def _parquet(self, tmp: Path) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer, rows = None, 0
        for ids, vectors in self.chunks():
            if not ids:
                continue
            flat = pa.array(vectors.reshape(-1), type=pa.float32())
            table = pa.table({"id": pa.array(ids, type=pa.string()),
                              "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += len(ids)
        if writer is None:
            pq.write_table(pa.table({"id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))}),
                           tmp)
        else:
            writer.close()
        return rows


def _stored_shape(chunk: Path) -> tuple[int, int]:
    """(rows, dimension) of a chunk's vectors, from the array's header alone (0 for a chunk of empty rows)."""
    with zipfile.ZipFile(chunk) as archive, archive.open("vectors.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape = read(f)[0]
    return (shape[0], shape[1]) if len(shape) == 2 else (0, 0)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
