"""One worker thread per loaded model: queues inputs, packs batches, runs the forward pass."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .errors import InferenceFailed, Overloaded
from .heap import HeapTrimmer
from .scheduler import CostModel, is_small, plan_batch

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the worker needs of a model: batched id lists in, normalised vectors out."""

    def embed(self, batch: list[list[int]]) -> np.ndarray: ...


@dataclass(eq=False)
class _Ticket:
    """One submitted request: its result rows fill in as batches complete."""

    request_id: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    size: int
    remaining: int
    rows: np.ndarray | None = None
    cancelled: bool = False


@dataclass(eq=False)
class _Item:
    length: int
    request_id: int
    index: int
    ids: list[int] = field(repr=False)
    ticket: _Ticket = field(repr=False)


@dataclass
class BatchStats:
    """Passed to the ``on_batch`` observer after every forward pass."""

    size: int
    tokens: int
    padded_tokens: int
    seconds: float
    failed: bool


class ModelWorker:
    """Owns one model; turns concurrent submissions into well-packed batches."""

    def __init__(
        self,
        embedder: Embedder | None,
        name: str,
        max_batch_tokens: int,
        max_batch_size: int,
        max_queued_inputs: int,
        cost: CostModel = CostModel(),
        on_batch: Callable[[BatchStats], None] | None = None,
        coalesce_seconds: float = 0.004,
        trimmer: HeapTrimmer | None = None,
    ):
        self.embedder, self.name = embedder, name
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_queued_inputs, self.cost, self.on_batch = max_queued_inputs, cost, on_batch
        self._queues: dict[int, list[_Item]] = {}  # request id -> items sorted by length
        self._queued = 0
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"model-{name}", daemon=True)
        self.last_batch_failed = False
        self.batches_run = 0
        self._last_requests = 0  # distinct requests in the last batch (see _coalesce)
        self._skipped_bulk = False  # the last batch served only small requests while bulk waited
        self.coalesce_seconds = coalesce_seconds
        self.trimmer = trimmer  # returns freed heap memory to the OS between batches
        self._factory: Callable[[], Embedder] | None = None  # see launch()
        self._cost_of: Callable[[Embedder], CostModel] | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None

    @classmethod
    def launch(cls, factory: Callable[[], Embedder], name: str, *args,
               cost_of: Callable[[Embedder], CostModel] | None = None, **kwargs) -> ModelWorker:
        """Start a worker whose own thread builds the model (``factory``, then ``cost_of`` for the
        scheduler's cost model) before serving it. Blocks until then; raises what they raised.

        All of a model's torch work thus runs on one thread. Each thread that runs parallel torch
        ops gets its own OpenMP team of helper threads, and once a process has more of those than
        cores, libgomp stops spinning between ops: every op then pays a sleep and a wake-up
        (measured on 2 cores: ~100 context switches and +2-3 ms per one-sentence forward when the
        model was loaded and warmed up on another thread).
        """
        worker = cls(None, name, *args, **kwargs)
        worker._factory, worker._cost_of = factory, cost_of
        worker.start()
        worker._loaded.wait()
        if worker._load_error is not None:
            raise worker._load_error
        return worker

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued_inputs(self) -> int:
        return self._queued

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish what is queued, then end the thread. True if it ended within ``timeout``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(self, batch_ids: list[list[int]]) -> _Ticket:
        """Queue one request's inputs; its ticket's future resolves to a (n, dim) array."""
        loop = asyncio.get_running_loop()
        ticket = _Ticket(next(self._ids), loop.create_future(), loop, len(batch_ids), len(batch_ids))
        if not batch_ids:
            ticket.future.set_result(np.zeros((0, 0), np.float32))
            return ticket
        items = sorted(
            (_Item(len(ids), ticket.request_id, i, ids, ticket) for i, ids in enumerate(batch_ids)),
            key=lambda item: item.length,
        )
        with self._cond:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if self._queued + len(items) > self.max_queued_inputs and self._queued > 0:
                raise Overloaded(
                    f"server busy: {self._queued} inputs queued, limit max_queued_inputs={self.max_queued_inputs}"
                )
            self._queues[ticket.request_id] = items
            self._queued += len(items)
            self._cond.notify()
        return ticket

    def cancel(self, ticket: _Ticket) -> None:
        """Drop a request's queued inputs (its client went away)."""
        with self._cond:
            ticket.cancelled = True
            dropped = self._queues.pop(ticket.request_id, [])
            self._queued -= len(dropped)

    def _take_batch(self, idle_timeout: float | None = None) -> list[_Item] | None:
        """The next batch; None when stopping, or [] after ``idle_timeout`` seconds without work."""
        with self._cond:
            while not self._queues and not self._stopping:
                if not self._cond.wait(idle_timeout) and not self._queues:
                    return []
            if not self._queues:
                return None
            self._coalesce()
            queues = list(self._queues.values())
            # Small requests get a batch of their own, unless the previous batch already skipped
            # waiting bulk work: then it is bulk's turn.
            batch = plan_batch(queues, self.max_batch_tokens, self.max_batch_size, self.cost,
                               only="large" if self._skipped_bulk else "small")
            served = {item.request_id for item in batch}
            self._skipped_bulk = any(not is_small(q, self.max_batch_size) for q in queues) and all(
                is_small(self._queues[r], self.max_batch_size) for r in served)
            chosen = {id(item) for item in batch}
            for request_id in {item.request_id for item in batch}:
                rest = [item for item in self._queues[request_id] if id(item) not in chosen]
                if rest:
                    self._queues[request_id] = rest
                else:
                    del self._queues[request_id]
            self._queued -= len(batch)
            self._last_requests = len(served)
            return batch

    def _coalesce(self) -> None:
        """Briefly wait for the concurrent clients seen in the last batch (called under the lock).

        When the last batch served several requests and fewer are queued now, with too few
        inputs to fill a batch, their next requests are usually a few milliseconds away: waiting
        for them (at most ``coalesce_seconds``) turns alternating 1-and-7 batches into batches of 8.
        A lone or sequential client never waits: its last batch served one request.
        """
        deadline = time.monotonic() + self.coalesce_seconds
        while (len(self._queues) < self._last_requests and self._queued < self.max_batch_size
               and not self._stopping):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _build(self) -> bool:
        """Run the factory on this thread (see launch); False if it failed."""
        try:
            if self._factory is not None:
                self.embedder = self._factory()
                if self._cost_of is not None:
                    self.cost = self._cost_of(self.embedder)
        except BaseException as exc:  # noqa: BLE001 - handed to launch()'s caller
            self._load_error = exc
            return False
        finally:
            if self.trimmer is not None:
                self.trimmer.release()  # loading and warm-up leave freed blocks behind
            self._loaded.set()
        return True

    def _run(self) -> None:
        import torch

        if not self._build():
            return
        trimmer, idle_trim = self.trimmer, None
        with torch.inference_mode():
            while (batch := self._take_batch(idle_trim)) is not None:
                if not batch:  # a while without work: give back what the last burst left behind
                    trimmer.release()
                    idle_trim = None
                    continue
                self._run_batch(batch)
                if trimmer is not None and trimmer.active:
                    trimmer.maybe_trim()
                    idle_trim = trimmer.idle_seconds

    def _run_batch(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        tokens = sum(item.length for item in batch)
        padded = len(batch) * max(item.length for item in batch)
        try:
            vectors = self.embedder.embed([item.ids for item in batch])
        except Exception as exc:  # noqa: BLE001 - isolate the failure to this batch's requests
            log.exception("model %s: batch of %d inputs failed", self.name, len(batch))
            self.last_batch_failed = True
            error = InferenceFailed(f"inference failed for this batch: {type(exc).__name__}")
            for ticket in {id(item.ticket): item.ticket for item in batch}.values():
                self.cancel(ticket)
                ticket.loop.call_soon_threadsafe(_settle, ticket.future, None, error)
            self._observe(len(batch), tokens, padded, started, failed=True)
            return
        self.last_batch_failed = False
        self.batches_run += 1
        for item, row in zip(batch, vectors):
            ticket = item.ticket
            if ticket.cancelled:
                continue
            if ticket.rows is None:
                ticket.rows = np.empty((ticket.size, vectors.shape[1]), np.float32)
            ticket.rows[item.index] = row
            ticket.remaining -= 1
            if ticket.remaining == 0:
                ticket.loop.call_soon_threadsafe(_settle, ticket.future, ticket.rows, None)
        self._observe(len(batch), tokens, padded, started, failed=False)

    def _observe(self, size: int, tokens: int, padded: int, started: float, failed: bool) -> None:
        if self.on_batch is not None:
            self.on_batch(BatchStats(size, tokens, padded, time.perf_counter() - started, failed))


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
