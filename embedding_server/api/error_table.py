"""The one table from internal errors to statuses, without any web framework: the HTTP dialects (api/errors.py)
and the gRPC one (api/grpc) read it. TEI's error types carry TEI's HTTP status and TEI's gRPC code."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import errors as e


class ApiError(Exception):
    """An HTTP-level error raised by the API layer itself (auth, body size, bad JSON...)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class ClientGone(Exception):
    """The client closed the connection before the answer was ready; nothing is sent."""


@dataclass(frozen=True)
class Mapping:
    status: int
    openai_type: str
    openai_code: str | None = None
    ollama_status: int | None = None  # when Ollama answers with another status
    tei_type: str = "Validation"  # TEI's error type (its status is TEI_STATUSES[tei_type])


# Most specific classes first: the first isinstance match wins.
ERROR_TABLE: list[tuple[type[e.EngineError], Mapping]] = [
    (e.ModelNotFound, Mapping(404, "invalid_request_error", "model_not_found", tei_type="Unhealthy")),
    (e.ContextLengthExceeded, Mapping(400, "invalid_request_error", "context_length_exceeded")),
    (e.LimitExceeded, Mapping(400, "invalid_request_error", "limit_exceeded")),
    (e.InvalidInput, Mapping(400, "invalid_request_error")),
    (e.Overloaded, Mapping(429, "rate_limit_error", "server_busy", ollama_status=503, tei_type="Overloaded")),
    (e.MemoryLimitReached, Mapping(429, "rate_limit_error", "model_memory_limit", ollama_status=503,
                                   tei_type="Overloaded")),
    (e.ModelUnavailable, Mapping(503, "server_error", "model_unavailable", tei_type="Unhealthy")),
    (e.InferenceFailed, Mapping(500, "server_error", "inference_failed", tei_type="Backend")),
    (e.RequestTimeout, Mapping(504, "server_error", "timeout", tei_type="Unhealthy")),
    (e.EngineError, Mapping(500, "server_error", tei_type="Backend")),
]

# TEI's error types and the status each is sent with (TEI's router); TEI's routes (POST / too).
TEI_STATUSES = {"Unhealthy": 503, "Backend": 424, "Overloaded": 429, "Validation": 422, "Tokenizer": 422, "Empty": 400}
TEI_PATHS = frozenset({"/embed", "/embed_all", "/embed_sparse", "/similarity", "/tokenize", "/decode", "/info",
                       "/rerank"})  # /rerank with a Cohere-style body switches to OpenAI's shape (api/rerank.py)
_TEI_STATUS_TYPES = {400: "Empty", 424: "Backend", 429: "Overloaded", 503: "Unhealthy"}

# TEI's gRPC status code per error type (TEI's router, grpc/server.rs), by name (grpc.StatusCode's members).
TEI_GRPC_CODES = {"Unhealthy": "UNAVAILABLE", "Backend": "FAILED_PRECONDITION", "Overloaded": "RESOURCE_EXHAUSTED",
                  "Validation": "INVALID_ARGUMENT", "Tokenizer": "FAILED_PRECONDITION", "Empty": "INVALID_ARGUMENT"}


def mapping_for(error: e.EngineError) -> Mapping:
    """The table row for ``error``."""
    return next(m for cls, m in ERROR_TABLE if isinstance(error, cls))


def tei_type_of(error: Exception) -> str:
    """TEI's error type of an engine error or an ApiError (by its status; 422: Validation)."""
    if isinstance(error, e.EngineError):
        return mapping_for(error).tei_type
    status = getattr(error, "status", 500)
    return _TEI_STATUS_TYPES.get(status, "Backend" if status >= 500 else "Validation")
