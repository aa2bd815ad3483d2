"""ASGI middleware: the API key checked before the body, body-size limit, and Ollama's indifference to the request
content type. Their refusals are rendered as the route's errors are (api/errors.py)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import get_route_path

from .common import API_KEY_MESSAGE, key_accepted, needs_api_key
from .errors import render


class ApiKeys:
    """401 before the body is read, for the routes that depend on ``require_api_key``: an unauthenticated client
    cannot make the server read or parse its body (FastAPI parses a body before the route's dependencies).
    ``routes`` are every included route, in routing order: the first one matching path and method decides."""

    def __init__(self, app, routes: list):
        self.app = app
        self.routes = [(r, needs_api_key(r)) for r in routes if hasattr(r, "path_regex") and r.methods]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS":  # CORS preflight needs no key
            return await self.app(scope, receive, send)
        keys = scope["app"].state.settings.api_keys
        route = self._route(scope) if keys else None
        if route is None or key_accepted(Headers(scope=scope), keys):
            return await self.app(scope, receive, send)
        scope["route"] = route  # the access log's route label, as when the route itself refused
        await _refuse(scope, receive, send, 401, API_KEY_MESSAGE, "invalid_api_key")

    def _route(self, scope):
        """The protected route this request goes to, or None."""
        path = get_route_path(scope)
        for route, protected in self.routes:
            if scope["method"] in route.methods and route.path_regex.match(path):
                return route if protected else None
        return None


class BodyLimit:
    """413 in the dialect's error shape when a body is declared, or turns out, too large."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body too large: limit max_body_bytes={self.max_bytes}"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _refuse(scope, receive, send, 413, message, "request_too_large", {"connection": "close"})
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading; the app's handler renders it.
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, limited_receive, send)


async def _refuse(scope, receive, send, status: int, message: str, code: str, headers: dict | None = None) -> None:
    """The error response of the route ``scope`` goes to (``/embeddings``: FastAPI's ``{"detail"}``)."""
    await render(Request(scope), status, message, code=code, headers=headers)(scope, receive, send)


class OllamaJsonBodies:
    """Ollama reads every request body as JSON whatever its content type (its own curl examples
    send none, or form encoding); tell FastAPI the same for the Ollama routes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path", "").startswith("/api/"):
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            # In place: outer middleware (the access log) reads what routing adds to this scope.
            scope["headers"] = headers + [(b"content-type", b"application/json")]
        await self.app(scope, receive, send)
