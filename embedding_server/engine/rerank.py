"""Reranking in the engine: (query, document) pairs through a cross-encoder's worker, one score per document."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..model.encoder import InputTooLong
from ..model.reranker import ACTIVATIONS
from .errors import ContextLengthExceeded, InvalidInput, LimitExceeded
from .inputs import check_text
from .registry import ModelEntry
from .types import SCORE, RerankRequest, RerankResult

if TYPE_CHECKING:
    from .engine import Engine


def reranker_entry(engine: Engine, name: str | None) -> ModelEntry:
    """The reranker a request names; with no name, the default model if it is a reranker, else the only reranker
    served. InvalidInput for an embedding model or an ambiguous request."""
    if name is None:
        default = engine.default_entry()
        if default is not None and default.task == "rerank":
            return default
        rerankers = sorted(e.name for e in engine.registry.entries.values() if e.task == "rerank" and not e.error)
        if len(rerankers) != 1:
            served = ", ".join(rerankers) or "none"
            raise InvalidInput(f"model is required: name one of the rerankers served here ({served})", param="model")
        return engine.registry.entries[rerankers[0]]
    entry = engine.registry.resolve(name)
    if entry.task != "rerank":
        raise InvalidInput(f"model '{entry.name}' is an embedding model, not a reranker: rerank needs a "
                           "cross-encoder folder (a sequence-classification model)", param="model")
    return entry


async def rerank_documents(engine: Engine, request: RerankRequest) -> RerankResult:
    """Scores in document order: the model's activation of its logits (CrossEncoder.predict's), or the logits."""
    entry = reranker_entry(engine, request.model)
    async with engine.lifecycle.use(entry, request.keep_alive):
        return await _score(engine, entry, request, await engine.ensure_loaded(entry))


async def _score(engine: Engine, entry: ModelEntry, request: RerankRequest, load_ns: int) -> RerankResult:
    encoder, limit = entry.encoder, engine.settings.max_rerank_documents
    if len(request.documents) > limit:
        raise LimitExceeded(f"too many documents: {len(request.documents)}, limit max_rerank_documents={limit}",
                            param="documents")
    if not request.documents:
        return RerankResult(entry.name, np.zeros(0, np.float32), [], load_ns)
    texts = [request.query, *request.documents]
    check_text(texts)

    def pairs() -> list[list[int]]:
        try:
            return encoder.tokenize_pairs(request.query, request.documents, request.truncate,
                                          request.truncation_direction)
        except InputTooLong as exc:
            raise ContextLengthExceeded("a query-document pair exceeds the context length", param="documents") from exc

    ids = await engine.tokenizer_work(texts, pairs)
    logits = np.asarray((await engine.forward(entry, ids, frozenset({SCORE})))[SCORE], np.float32)
    scores = logits if request.raw_scores else ACTIVATIONS[encoder.activation](torch.from_numpy(logits)).numpy()
    return RerankResult(entry.name, np.asarray(scores, np.float32), [len(x) for x in ids], load_ns)
