"""What every tei.v1 call goes through: the API key, the access log and metrics (``AccessRecorder.record``, route =
the full method name, status = what TEI's HTTP API answers the same outcome with), errors as TEI's gRPC codes, and
the fan-out of a stream's messages into concurrent engine requests answered in order (embed streams: waiting
messages folded into one engine request)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable, TypeVar

import grpc

from ...engine.errors import EngineError
from ..error_table import TEI_GRPC_CODES, TEI_STATUSES, ApiError, mapping_for, tei_type_of
from ..shared import API_KEY_MESSAGE, key_accepted

log = logging.getLogger("embedding_server.grpc")
T = TypeVar("T")
R = TypeVar("R")

STREAM_IN_FLIGHT = 1024  # most messages of one stream being worked on at once (TEI's default, its channel's size)


class Refusal(Exception):
    """A gRPC status of our own (not from an engine or TEI error): the key, Predict, a model of the wrong kind."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int):
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status


@dataclass
class Call:
    """One call's context for the access log: what its embed requests amounted to. A stream may run for hours:
    its texts are kept only when the access log shows them (EMBED_LOG_INPUTS), and of the engine's timelines only
    the first (a span's children when the call was one engine request)."""

    keep_texts: bool = False
    model: str | None = None
    inputs: int = 0
    tokens: int = 0
    texts: list = field(default_factory=list)
    engine_requests: int = 0
    timeline: Any = None  # the first engine request's

    def note(self, model: str, inputs: list, tokens: int, texts: list | None = None, timeline=None) -> None:
        self.model, self.inputs, self.tokens = model, self.inputs + len(inputs), self.tokens + tokens
        if self.keep_texts:
            self.texts.extend(inputs if texts is None else texts)
        self.engine_requests += 1
        if self.engine_requests == 1:
            self.timeline = timeline

    def embed_log(self) -> dict | None:
        """The access log's note; for tracing, the engine's timeline when the call was one engine request (a
        stream's span has no children)."""
        return None if self.model is None else {"model": self.model, "inputs": self.inputs, "tokens": self.tokens,
                                                "texts": self.texts,
                                                "timeline": self.timeline if self.engine_requests == 1 else None}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, int]:
    """(gRPC code, message, TEI's HTTP status) of an error; unexpected ones are logged, never shown."""
    if isinstance(exc, Refusal):
        return exc.code, exc.message, exc.http_status
    if isinstance(exc, EngineError):
        kind = mapping_for(exc).tei_type
        return grpc.StatusCode[TEI_GRPC_CODES[kind]], exc.message, TEI_STATUSES[kind]
    if isinstance(exc, ApiError):
        return grpc.StatusCode[TEI_GRPC_CODES[tei_type_of(exc)]], exc.message, exc.status
    log.error("unhandled error in a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal server error", 500


class Calls:
    """The shared state of the services: the app's engine, settings and access recorder."""

    def __init__(self, state: Any):
        self.state = state

    @property
    def engine(self):
        return self.state.engine

    @property
    def settings(self):
        return self.state.settings

    def _check_key(self, context: grpc.aio.ServicerContext) -> dict:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        keys = self.settings.api_keys
        if keys and not key_accepted(metadata, keys):
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, API_KEY_MESSAGE, 401)
        return metadata

    async def unary(self, route: str, context: grpc.aio.ServicerContext,
                    work: Callable[[Call], Awaitable[tuple[Any, dict[str, str] | None]]]):
        """Answer a call whose answer is one message: ``work(call)`` gives it and its initial metadata."""
        started, metadata, call = time.perf_counter(), {}, Call(self.settings.log_inputs)
        try:
            metadata = self._check_key(context)
            answer, headers = await work(call)
            if headers:
                await context.send_initial_metadata(tuple(headers.items()))
        except asyncio.CancelledError:
            self._record(route, 499, started, call, metadata)
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            code, message, http_status = status_of(exc)
            self._record(route, http_status, started, call, metadata)
            await context.abort(code, message)
        self._record(route, 200, started, call, metadata)
        return answer

    async def stream(self, route: str, context: grpc.aio.ServicerContext, requests: AsyncIterator[T],
                     handle: Callable[[T, Call], Awaitable[R]]) -> AsyncIterator[R]:
        """Answer a stream message by message, in order: each one's ``handle`` runs as soon as it is read
        (``fan_out``); the first error ends the call with its status."""
        async for answer in self._stream(route, context, lambda call: fan_out(
                requests, lambda request: handle(request, call))):
            yield answer

    async def folded_stream(self, route: str, context: grpc.aio.ServicerContext, requests: AsyncIterator[T],
                            key: Callable[[T], Hashable | None], handle: Callable[[list[T], Call], Awaitable[list[R]]],
                            max_messages: int, max_size: int, size: Callable[[T], int]) -> AsyncIterator[R]:
        """Answer a stream in order, consecutive waiting messages of equal ``key`` folded into one ``handle``
        (``fold_out``); the first error ends the call with its status."""
        async for answer in self._stream(route, context, lambda call: fold_out(
                requests, key, lambda fold: handle(fold, call), max_messages, max_size, size)):
            yield answer

    async def _stream(self, route: str, context: grpc.aio.ServicerContext,
                      answers: Callable[[Call], AsyncIterator[R]]) -> AsyncIterator[R]:
        started, metadata, call = time.perf_counter(), {}, Call(self.settings.log_inputs)
        try:
            metadata = self._check_key(context)
            async for answer in answers(call):
                yield answer
        except (asyncio.CancelledError, GeneratorExit):
            self._record(route, 499, started, call, metadata)
            raise
        except Exception as exc:  # noqa: BLE001
            code, message, http_status = status_of(exc)
            self._record(route, http_status, started, call, metadata)
            await context.abort(code, message)
        self._record(route, 200, started, call, metadata)

    def _record(self, route: str, status: int, started: float, call: Call, metadata: dict) -> None:
        self.state.recorder.record("gRPC", route, status, time.perf_counter() - started, call.embed_log(),
                                   carrier=metadata)


