"""Helpers shared by the dialect routers: engine access, cancellation on disconnect, auth."""

from __future__ import annotations

import asyncio
import hmac
from typing import Awaitable, TypeVar

from fastapi import Request

from ..engine.engine import Engine
from ..engine.types import EmbedRequest, EmbedResult
from .errors import ApiError, ClientGone

T = TypeVar("T")


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def note_for_access_log(request: Request, internal: EmbedRequest, result: EmbedResult) -> None:
    """What the access-log line says about an embedding request (texts only shown if configured)."""
    request.state.embed_log = {"model": result.model, "inputs": len(internal.inputs),
                               "tokens": result.prompt_tokens, "texts": internal.inputs}


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so dropping its queued inputs) if the client leaves."""
    task = asyncio.ensure_future(work)

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
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
    """Dependency: when API keys are configured, demand ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = token.strip().encode() if scheme.lower() == "bearer" else b""
    x_api_key = request.headers.get("x-api-key", "").strip().encode()
    # Compare both against every key, in constant time per key, without an early exit.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(bearer, key.encode())
        matched |= hmac.compare_digest(x_api_key, key.encode())
    if not matched:
        raise ApiError(401, "invalid or missing API key (send Authorization: Bearer <key> or X-API-Key: <key>)",
                       code="invalid_api_key")
