"""Which models stay loaded: Ollama's ``keep_alive``, a cap on loaded models and a memory budget.

- Every request holds its model (``use``) from before loading until its result. Each request sets the model's
  keep_alive (its own, else EMBED_KEEP_ALIVE; the default model: for ever unless a request says otherwise): the
  latest request wins, as Ollama's session duration does, and it applies when the model becomes idle. So
  ``keep_alive: 0`` (``ollama stop``) sent while another request runs unloads the model when that request ends.
- A model with requests in flight or queued inputs is never unloaded.
- Before a load, idle models are unloaded least recently used first (never the default model) while the load would
  exceed EMBED_MAX_LOADED_MODELS or EMBED_MEMORY_LIMIT_MB. Loads in progress count against the cap and reserve
  their estimate (``memory.estimate_bytes``); models being unloaded, and workers that did not stop, count too. If
  that is not enough, the request gets ``MemoryLimitReached`` and nothing else moves.
- Unloading is a state: requests for a model being unloaded wait for it to end, then load it again. It stops the
  model's worker, drops the weights and gives freed heap memory back to the OS. A worker that does not stop in
  time is logged, counted (``on_stuck``) and keeps counting against the cap while its thread lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from typing import Callable

from ..settings import Settings
from .errors import MemoryLimitReached
from .heap import HeapTrimmer, resident_bytes
from .registry import ModelEntry, ModelRegistry

log = logging.getLogger(__name__)


class Lifecycle:
    """Loading room, expiry and unloading for one registry's models."""

    STOP_SECONDS = 10.0  # how long an unload waits for the model's worker to finish

    def __init__(self, registry: ModelRegistry, settings: Settings, estimate: Callable[[ModelEntry], int],
                 default_entry: Callable[[], ModelEntry | None], on_stuck: Callable[[str], None] | None = None):
        self.registry, self.settings, self._estimate, self._default = registry, settings, estimate, default_entry
        self.on_stuck = on_stuck
        self.stuck: list = []  # workers whose thread did not stop when their model was unloaded
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # ----- requests --------------------------------------------------------------------------
    def keep_alive(self, entry: ModelEntry, requested: float | None) -> float:
        """Seconds ``entry`` stays loaded once idle (``inf``: for ever)."""
        if requested is not None:
            return requested
        return math.inf if entry is self._default() else self.settings.keep_alive_seconds

    @contextlib.asynccontextmanager
    async def use(self, entry: ModelEntry, keep_alive: float | None = None):
        """Hold ``entry`` for one request, which sets its keep_alive; once idle, it expires after that."""
        entry.active += 1
        entry.keep_alive = self.keep_alive(entry, keep_alive)
        try:
            yield entry
        finally:
            entry.active -= 1
            entry.last_used = time.time()
            if entry.active == 0:
                entry.expires_at = None if math.isinf(entry.keep_alive) else entry.last_used + entry.keep_alive
                if entry.expires_at is not None:
                    self.start()
                    self._wake.set()

    # ----- room for a load ---------------------------------------------------------------------
    async def make_room(self, entry: ModelEntry) -> None:
        """Unload idle models until ``entry`` fits the model cap and the memory limit; MemoryLimitReached if not.
        Returns without yielding after its last check, so the caller can start the load before anyone else looks."""
        cap, limit = self.settings.max_loaded_models, self.settings.memory_limit_mb * 2**20
        if not cap and not limit:
            return
        if entry.estimate is None:  # reads the checkpoint's headers: off the event loop, once
            entry.estimate = await asyncio.to_thread(self._estimate, entry)
        need = entry.estimate
        while True:
            others = [e for e in self.registry.entries.values()
                      if e is not entry and (e.loaded or e.loading is not None or e.unloading is not None)]
            self.stuck = [w for w in self.stuck if w.thread_alive]
            over_cap = bool(cap) and len(others) + len(self.stuck) >= cap
            reserved = sum(e.estimate or 0 for e in others if e.loading is not None)
            over_memory = bool(limit) and resident_bytes() + reserved + need > limit
            if not (over_cap or over_memory):
                return
            idle = sorted((e for e in others if self._idle(e) and e is not self._default()), key=lambda e: e.last_used)
            if idle:
                log.info("unloading %s (least recently used) to make room for %s", idle[0].name, entry.name)
                await self.unload(idle[0])
            elif any(e.unloading is not None for e in others):  # room is being made: look again once it is
                await asyncio.wait({e.unloading for e in others if e.unloading is not None},
                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                break
        mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
        why = (f"EMBED_MAX_LOADED_MODELS={cap} models are loaded, loading or busy" if over_cap else
               f"it needs about {mb(need)} and the process holds {mb(resident_bytes())} (and {mb(reserved)} reserved "
               f"by loads under way) of EMBED_MEMORY_LIMIT_MB={self.settings.memory_limit_mb} with no idle model left to "
               "unload")
        raise MemoryLimitReached(f"model '{entry.name}' (estimated {mb(need)}) cannot be loaded now: {why}; "
                                 "retry later", param="model")

    # ----- unloading ----------------------------------------------------------------------------
    @staticmethod
    def _idle(entry: ModelEntry) -> bool:
        worker = entry.worker
        return (entry.loaded and entry.active == 0 and entry.unloading is None
                and (worker is None or worker.queued_inputs == 0))

    async def unload(self, entry: ModelEntry) -> None:
        """Stop ``entry``'s worker and free its weights (the caller checked it is idle)."""
        worker = entry.worker
        if worker is None or entry.unloading is not None:
            return
        entry.unloading = asyncio.get_running_loop().create_future()
        entry.worker = entry.encoder = None
        entry.expires_at, entry.resident_bytes, entry.parked = None, 0, True
        try:
            before = resident_bytes()
            if not await asyncio.to_thread(worker.stop, self.STOP_SECONDS):
                self.stuck.append(worker)
                log.error("model %s: its worker did not stop within %g s; its memory stays in use until it does",
                          entry.name, self.STOP_SECONDS)
                if self.on_stuck is not None:
                    self.on_stuck(entry.name)
            del worker
            await asyncio.to_thread(_release_memory)
            log.info("model %s unloaded (resident memory %.0f -> %.0f MB)", entry.name, before / 2**20,
                     resident_bytes() / 2**20)
        finally:
            entry.unloading.set_result(None)
            entry.unloading = None
        self.registry.drop_if_removed(entry)

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
        for entry in list(self.registry.entries.values()):
            if entry.loaded and entry.expires_at is not None and entry.expires_at <= now and self._idle(entry):
                log.info("model %s expired (keep_alive)", entry.name)
                await self.unload(entry)
                gone.append(entry.name)
        return gone

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.expire_due()
            except Exception:  # noqa: BLE001 - one failed unload must not end expiry for every model
                log.exception("unloading expired models failed; trying again in a second")
                await asyncio.sleep(1.0)
            # A busy model is looked at again when its last request ends (``use`` wakes this loop).
            pending = [e.expires_at for e in self.registry.entries.values()
                       if e.loaded and e.expires_at is not None and self._idle(e)]
            timeout = max(min(pending) - time.time(), 0.05) if pending else None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _release_memory() -> None:
    """Collect the unloaded model's objects and give the freed heap back to the OS (in a thread: it takes a while)."""
    gc.collect()
    HeapTrimmer(1).release()