async def fan_out(requests: AsyncIterator[T], handle: Callable[[T], Awaitable[R]],
                  limit: int = STREAM_IN_FLIGHT) -> AsyncIterator[R]:
    """``handle`` each request as a task as soon as it is read (at most ``limit`` at once), without waiting for
    the earlier ones: the engine batches them like concurrent HTTP requests. Answers come in request order."""
    pending: asyncio.Queue = asyncio.Queue()
    slots = asyncio.Semaphore(limit)

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.ensure_future(handle(request))
                task.add_done_callback(lambda _: slots.release())
                pending.put_nowait(task)
        finally:
            pending.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (task := await pending.get()) is not None:
            yield await task
        await reader  # a broken request stream ends the call
    finally:
        reader.cancel()
        while not pending.empty():
            task = pending.get_nowait()
            if task is not None:
                task.cancel()


FOLDS_IN_FLIGHT = 2  # engine requests of one folded stream at once: one computing, one tokenized and queued


async def fold_out(requests: AsyncIterator[T], key: Callable[[T], Hashable | None],
                   handle: Callable[[list[T]], Awaitable[list[R]]], max_messages: int, max_size: int,
                   size: Callable[[T], int] = len, limit: int = STREAM_IN_FLIGHT,
                   folds: int = FOLDS_IN_FLIGHT) -> AsyncIterator[R]:
    """Answer a stream's messages in order, folding consecutive messages already read but not yet submitted into
    one ``handle`` call (one engine request) when their ``key`` is equal and not None, at most ``max_messages``
    of them and ``max_size`` in ``size`` (a message over it goes alone). The stream is read all along (at most
    ``limit`` messages being worked on); a fold is submitted at once unless ``folds`` of this stream are already
    running, and a message read while fewer are running is never held back. ``handle`` gives one answer per
    message; when a fold of several fails, its messages are retried one by one, so that the answers before the
    failing message are given and the call ends with that message's own error (as unfolded)."""
    waiting: deque = deque()  # messages read, not yet submitted
    pending: asyncio.Queue = asyncio.Queue()  # (fold task, index) per message in request order; None at the end
    slots = asyncio.Semaphore(limit)
    running: set[asyncio.Future] = set()
    done_reading, ended = [False], [False]

    async def run(fold: list[T]) -> list:
        try:
            return await handle(fold)
        except Exception as exc:  # noqa: BLE001 - returned in order, raised when its turn comes
            if len(fold) == 1:
                return [exc]
        outcomes: list = []  # rare: find the failing message
        for request in fold:
            try:
                outcomes.extend(await handle([request]))
            except Exception as exc:  # noqa: BLE001
                return outcomes + [exc]
        return outcomes

    def finished(task: asyncio.Future, n: int) -> None:
        running.discard(task)
        for _ in range(n):
            slots.release()
        submit()

    def submit() -> None:
        while waiting and len(running) < folds:
            fold = [waiting.popleft()]
            group, total = key(fold[0]), size(fold[0])
            while (group is not None and waiting and len(fold) < max_messages and key(waiting[0]) == group
                   and total + size(waiting[0]) <= max_size):
                total += size(waiting[0])
                fold.append(waiting.popleft())
            task = asyncio.ensure_future(run(fold))
            running.add(task)
            task.add_done_callback(lambda t, n=len(fold): finished(t, n))
            for i in range(len(fold)):
                pending.put_nowait((task, i))
        if done_reading[0] and not waiting and not ended[0]:
            ended[0] = True
            pending.put_nowait(None)

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                waiting.append(request)
                submit()
        finally:
            done_reading[0] = True
            submit()

    reader = asyncio.ensure_future(read())
    try:
        while (entry := await pending.get()) is not None:
            task, i = entry
            outcome = (await task)[i]
            if isinstance(outcome, Exception):
                raise outcome
            yield outcome
        await reader  # a broken request stream ends the call
    finally:
        reader.cancel()
        waiting.clear()
        for task in list(running):
            task.cancel()
