"""Errors the engine raises; the API layer maps each class to a status code in one table."""

from __future__ import annotations

import copy
import traceback


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


class RequestTimeout(EngineError):
    """The request did not finish within EMBED_REQUEST_TIMEOUT_S (its queued work is dropped)."""


def fresh(error: BaseException) -> BaseException:
    """A copy of ``error`` with no traceback or context, to raise in one awaiter: one instance raised by many
    awaiters collects every one's frames in its traceback."""
    copied = copy.copy(error)
    copied.__traceback__ = copied.__context__ = copied.__cause__ = None
    return copied


def drop_frames(error: BaseException) -> None:
    """Clear the local variables of every frame in ``error``'s tracebacks (its chain too): a failed load's
    frames would otherwise keep the weights it had built alive for as long as the error is referenced."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)
            error.__traceback__ = None
        error = error.__cause__ or error.__context__
