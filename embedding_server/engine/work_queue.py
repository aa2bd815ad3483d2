"""The inputs waiting for one model: per-request queues under one lock, and which of them go next.

Requests are queued by the event loop (``submit``, ``cancel``) and taken by the model's worker
thread (``take``, ``take_interactive``); the batch policy itself is ``scheduler.plan_batch``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..model.heads import DENSE, ONLY_DENSE
from .errors import EngineError, Overloaded, fresh
from .scheduler import CostModel, is_small, plan_batch


@dataclass(eq=False)
class Ticket:
    """One submitted request: its outputs fill in as batches complete; the future then resolves to
    ``{head: outputs}`` (dense: an (n, dim) float32 array of pooled vectors; tokens: a list of arrays)."""

    request_id: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    size: int
    remaining: int
    heads: frozenset[str] = ONLY_DENSE
    results: dict = field(default_factory=dict)
    cancelled: bool = False
    forwards: list = field(default_factory=list)  # a types.Forward per forward pass delivered (worker thread)

    def fill(self, index: int, outputs: dict, position: int) -> bool:
        """Store input ``index``'s outputs (row ``position`` of a batch's ``outputs``); True once complete."""
        for head in self.heads:
            value = outputs[head][position]
            if head == DENSE:
                if DENSE not in self.results:
                    self.results[DENSE] = np.empty((self.size, len(value)), np.float32)
                self.results[DENSE][index] = value
            else:
                self.results.setdefault(head, [None] * self.size)[index] = value
        self.remaining -= 1
        return self.remaining == 0


@dataclass(eq=False)
class Item:
    """One input of a request, waiting or in a batch."""

    length: int
    request_id: int
    index: int
    ids: list[int] = field(repr=False)
    ticket: Ticket = field(repr=False)


def settle(ticket: Ticket, value=None, error: BaseException | None = None) -> None:
    """Resolve ``ticket``'s future from any thread (a no-op if it is already done)."""
    ticket.loop.call_soon_threadsafe(_settle, ticket.future, value, error)


def settle_results(tickets: list[Ticket]) -> None:
    """Resolve each ticket's future to its results, from any thread: one wake-up of each event loop involved
    (a batch of eight queries wakes the loop once, not eight times)."""
    loops: dict[int, list[Ticket]] = {}
    for ticket in tickets:
        loops.setdefault(id(ticket.loop), []).append(ticket)
    for group in loops.values():
        group[0].loop.call_soon_threadsafe(_settle_each, group)


def _settle_each(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        _settle(ticket.future, ticket.results, None)


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(fresh(error))  # each request raises its own copy
    else:
        future.set_result(value)


class WorkQueue:
    """Queued inputs per request; hands the worker the next batch by the scheduler's policy."""

    def __init__(self, max_batch_tokens: int, max_batch_size: int, max_queued_inputs: int,
                 cost: CostModel = CostModel(), coalesce_seconds: float = 0.004):
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_queued_inputs, self.cost, self.coalesce_seconds = max_queued_inputs, cost, coalesce_seconds
        self._queues: dict[int, list[Item]] = {}  # request id -> items sorted by length
        self._queued = 0
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._closed: EngineError | None = None  # why submissions are refused
        self._stopping = False
        self._last_requests = 0  # distinct requests in the last batch (see _coalesce)
        self._skipped_bulk = False  # the last batch served only small requests while bulk waited

    @property
    def queued_inputs(self) -> int:
        return self._queued

    def submit(self, batch_ids: list[list[int]], heads: frozenset[str] = ONLY_DENSE) -> Ticket:
        """Queue one request's inputs; its ticket's future resolves to ``{head: outputs}`` for ``heads``."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(next(self._ids), loop.create_future(), loop, len(batch_ids), len(batch_ids), heads)
        if not batch_ids:
            ticket.future.set_result({head: np.zeros((0, 0), np.float32) if head == DENSE else [] for head in heads})
            return ticket
        items = sorted((Item(len(ids), ticket.request_id, i, ids, ticket) for i, ids in enumerate(batch_ids)),
                       key=lambda item: item.length)
        with self._cond:
            if self._closed is not None:
                raise fresh(self._closed)
            if self._queued + len(items) > self.max_queued_inputs and self._queued > 0:
                raise Overloaded(
                    f"server busy: {self._queued} inputs queued, limit max_queued_inputs={self.max_queued_inputs}")
            self._queues[ticket.request_id] = items
            self._queued += len(items)
            self._cond.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request's queued inputs (its client went away, or it failed)."""
        with self._cond:
            ticket.cancelled = True
            dropped = self._queues.pop(ticket.request_id, [])
            self._queued -= len(dropped)

    def stop(self) -> None:
        """Refuse new work; ``take`` returns None once the queue is empty."""
        with self._cond:
            self._stopping = True
            self._closed = self._closed or Overloaded("the server is shutting down")
            self._cond.notify_all()

    def close(self, error: EngineError) -> list[Ticket]:
        """Refuse new work with ``error`` and empty the queue; the tickets that were waiting."""
        with self._cond:
            self._closed, self._stopping = error, True
            tickets = [items[0].ticket for items in self._queues.values()]
            self._queues.clear()
            self._queued = 0
            self._cond.notify_all()
        return tickets

    def take(self, idle_timeout: float | None = None) -> tuple[list[Item], bool] | None:
        """The next batch and whether it holds only interactive (small) requests; blocks for work.

        None when stopping with nothing queued; ([], False) after ``idle_timeout`` seconds without work.
        """
        with self._cond:
            while not self._queues and not self._stopping:
                if not self._cond.wait(idle_timeout) and not self._queues:
                    return [], False
            if not self._queues:
                return None
            self._coalesce()
            queues = list(self._queues.values())
            # Small requests get a batch of their own, unless the previous batch already skipped
            # waiting bulk work: then it is bulk's turn.
            batch = plan_batch(queues, self.max_batch_tokens, self.max_batch_size, self.cost,
                               only="large" if self._skipped_bulk else "small")
            interactive = self._small_only(batch)
            self._skipped_bulk = interactive and any(not is_small(q, self.max_batch_size) for q in queues)
            self._remove(batch)
            return batch, interactive

    def take_interactive(self) -> list[Item] | None:
        """A batch of interactive requests only, if any wait (never blocks)."""
        with self._cond:
            queues = [q for q in self._queues.values() if is_small(q, self.max_batch_size)]
            if not queues:
                return None
            batch = plan_batch(queues, self.max_batch_tokens, self.max_batch_size, self.cost)
            self._remove(batch)
            return batch

    def _small_only(self, batch: list[Item]) -> bool:
        return all(is_small(self._queues[r], self.max_batch_size) for r in {item.request_id for item in batch})

    def _remove(self, batch: list[Item]) -> None:
        """Take ``batch``'s items out of their requests' queues (under the lock)."""
        chosen = {id(item) for item in batch}
        served = {item.request_id for item in batch}
        for request_id in served:
            rest = [item for item in self._queues[request_id] if id(item) not in chosen]
            if rest:
                self._queues[request_id] = rest
            else:
                del self._queues[request_id]
        self._queued -= len(batch)
        self._last_requests = len(served)

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
