"""One table from internal errors to HTTP status; each dialect renders errors in its own shape.

Ollama: ``{"error": "message"}``. OpenAI: ``{"error": {"message", "type", "param", "code"}}``.
TEI: ``{"error": "message", "error_type": "Validation"}``, with TEI's statuses per error type.
Routes under ``/v1`` (and Cohere's ``/v2/rerank``) speak OpenAI, TEI's routes (``TEI_PATHS`` and ``POST /``) TEI, everything else
Ollama (``dialect_of``). ``POST /embeddings`` (simple.py) answers FastAPI's ``{"detail": "message"}``, or
OpenAI's shape once its handler has seen an OpenAI body (``request.state.dialect``). 5xx bodies never carry
tracebacks: unexpected exceptions are logged and answered with a generic message.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import errors as e
from .error_table import (_TEI_STATUS_TYPES, ERROR_TABLE, TEI_PATHS, TEI_STATUSES,  # noqa: F401 - re-exported
                          ApiError, ClientGone, Mapping, mapping_for)
from .responses import json_response

log = logging.getLogger(__name__)

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                 405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def dialect_of(path: str, method: str = "GET") -> str:
    """The dialect errors are rendered in: "openai" under /v1, "tei" on TEI's routes, else "ollama"."""
    if path.startswith("/v1") or path == "/v2/rerank":
        return "openai"
    if path in TEI_PATHS or (path == "/" and method == "POST"):
        return "tei"
    if path == "/embeddings":
        return "simple"
    return "ollama"


def request_dialect(request: Request) -> str:
    """``dialect_of`` the request, unless its handler said otherwise (``request.state.dialect``)."""
    return getattr(request.state, "dialect", None) or dialect_of(request.url.path, request.method)


def is_openai(request: Request) -> bool:
    return request_dialect(request) == "openai"


def _printable(text: str | None) -> str | None:
    """Text that JSON can carry: lone surrogates (from "\\ud800" escapes a client sent) shown escaped."""
    return text if text is None or text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def render(request: Request, status: int, message: str, param: str | None = None, code: str | None = None,
           openai_type: str | None = None, headers: dict[str, str] | None = None, tei_type: str | None = None):
    """The error response in the dialect of the route that was called."""
    message, param = _printable(message), _printable(param)
    dialect = request_dialect(request)
    if dialect == "openai":
        kind = openai_type or _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    elif dialect == "tei":
        kind = tei_type or _TEI_STATUS_TYPES.get(status, "Backend" if status >= 500 else "Validation")
        body = {"error": message, "error_type": kind}
    elif dialect == "simple":
        body = {"detail": message}
    else:
        body = {"error": message}
    return json_response(body, status, headers)


def engine_error_response(request: Request, exc: e.EngineError) -> Response:
    """The answer to an engine error, by the table, in the request's dialect."""
    m = mapping_for(exc)
    status = {"openai": m.status, "tei": TEI_STATUSES[m.tei_type]}.get(
        request_dialect(request), m.ollama_status or m.status)
    headers = {"Retry-After": str(exc.retry_after_seconds)} if isinstance(exc, e.Overloaded) else None
    return render(request, status, exc.message, exc.param, m.openai_code, m.openai_type, headers, m.tei_type)


def unexpected_error_response(request: Request) -> Response:
    """The answer to an unexpected exception (being handled): logged with its traceback, a generic 500."""
    # %r: the percent-decoded path escaped, so that control characters and line breaks in it
    # cannot forge or rewrite log lines.
    log.exception("unhandled error on %r", request.scope.get("path"))
    return render(request, 500, "internal server error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "invalid JSON in request body", None
    where = ".".join(loc)
    return (f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'invalid value')}",
            loc[0] if loc else None)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the calling dialect's shape."""

    @app.exception_handler(e.EngineError)
    async def engine_error(request: Request, exc: e.EngineError):
        return engine_error_response(request, exc)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return render(request, exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        if request_dialect(request) == "tei":  # TEI (axum): 422, or 400 for broken JSON
            broken = any(err.get("type") == "json_invalid" for err in exc.errors())
            return render(request, 400 if broken else 422, message, param, tei_type="Validation")
        return render(request, 400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        code = "request_too_large" if exc.status_code == 413 else None  # as BodyLimit's early refusal says
        return render(request, exc.status_code, message, code=code, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone):
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return unexpected_error_response(request)
