"""Which models stay loaded: Ollama's ``keep_alive``, a cap on loaded models and a memory budget.

- Every request holds its model (``use``) from before loading until its result; when the last one ends, the model
  expires after its ``keep_alive`` (the request's, else EMBED_KEEP_ALIVE; the default model: for ever unless a
  request says otherwise). ``0`` unloads it as soon as it is idle, a negative value keeps it for ever.
- A model with requests in flight or queued inputs is never unloaded; one that expired while busy unloads when its
  work ends.
- Before a load, idle models are unloaded least recently used first (never the default model) while the load would
  exceed EMBED_MAX_LOADED_MODELS or EMBED_MEMORY_LIMIT_MB (the process's resident memory plus the model's estimate,
  ``memory.estimate_bytes``); if that is not enough, the request gets ``MemoryLimitReached`` and nothing else moves.
- Unloading stops the model's worker, drops the weights and gives freed heap memory back to the OS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from typing import TYPE_CHECKING

from .errors import MemoryLimitReached
from .heap import HeapTrimmer, resident_bytes
from .memory import estimate_bytes
from .registry import ModelEntry

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)


class Lifecycle:
    """Loading room, expiry and unloading for one engine's models."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # ----- requests --------------------------------------------------------------------------
    def keep_alive(self, entry: ModelEntry, requested: float | None) -> float:
        """Seconds ``entry`` stays loaded once idle (``inf``: for ever)."""
        if requested is not None:
            return requested
        return math.inf if entry is self.engine.default_entry() else self.engine.settings.keep_alive_seconds

    @contextlib.asynccontextmanager
    async def use(self, entry: ModelEntry, keep_alive: float | None = None):
        """Hold ``entry`` for one request; on the way out, set when it expires."""
        entry.active += 1
        try:
            yield entry
        finally:
            entry.active -= 1
            entry.last_used = time.time()
            seconds = self.keep_alive(entry, keep_alive)
            entry.expires_at = None if math.isinf(seconds) else entry.last_used + seconds
            if entry.expires_at is not None:
                self.start()
                self._wake.set()

    # ----- room for a load ---------------------------------------------------------------------
    def estimate(self, entry: ModelEntry) -> int:
        settings = self.engine.settings
        return estimate_bytes(entry.path, self.engine.dtype_for(entry), settings.short_batch_copy_mb)

    async def make_room(self, entry: ModelEntry) -> None:
        """Unload idle models until ``entry`` fits the model cap and the memory limit; MemoryLimitReached if not."""
        settings = self.engine.settings
        cap, limit = settings.max_loaded_models, settings.memory_limit_mb * 2**20
        if not cap and not limit:
            return
        need = self.estimate(entry)
        while True:
            loaded = [e for e in self.engine.registry.entries.values() if e.loaded and e is not entry]
            over_cap = bool(cap) and len(loaded) >= cap
            over_memory = bool(limit) and resident_bytes() + need > limit
            if not (over_cap or over_memory):
                return
            idle = sorted((e for e in loaded if self._idle(e) and e is not self.engine.default_entry()),
                          key=lambda e: e.last_used)
            if not idle:
                break
            log.info("unloading %s (least recently used) to make room for %s", idle[0].name, entry.name)
            await self.unload(idle[0])
        mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
        why = (f"EMBED_MAX_LOADED_MODELS={cap} models are loaded and busy" if over_cap else
               f"it needs about {mb(need)} and the process holds {mb(resident_bytes())} of EMBED_MEMORY_LIMIT_MB="
               f"{settings.memory_limit_mb} with no idle model left to unload")
        raise MemoryLimitReached(f"model '{entry.name}' (estimated {mb(need)}) cannot be loaded now: {why}; "
                                 "retry later", param="model")

    # ----- unloading ----------------------------------------------------------------------------
    @staticmethod
    def _idle(entry: ModelEntry) -> bool:
        worker = entry.worker
        return entry.loaded and entry.active == 0 and (worker is None or worker.queued_inputs == 0)

    async def unload(self, entry: ModelEntry) -> None:
        """Stop ``entry``'s worker and free its weights (the caller checked it is idle)."""
        worker = entry.worker
        if worker is None:
            return
        entry.worker = entry.encoder = None
        entry.expires_at, entry.resident_bytes, entry.parked = None, 0, True
        await asyncio.to_thread(worker.stop, 10.0)
        del worker
        before = resident_bytes()
        gc.collect()
        HeapTrimmer(1).release()
        log.info("model %s unloaded (resident memory %.0f -> %.0f MB)", entry.name, before / 2**20,
                 resident_bytes() / 2**20)
        self.engine.registry.drop_if_removed(entry)

    def start(self) -> None:
        """Start the expiry loop on the running event loop, unless it runs there already."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._expire_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def expire_due(self) -> list[str]:
        """Unload every idle model whose keep_alive has run out; their names."""
        now, gone = time.time(), []
        for entry in list(self.engine.registry.entries.values()):
            if entry.loaded and entry.expires_at is not None and entry.expires_at <= now and self._idle(entry):
                log.info("model %s expired (keep_alive)", entry.name)
                await self.unload(entry)
                gone.append(entry.name)
        return gone

    async def _expire_forever(self) -> None:
        while True:
            await self.expire_due()
            # A busy model that expired is looked at again when its last request ends (``use`` wakes this loop).
            pending = [e.expires_at for e in self.engine.registry.entries.values()
                       if e.loaded and e.expires_at is not None and self._idle(e)]
            timeout = max(min(pending) - time.time(), 0.05) if pending else None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
