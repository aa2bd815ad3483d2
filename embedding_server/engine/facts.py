"""A model's facts as plain values: what the listing routes show and what TEI's routes need to know of the model,
read from the loaded encoder when there is one, else from the folder. Nothing in them refers to the model itself,
so holding them keeps nothing alive and they stay valid when the model is unloaded."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .registry import ModelEntry
from .types import DENSE, HEAD_FILES


@dataclass(frozen=True)
class ModelFacts:
    """One model: its name, kind and folder facts, and its shape (exact when loaded, from config.json otherwise)."""

    name: str
    task: str  # "embed" or "rerank"
    architecture: str
    dimension: int
    context_length: int
    parameters: int
    pooling: str | None
    dtype: str  # of the weights as served (or as they will be)
    outputs: frozenset[str]  # the heads it gives: dense, and BGE-M3's sparse / colbert when its folder has them
    size: int  # bytes of its folder
    modified: float  # newest mtime in its folder
    digest: str  # of its files' names, sizes and mtimes
    loaded: bool
    expires_at: float | None  # wall clock; None: never (when loaded)
    resident_bytes: int  # what its load added (when loaded)


@functools.lru_cache(maxsize=64)
def _folder(path: Path, mtime: float) -> tuple[int, float, str]:
    """Total size, newest mtime and a stable digest (of names, sizes and mtimes) of a folder (``mtime``: the
    folder's own, so that a changed folder is read again)."""
    files = sorted(f for f in path.rglob("*") if f.is_file())
    digest = hashlib.sha256()
    size, newest = 0, 0.0
    for f in files:
        stat = f.stat()
        size += stat.st_size
        newest = max(newest, stat.st_mtime)
        digest.update(f"{f.relative_to(path)}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
    return size, newest, digest.hexdigest()


def _config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def facts_of(entry: ModelEntry, dtype: str) -> ModelFacts:
    """``entry``'s facts (reads its folder: call it off the event loop). ``dtype``: what it is or will be served in."""
    try:
        size, newest, digest = _folder(entry.path, entry.path.stat().st_mtime)
    except OSError:  # the folder was removed (or is being changed) under us: described without it
        size, newest, digest = 0, 0.0, ""
    encoder = entry.encoder
    if encoder is not None:
        d = encoder.details
        shape = (d.architecture, d.dimension, d.context_length, d.parameters, d.pooling)
        dtype, outputs = getattr(d, "dtype", dtype), frozenset(getattr(encoder, "outputs", {DENSE}))
    else:
        config = _config(entry.path)
        shape = (str(config.get("model_type", "unknown")), int(config.get("hidden_size", 0)),
                 int(config.get("max_position_embeddings", 0)), size // 4, None)
        outputs = frozenset({DENSE} | {o for o, file in HEAD_FILES.items() if (entry.path / file).is_file()})
    return ModelFacts(entry.name, entry.task, *shape, dtype, outputs, size, newest, digest, entry.loaded,
                      entry.expires_at, entry.resident_bytes)
