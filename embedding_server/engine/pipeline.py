"""What happens to a request once its model is loaded and held: inputs to token ids (on the event loop when small,
else on the tokenizer threads), the forward on the model's worker, and the outputs as the request wants them.
Embedding and rerank scoring both run here; the engine holds the model around these calls."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np

from ..model.encoder import InputTooLong
from ..model.reranker import activate
from ..settings import Settings
from .errors import ContextLengthExceeded, InvalidInput, LimitExceeded, ModelUnavailable
from .inputs import check_outputs, check_rows, check_text, prompt_text, small, token_ids, tokenize_inline
from .registry import ModelEntry
from .types import (COLBERT, DENSE, SCORE, SPARSE, TOKENS, EmbedRequest, EmbedResult, RerankRequest, RerankResult,
                    Timeline)

T = TypeVar("T")
TOKENIZER_THREADS = 2  # tokenize requests too large for the event loop


def check_before_loading(entry: ModelEntry, request: EmbedRequest, settings: Settings) -> None:
    """What can be refused without the model: a reranker on an embedding route, too many inputs, a bad dimension."""
    if entry.task == "rerank":  # known from its folder
        raise InvalidInput(f"model '{entry.name}' is a reranker (a cross-encoder): it scores query-document "
                           "pairs on the rerank routes and gives no embeddings", param="model")
    if len(request.inputs) > settings.max_inputs:
        raise LimitExceeded(
            f"too many inputs: {len(request.inputs)}, limit max_inputs={settings.max_inputs}", param="input")
    if request.dimensions is not None and request.dimensions < 1:
        raise InvalidInput(f"dimensions must be between 1 and the model's dimension for model '{entry.name}'",
                           param="dimensions")


class Pipeline:
    """Tokenizing, forwards and post-processing for loaded models."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._tokenize_pool = ThreadPoolExecutor(max_workers=TOKENIZER_THREADS, thread_name_prefix="tokenize")

    def close(self) -> None:
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    async def tokenizer_work(self, inputs: list, work: Callable[[], T]) -> T:
        """``work`` on the event loop when ``inputs`` are small, else on a tokenizer thread."""
        if small(inputs):
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, work)

    async def embed(self, entry: ModelEntry, request: EmbedRequest, load_ns: int,
                    timeline: Timeline | None = None) -> EmbedResult:
        """``request``'s outputs from the loaded ``entry``, in input order; ``timeline`` notes where its time went."""
        timeline = timeline or Timeline(time.time_ns())
        timeline.load_ns = load_ns
        encoder = entry.encoder
        dim = encoder.details.dimension
        if request.dimensions is not None and not 1 <= request.dimensions <= dim:
            raise InvalidInput(f"dimensions must be between 1 and {dim} for model '{entry.name}'", param="dimensions")
        prompt = prompt_text(encoder, request.prompt_name)
        check_outputs(entry.name, encoder, request.outputs)
        if not request.inputs:
            empty = {head: [] for head in request.outputs - {DENSE}}
            timeline.ready_ns = time.time_ns()
            return EmbedResult(entry.name, np.zeros((0, request.dimensions or dim), np.float32), [], load_ns,
                               empty.get(TOKENS), empty.get(SPARSE), empty.get(COLBERT), timeline=timeline)
        mode = (request.ids_mode or self.settings.token_ids) if request.token_ids else "text"
        timeline.tokenize_start_ns = time.time_ns()
        if tokenize_inline(request):  # a query: cheaper here than a round trip through a thread
            ids = token_ids(encoder, request, mode, prompt)
        else:
            timeline.inline = False
            ids = await asyncio.get_running_loop().run_in_executor(
                self._tokenize_pool, token_ids, encoder, request, mode, prompt)
        timeline.tokenize_end_ns = time.time_ns()
        check_rows(encoder, ids)
        outputs = await self.forward(entry, ids, request.outputs, timeline)
        vectors = (finish_dense(outputs[DENSE], request.dimensions, request.normalize) if DENSE in outputs
                   else np.zeros((len(ids), 0), np.float32))
        result = EmbedResult(entry.name, vectors, [len(x) for x in ids], load_ns, outputs.get(TOKENS),
                             outputs.get(SPARSE), outputs.get(COLBERT), timeline=timeline)
        if request.sparse_token_strings and result.sparse is not None:  # read from the tokenizer while it is held
            tokenizer = encoder.tokenizer
            result.sparse_strings = [[tokenizer.decode([i]) for i in ids.tolist()] for ids, _ in result.sparse]
        timeline.ready_ns = time.time_ns()
        return result

    async def score(self, entry: ModelEntry, request: RerankRequest, load_ns: int,
                    timeline: Timeline | None = None) -> RerankResult:
        """Scores in document order: the model's activation of its logits (CrossEncoder.predict's), or the logits;
        ``timeline`` notes where the time went."""
        timeline = timeline or Timeline(time.time_ns())
        timeline.load_ns = load_ns
        encoder, limit = entry.encoder, self.settings.max_rerank_documents
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
                raise ContextLengthExceeded("a query-document pair exceeds the context length",
                                            param="documents") from exc

        timeline.tokenize_start_ns = time.time_ns()
        ids = await self.tokenizer_work(texts, pairs)
        timeline.tokenize_end_ns = time.time_ns()
        logits = np.asarray((await self.forward(entry, ids, frozenset({SCORE}), timeline))[SCORE], np.float32)
        scores = logits if request.raw_scores else activate(encoder.activation, logits)
        timeline.ready_ns = time.time_ns()
        return RerankResult(entry.name, np.asarray(scores, np.float32), [len(x) for x in ids], load_ns, timeline)

    async def forward(self, entry: ModelEntry, ids: list[list[int]], heads: frozenset[str],
                      timeline: Timeline | None = None) -> dict:
        """Queue ``ids`` on the model's worker and wait for ``heads``; cancelling drops the queued work. ``timeline``
        gets the queueing time and the forward passes."""
        if sum(map(len, ids)) > self.settings.max_request_tokens:
            raise LimitExceeded(f"too many tokens: {sum(map(len, ids))}, limit "
                                f"max_request_tokens={self.settings.max_request_tokens}", param="input")
        worker = entry.worker  # None if its thread died while this request was tokenized
        if worker is None or not worker.alive:
            raise ModelUnavailable(f"model '{entry.name}' stopped working and is being reloaded; retry")
        if timeline is not None:
            timeline.queued_ns = time.time_ns()
        ticket = worker.submit(ids, heads)
        if timeline is not None:
            timeline.forwards = ticket.forwards  # filled in by the worker as batches complete
        try:
            return await ticket.future
        except asyncio.CancelledError:
            worker.cancel(ticket)
            raise


def finish_dense(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Pooled vectors as the request wants them: the first ``dimensions`` components (Matryoshka-style),
    then L2-normalised unless ``normalize`` is False."""
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = np.ascontiguousarray(vectors[:, :dimensions])
    if not normalize:
        return vectors
    # np.linalg.norm(vectors, axis=1, keepdims=True)'s own arithmetic (the same bits), without its ~10 us of
    # argument handling per request.
    norms = np.sqrt(np.add.reduce(vectors * vectors, axis=1, keepdims=True))
    return vectors / np.maximum(norms, 1e-12)
