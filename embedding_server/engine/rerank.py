"""Which reranker a rerank request reaches (the scoring itself is ``Pipeline.score``)."""

from __future__ import annotations

from .errors import InvalidInput
from .registry import ModelEntry, ModelRegistry


def reranker_entry(registry: ModelRegistry, default: ModelEntry | None, name: str | None) -> ModelEntry:
    """The reranker a request names; with no name, the default model if it is a reranker, else the only reranker
    served. InvalidInput for an embedding model or an ambiguous request."""
    if name is None:
        if default is not None and default.task == "rerank":
            return default
        rerankers = sorted(e.name for e in registry.entries.values() if e.task == "rerank" and not e.error)
        if len(rerankers) != 1:
            served = ", ".join(rerankers) or "none"
            raise InvalidInput(f"model is required: name one of the rerankers served here ({served})", param="model")
        return registry.entries[rerankers[0]]
    entry = registry.resolve(name)
    if entry.task != "rerank":
        raise InvalidInput(f"model '{entry.name}' is an embedding model, not a reranker: rerank needs a "
                           "cross-encoder folder (a sequence-classification model)", param="model")
    return entry
