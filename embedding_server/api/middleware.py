"""ASGI middleware: body-size limit, and Ollama's indifference to the request content type."""

from __future__ import annotations

import orjson
from fastapi import HTTPException

from .errors import dialect_of


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
            return await _reject(send, message, dialect_of(scope.get("path", ""), scope.get("method", "")))
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


async def _reject(send, message: str, dialect: str) -> None:
    if dialect == "openai":
        content = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                             "code": "request_too_large"}}
    elif dialect == "simple":
        content = {"detail": message}
    else:
        content = {"error": message, **({"error_type": "Validation"} if dialect == "tei" else {})}
    body = orjson.dumps(content)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


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
