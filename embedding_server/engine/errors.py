"""Errors the engine raises; the API layer maps each class to a status code in one table."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: ``message`` is safe to show to a client."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class ModelNotFound(EngineError):
    """The requested model name resolves to nothing served here."""

    def __init__(self, name: str):
        super().__init__(f"model '{name}' not found", param="model")
        self.name = name


class InvalidInput(EngineError):
    """The request's inputs cannot be embedded as given."""


class ContextLengthExceeded(InvalidInput):
    """An input is longer than the model's context and truncation was refused."""


class LimitExceeded(InvalidInput):
    """A configured per-request limit (inputs, tokens) was exceeded."""


class Overloaded(EngineError):
    """More work is queued than the configured limit; the client should retry later."""

    retry_after_seconds = 1


class ModelUnavailable(EngineError):
    """The model exists but failed to load or is not loaded yet."""


class InferenceFailed(EngineError):
    """The forward pass failed for the batch holding this request."""


class MemoryLimitReached(EngineError):
    """Loading the model would exceed EMBED_MAX_LOADED_MODELS or EMBED_MEMORY_LIMIT_MB, and no idle model is left
    to unload; other models keep serving."""
