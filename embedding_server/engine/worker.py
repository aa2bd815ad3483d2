"""One worker thread per loaded model: takes batches from its queue and runs their forward passes.

A batch of bulk work runs as a job in slices of about ``slice_seconds``; after each slice, waiting
interactive requests (a few short inputs) get a batch of their own, run to the end, before bulk
gets its next slice. So a query waits at most one slice, however long the document in front of it.
A failing batch is retried request by request, so only the request that cannot run fails. If the
thread itself dies, every waiting request fails at once and ``on_death`` tells the engine.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ..model.heads import ONLY_DENSE
from ..model.job import EmbedJob, job_of
from .errors import InferenceFailed, ModelUnavailable
from .heap import HeapTrimmer
from .scheduler import CostModel
from .types import Forward
from .work_queue import Item, Ticket, WorkQueue, settle, settle_results

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the worker needs of a model: batched id lists in, vectors out; or, for forwards that can be
    sliced and have several heads, ``start(batch, unit_ms, heads) -> EmbedJob``."""

    def embed(self, batch: list[list[int]]) -> np.ndarray: ...


@dataclass
class BatchStats:
    """Passed to the ``on_batch`` observer after every forward pass, before its results are delivered."""

    size: int
    tokens: int
    padded_tokens: int
    seconds: float
    failed: bool
    fallback: bool = False  # the padding-free forward raised and the transformers forward redid the batch
    slices: int = 1


