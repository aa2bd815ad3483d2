"""Helpers shared by the dialect routers: engine access, cancellation on disconnect, auth."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

from fastapi import Request

from ..engine.engine import Engine
from ..engine.types import EmbedRequest, EmbedResult
from .errors import ApiError, ClientGone
from .shared import API_KEY_MESSAGE, access_note, key_accepted  # noqa: F401 - re-exported

T = TypeVar("T")


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def note_for_access_log(request: Request, internal: EmbedRequest, result: EmbedResult) -> None:
    """Tell the access log about an embedding request (``access_note``)."""
    request.state.embed_log = access_note(internal, result)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so dropping its queued inputs) if the client leaves."""
    return await until_gone(request.receive, work)


async def until_gone(receive: Callable[[], Awaitable[dict]], work: Awaitable[T]) -> T:
    """``until_disconnect`` for an ASGI ``receive`` whose request body has been read."""
    task = asyncio.ensure_future(work)

    async def client_left() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client left, or this handler itself was cancelled
            task.cancel()
            # cancel() only asks: let the task unwind (dropping its queued inputs) before looking at it,
            # or task.result() below raises InvalidStateError and the departed client is logged as a 500.
            await asyncio.wait({task})
    if task.cancelled():
        raise ClientGone()
    return task.result()


async def require_api_key(request: Request) -> None:
    """Dependency marking the routes that need a key (when keys are configured). The ApiKeys middleware
    checks it first, before the body is read (``needs_api_key``); this check stays as the route's own."""
    keys = request.app.state.settings.api_keys
    if keys and not key_accepted(request.headers, keys):
        raise ApiError(401, API_KEY_MESSAGE, code="invalid_api_key")


def needs_api_key(route: Any) -> bool:
    """Whether ``route`` depends on ``require_api_key`` (its router's dependencies included)."""
    return any(getattr(d, "dependency", None) is require_api_key for d in getattr(route, "dependencies", ()))
