"""Loading models: one shared load per model, bounded by a deadline, its worker installed on the event loop, and a
worker that died replaced.

- A load runs in a thread (the model's own worker thread builds and warms the model, see ``ModelWorker.launch``);
  every request for the model meanwhile waits for that one load, each at most until the load's deadline
  (EMBED_LOAD_TIMEOUT_S from its start). A load past its deadline fails its waiters (503) but is left to finish:
  if it does, the model is served; until then no second copy is started.
- Only the event loop changes a model's entry: the thread returns the worker, the loop installs it, and a worker
  whose thread died before that is never installed (its death is counted and, for the default model, the load is
  tried again).
- A failed load's error is logged once and its frames are dropped, so that the weights it had built are freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

from ..model.checkpoint import CheckpointError
from .errors import EngineError, ModelUnavailable, drop_frames
from .heap import resident_bytes
from .registry import ModelEntry

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """What a finished load hands the event loop."""

    worker: object
    seconds: float
    resident_bytes: int


class Loader:
    """Starts, awaits and installs loads; notices dead workers."""

    def __init__(self, build: Callable[[ModelEntry], object], timeout_seconds: float,
                 on_load: Callable[[ModelEntry], None], on_death: Callable[[ModelEntry, str], None]):
        self._build, self.timeout_seconds = build, timeout_seconds
        self._on_load, self._on_death = on_load, on_death

    def start(self, entry: ModelEntry) -> None:
        """Begin loading ``entry`` (on the event loop; the caller checked that nothing else is under way)."""
        entry.load_started = time.monotonic()
        entry.loading = asyncio.ensure_future(self._load(entry))

    async def wait(self, entry: ModelEntry) -> None:
        """Wait for ``entry``'s load, at most until its deadline; ModelUnavailable if it failed or is late."""
        loading = entry.loading
        if loading is None:
            return
        remaining = entry.load_started + self.timeout_seconds - time.monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            error = await asyncio.wait_for(asyncio.shield(loading), remaining)
        except asyncio.TimeoutError:
            raise ModelUnavailable(f"model '{entry.name}' has been loading for more than {self.timeout_seconds:g} s "
                                   "(EMBED_LOAD_TIMEOUT_S); retry later, the server log says more") from None
        if error is not None:
            raise ModelUnavailable(error)

    async def _load(self, entry: ModelEntry) -> str | None:
        """The load itself: None once installed, else the message its waiters get (never raises)."""
        watchdog = asyncio.get_running_loop().call_later(self.timeout_seconds, self._late, entry)
        try:
            loaded = await asyncio.to_thread(self._timed_build, entry)
        except Exception as exc:  # noqa: BLE001 - any failure: one log line, reported to every waiter
            message = self._failed(entry, exc)
            drop_frames(exc)
            return message
        finally:
            watchdog.cancel()
            entry.loading = None
        return self._install(entry, loaded)

    def _timed_build(self, entry: ModelEntry) -> Loaded:
        started, before = time.perf_counter(), resident_bytes()
        worker = self._build(entry)
        return Loaded(worker, time.perf_counter() - started, max(resident_bytes() - before, 0))

    def _install(self, entry: ModelEntry, loaded: Loaded) -> str | None:
        """On the event loop: serve the new worker, unless its thread already died."""
        worker = loaded.worker
        if not worker.alive:
            reason = worker.died or "its worker thread ended"
            entry.deaths += 1
            log.error("model %s: worker died right after loading (%s)", entry.name, reason)
            self._on_death(entry, reason)
            return f"model '{entry.name}' stopped working and is being reloaded; retry"
        entry.worker, entry.encoder, entry.parked, entry.error = worker, worker.embedder, False, None
        entry.load_seconds, entry.loaded_at, entry.resident_bytes = loaded.seconds, time.time(), loaded.resident_bytes
        log.info("model %s loaded from %s in %.2fs (%s)", entry.name, entry.path, loaded.seconds,
                 getattr(worker.embedder, "forward_kind", "custom encoder"))
        self._on_load(entry)
        return None

    @staticmethod
    def _failed(entry: ModelEntry, exc: Exception) -> str:
        if isinstance(exc, EngineError):
            return exc.message
        error = str(exc) if isinstance(exc, CheckpointError) else f"{entry.path}: {exc!r}"
        error = " ".join(error.split())  # one log line, however the library words it
        # Retried on each request: the same failure is logged once, a different one again.
        log.log(logging.DEBUG if error == entry.error else logging.ERROR, "model load failed: %s", error)
        entry.error = error
        return f"model '{entry.name}' cannot be loaded; the server log says why"

    def _late(self, entry: ModelEntry) -> None:
        log.error("model %s: still loading after %g s (EMBED_LOAD_TIMEOUT_S); its requests are refused until it "
                  "finishes (a stalled read of %s?)", entry.name, self.timeout_seconds, entry.path)

    def worker_died(self, entry: ModelEntry) -> bool:
        """On the event loop, after a worker's thread ended abnormally: drop it if it is ``entry``'s installed
        worker (True). A worker not installed yet is handled by ``_install``."""
        worker = entry.worker
        if worker is None or worker.alive:
            return False
        entry.worker = entry.encoder = None
        entry.deaths += 1
        self._on_death(entry, worker.died or "its worker thread ended")
        return True