class ModelWorker:
    """Owns one model; turns concurrent submissions into well-packed batches, long ones in slices."""

    # A unit of work (a slice, or a batch run whole) that takes STALL_FACTOR times its expected time, and at least
    # STALL_FLOOR_SECONDS, is reported by /health as stalled (a wedged native call, a stuck file read).
    STALL_FACTOR = 10.0
    STALL_FLOOR_SECONDS = 60.0

    def __init__(self, embedder: Embedder | None, name: str, max_batch_tokens: int, max_batch_size: int,
                 max_queued_inputs: int, cost: CostModel = CostModel(),
                 on_batch: Callable[[BatchStats], None] | None = None, coalesce_seconds: float = 0.004,
                 trimmer: HeapTrimmer | None = None, slice_seconds: float = math.inf,
                 on_death: Callable[[str], None] | None = None):
        self.embedder, self.name = embedder, name
        self.queue = WorkQueue(max_batch_tokens, max_batch_size, max_queued_inputs, cost, coalesce_seconds)
        self.on_batch, self.on_death = on_batch, on_death
        self.trimmer = trimmer  # returns freed heap memory to the OS between batches
        self.slice_seconds = slice_seconds
        self._thread = threading.Thread(target=self._run, name=f"model-{name}", daemon=True)
        self.last_batch_failed = False
        self.batches_run = 0
        self.died: str | None = None  # why the thread ended abnormally
        self._running: list[list[Item]] = []  # batches with a job in progress (for failing them on death)
        self._jobs: dict[int, EmbedJob] = {}  # id(batch) -> its unfinished sliced job
        self._began: dict[int, int] = {}  # id(batch) -> when its job began (time.time_ns), for the requests' timelines
        self._factory: Callable[[], Embedder] | None = None  # see launch()
        self._cost_of: Callable[[Embedder], CostModel] | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self.unit_started: float | None = None  # monotonic start of the unit of work running now
        self.unit_budget = math.inf
        self.seconds_per_token: float | None = None  # measured (a slow-moving maximum), for whole batches' budgets

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
        error, worker._load_error = worker._load_error, None  # the worker keeps no reference to it
        if error is not None:
            raise error
        return worker

    # ----- the event loop's side ------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.died is None

    @property
    def thread_alive(self) -> bool:
        """Whether its thread still runs (a worker that did not stop in time still holds its model)."""
        return self._thread.is_alive()

    @property
    def queued_inputs(self) -> int:
        return self.queue.queued_inputs

    @property
    def cost(self) -> CostModel:
        return self.queue.cost

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish what is queued, then end the thread. True if it ended within ``timeout``."""
        self.queue.stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(self, batch_ids: list[list[int]], heads: frozenset[str] = ONLY_DENSE) -> Ticket:
        """Queue one request's inputs; its ticket's future resolves to ``{head: outputs}`` for ``heads``
        (dense: the pooled vectors, not yet normalised)."""
        return self.queue.submit(batch_ids, heads)

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request's queued inputs (its client went away)."""
        self.queue.cancel(ticket)

    # ----- the worker thread ----------------------------------------------------------------
    def _build(self) -> bool:
        """Run the factory on this thread (see launch); False if it failed."""
        try:
            if self._factory is not None:
                self.embedder = self._factory()
                if self._cost_of is not None:
                    self.queue.cost = self._cost_of(self.embedder)
        except BaseException as exc:  # noqa: BLE001 - handed to launch()'s caller
            self._load_error = exc
            return False
        finally:
            if self.trimmer is not None:
                self.trimmer.release()  # loading and warm-up leave freed blocks behind
            self._loaded.set()
        return True

    def _run(self) -> None:
        if not self._build():
            return
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - the thread is ending: fail everything waiting
            self._die(f"{type(exc).__name__}: {exc}")

    def _serve(self) -> None:
        import torch

        bulk: list[Item] | None = None  # the batch whose job runs in slices
        idle_trim = None
        with torch.inference_mode():
            while True:
                if bulk is None:
                    taken = self.queue.take(idle_trim)
                    if taken is None:
                        return
                    batch, interactive = taken
                    if not batch:  # a while without work: give back what the last burst left behind
                        self.trimmer.release()
                        idle_trim = None
                        continue
                    if interactive:
                        self._run_whole(batch)
                    else:
                        bulk = self._slice(batch, self._begin(batch))
                else:
                    if (batch := self.queue.take_interactive()) is not None:
                        self._run_whole(batch)  # between two slices of the bulk job
                    bulk = self._slice(bulk, self._jobs[id(bulk)])
                if self.trimmer is not None and self.trimmer.active:
                    self.trimmer.maybe_trim()
                    idle_trim = self.trimmer.idle_seconds

    def _begin(self, batch: list[Item], sliced: bool = True) -> EmbedJob | None:
        """``batch``'s job (cut in units of half a slice if ``sliced``), None if it could not start."""
        unit_ms = self.slice_seconds * 1000 / 2 if sliced and math.isfinite(self.slice_seconds) else None
        self._running.append(batch)
        heads = frozenset().union(*(item.ticket.heads for item in batch))
        try:
            self._began[id(batch)] = time.time_ns()
            return job_of(self.embedder, [item.ids for item in batch], unit_ms, heads)
        except Exception as exc:  # noqa: BLE001
            self._running.remove(batch)
            self._began.pop(id(batch), None)
            self._recover(batch, exc)
            return None

    def _slice(self, batch: list[Item], job: EmbedJob | None, seconds: float | None = None) -> list[Item] | None:
        """One slice of ``batch``'s job (``seconds``, default ``slice_seconds``): the batch again if unfinished,
        None once delivered, failed or abandoned. The batch stays among the running ones until its tickets are
        settled, so that a failure anywhere on the way (even in delivery) still fails them (``_die``)."""
        if job is None:
            return None
        if all(item.ticket.cancelled for item in batch):  # every client of this batch left: stop computing it
            self._end(batch)
            return None
        seconds = self.slice_seconds if seconds is None else seconds
        self._unit_began(batch, seconds)
        try:
            finished = job.run(seconds)
        except Exception as exc:  # noqa: BLE001 - isolated to the requests that cannot run
            self._unit_ended(batch, None)
            self._recover(batch, exc, job.seconds)
            self._end(batch)
            return None
        self._unit_ended(batch, job if finished else None)
        if not finished:
            self._jobs[id(batch)] = job
            return batch
        self._deliver(batch, job)
        self._end(batch)
        return None

    # ----- progress, for /health ------------------------------------------------------------------
    def _unit_began(self, batch: list[Item], seconds: float) -> None:
        """A unit of work starts: it should end within ``STALL_FACTOR`` times its expected time (a slice, or the
        whole batch at the measured speed; before any was measured, ``STALL_FLOOR_SECONDS``), and never sooner
        than ``STALL_FLOOR_SECONDS``."""
        expected = seconds if math.isfinite(seconds) else (
            self.seconds_per_token * sum(item.length for item in batch) if self.seconds_per_token
            else self.STALL_FLOOR_SECONDS)
        self.unit_budget = max(self.STALL_FLOOR_SECONDS, self.STALL_FACTOR * expected)
        self.unit_started = time.monotonic()

    def _unit_ended(self, batch: list[Item], job: EmbedJob | None) -> None:
        self.unit_started = None
        if job is not None and job.seconds > 0:  # a finished forward: its speed, for the next budgets
            rate = job.seconds / max(1, sum(item.length for item in batch))
            self.seconds_per_token = rate if self.seconds_per_token is None else max(
                rate, 0.8 * self.seconds_per_token + 0.2 * rate)

    @property
    def stalled_seconds(self) -> float:
        """How long the current unit of work has run past its budget (0 when on time or idle)."""
        started = self.unit_started
        return 0.0 if started is None else max(0.0, time.monotonic() - started - self.unit_budget)

    def _run_whole(self, batch: list[Item]) -> None:
        """Run ``batch`` to the end at once (interactive work, or a retry)."""
        self._slice(batch, self._begin(batch, sliced=False), math.inf)

    def _end(self, batch: list[Item]) -> None:
        self._running.remove(batch)
        self._jobs.pop(id(batch), None)
        self._began.pop(id(batch), None)

    def _recover(self, batch: list[Item], exc: Exception, seconds: float = 0.0) -> None:
        """A batch failed: retry each of its requests alone, so only the one that cannot run fails."""
        requests: dict[int, list[Item]] = {}
        for item in batch:
            requests.setdefault(item.request_id, []).append(item)
        if len(requests) > 1:
            log.warning("model %s: batch of %d inputs from %d requests failed (%s: %s); retrying each request "
                        "alone", self.name, len(batch), len(requests), type(exc).__name__, exc)
            for items in requests.values():
                if not items[0].ticket.cancelled:
                    self._run_whole(items)
            return
        log.error("model %s: batch of %d inputs failed: %s: %s", self.name, len(batch), type(exc).__name__, exc,
                  exc_info=exc)
        self.last_batch_failed = True
        self._observe(batch, seconds, failed=True)
        ticket = batch[0].ticket
        self.queue.cancel(ticket)  # the rest of this request would fail too: drop it
        settle(ticket, error=InferenceFailed(f"inference failed for this batch: {type(exc).__name__}"))

    def _deliver(self, batch: list[Item], job: EmbedJob) -> None:
        """Metrics first (so that a client reading them after its answer sees its batch), then the rows. A request
        whose rows cannot be delivered (a MemoryError allocating its result) fails alone."""
        self.last_batch_failed = False
        self.batches_run += 1
        self._observe(batch, job.seconds, failed=False, fallback=job.fell_back is not None, slices=job.slices)
        self._note_forward(batch, job.slices)
        complete = []
        for position, item in enumerate(batch):
            ticket = item.ticket
            if ticket.cancelled:
                continue
            try:
                if ticket.fill(item.index, job.result, position):
                    complete.append(ticket)
            except Exception as exc:  # noqa: BLE001 - this request's answer is lost, not the others'
                log.error("model %s: delivering a result failed: %s: %s", self.name, type(exc).__name__, exc)
                self.queue.cancel(ticket)
                settle(ticket, error=InferenceFailed(f"inference failed for this batch: {type(exc).__name__}"))
        settle_results(complete)

    def _note_forward(self, batch: list[Item], slices: int) -> None:
        """Add this forward pass to the timeline of each request it served (``Ticket.forwards``)."""
        end, tokens = time.time_ns(), sum(item.length for item in batch)
        start = self._began.get(id(batch), end)
        inputs: dict[int, list] = {}  # id(ticket) -> [ticket, its inputs in this batch]
        for item in batch:
            entry = inputs.get(id(item.ticket))
            if entry is None:
                inputs[id(item.ticket)] = [item.ticket, 1]
            else:
                entry[1] += 1
        for ticket, count in inputs.values():
            ticket.forwards.append(Forward(start, end, len(batch), tokens, count, slices))

    def _observe(self, batch: list[Item], seconds: float, failed: bool, fallback: bool = False,
                 slices: int = 1) -> None:
        """Tell the ``on_batch`` observer; an observer that raises is logged, never fails the batch."""
        if self.on_batch is None:
            return
        try:
            tokens = sum(item.length for item in batch)
            padded = len(batch) * max(item.length for item in batch)
            self.on_batch(BatchStats(len(batch), tokens, padded, seconds, failed, fallback, slices))
        except Exception:  # noqa: BLE001
            log.exception("model %s: the batch observer failed", self.name)

    def _die(self, reason: str) -> None:
        """The thread is ending abnormally: refuse new work, fail all waiting and running requests at once."""
        self.died = reason
        log.critical("model %s: worker thread died (%s); its waiting requests are failed", self.name, reason)
        error = ModelUnavailable(f"model '{self.name}' stopped working and is being reloaded; retry")
        tickets = self.queue.close(error) + [item.ticket for batch in self._running for item in batch]
        self._running.clear()
        for ticket in {id(t): t for t in tickets}.values():
            settle(ticket, error=error)
        if self.on_death is not None:
            self.on_death(reason)
