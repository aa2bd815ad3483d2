"""The engine: one entry point, ``embed(EmbedRequest) -> EmbedResult``, for every dialect."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np

from ..model.encoder import SentenceEncoder, Token
from ..model.precision import native_bf16, resolve_dtype
from ..settings import Settings
from .errors import InvalidInput, LimitExceeded, ModelNotFound, ModelUnavailable
from .heap import HeapTrimmer, resident_bytes
from .lifecycle import Lifecycle
from .registry import ModelEntry, ModelRegistry, discover
from .inputs import check_outputs, check_rows, check_text, prompt_text, small, token_ids, tokenize_inline
from .rerank import rerank_documents
from .types import COLBERT, DENSE, SPARSE, TOKENS, EmbedRequest, EmbedResult, RerankRequest, RerankResult
from .scheduler import CostModel
from .worker import BatchStats, ModelWorker

log = logging.getLogger(__name__)

T = TypeVar("T")
TOKENIZER_THREADS = 2  # tokenize requests too large for the event loop



class Engine:
    """Owns the registry, one worker per loaded model, and the tokenizer threads."""

    def __init__(self, settings: Settings, encoder_factory: Callable[[ModelEntry], object] | None = None):
        self.settings = settings
        self.registry = ModelRegistry(discover(settings.models_dir), settings.aliases, settings.models_dir)
        self.lifecycle = Lifecycle(self)
        self.on_batch: Callable[[str, BatchStats], None] | None = None  # observers, e.g. metrics
        self.on_load: Callable[[str, float], None] | None = None
        self.on_death: Callable[[str, str], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloading: asyncio.Future | None = None
        self._encoder_factory = encoder_factory or self._load_encoder
        self._tokenize_pool = ThreadPoolExecutor(max_workers=TOKENIZER_THREADS, thread_name_prefix="tokenize")

    # ----- lifecycle -------------------------------------------------------------------
    def dtype_for(self, entry: ModelEntry) -> str:
        """The dtype ``entry`` is (or will be) served in."""
        return resolve_dtype(self.settings.dtype_of(entry.name), native_bf16())[0]

    def _load_encoder(self, entry: ModelEntry) -> SentenceEncoder:
        dtype, why = resolve_dtype(self.settings.dtype_of(entry.name), native_bf16())
        log.log(logging.WARNING if "emulated" in why else logging.INFO, "model %s: %s (%s)", entry.name, dtype, why)
        return SentenceEncoder(entry.path, self.settings.pooling, self.settings.num_threads,
                               padding_free=self.settings.padding_free,
                               short_batch_copy_mb=self.settings.short_batch_copy_mb, dtype=dtype)

    def _load(self, entry: ModelEntry) -> None:
        """Load weights and start the model's worker (runs in a thread)."""
        started, resident_before = time.perf_counter(), resident_bytes()
        name = entry.name
        # The worker's thread loads and warms up the model itself (see ModelWorker.launch).
        worker = ModelWorker.launch(
            lambda: self._encoder_factory(entry), name, self.settings.max_batch_tokens,
            self.settings.max_batch_size, self.settings.max_queued_inputs,
            cost_of=lambda encoder: _calibrated_cost(encoder, name),
            on_batch=lambda stats: self.on_batch and self.on_batch(name, stats),
            trimmer=HeapTrimmer(self.settings.heap_trim_mb),
            slice_seconds=self.settings.slice_ms / 1000,
            on_death=lambda reason: self._loop.call_soon_threadsafe(self._worker_died, entry, reason),
        )
        encoder = worker.embedder
        entry.encoder, entry.load_seconds, entry.loaded_at = encoder, time.perf_counter() - started, time.time()
        entry.worker, entry.parked = worker, False
        entry.resident_bytes = max(resident_bytes() - resident_before, 0)
        log.info("model %s loaded from %s in %.2fs (%s)", name, entry.path, entry.load_seconds,
                 getattr(encoder, "forward_kind", "custom encoder"))
        if self.on_load:
            self.on_load(name, entry.load_seconds)

    async def load_default(self) -> None:
        """Load the default model; raises ModelNotFound / ModelUnavailable on failure."""
        self._loop = asyncio.get_running_loop()
        await self.ensure_loaded(self.registry.resolve(self.settings.model))

    def _worker_died(self, entry: ModelEntry, reason: str) -> None:
        """On the event loop: a model's worker thread ended abnormally (its requests have been failed).
        The model is dropped and loaded again: at once for the default model, else on its next request."""
        if entry.worker is None or entry.worker.alive:
            return
        entry.worker = entry.encoder = None
        entry.deaths += 1
        if self.on_death:
            self.on_death(entry.name, reason)
        if entry is self.default_entry():
            log.warning("reloading the default model %s", entry.name)
            self._reloading = asyncio.ensure_future(self._reload(entry))

    async def _reload(self, entry: ModelEntry) -> None:
        try:
            await self.ensure_loaded(entry)
        except Exception as exc:  # noqa: BLE001 - logged by the registry; /health says "failed"
            log.error("default model %s could not be reloaded: %s", entry.name, exc)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued batches of every worker, then stop them."""
        deadline = time.monotonic() + timeout
        for entry in self.registry.entries.values():
            if entry.worker is not None:
                entry.worker.stop(max(0.1, deadline - time.monotonic()))
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    # ----- state -----------------------------------------------------------------------
    def default_entry(self) -> ModelEntry | None:
        try:
            return self.registry.resolve(self.settings.model)
        except ModelNotFound:
            return None

    def healthy(self) -> bool:
        """Default model loaded and its worker thread alive (or unloaded on request: it loads on the next one)."""
        entry = self.default_entry()
        return bool(entry and ((entry.loaded and entry.worker.alive) or (entry.parked and not entry.error)))

    def health(self) -> str:
        """The default model's state: ok, loading, reloading (its worker died), or failed."""
        entry = self.default_entry()
        if entry is None or entry.error:
            return "failed"
        if (entry.loaded and entry.worker.alive) or entry.parked:
            return "ok"
        return "reloading" if entry.deaths else "loading"

    def ready(self) -> bool:
        """Healthy, and the last batch did not fail."""
        worker = self.healthy() and self.default_entry().worker
        return bool(self.healthy() and not (worker and worker.last_batch_failed))

    def loaded_dtypes(self) -> dict[str, str]:
        """The dtype each loaded model's weights are served in."""
        return {e.name: getattr(e.encoder.details, "dtype", "float32") for e in self.registry.entries.values()
                if e.loaded and e.encoder is not None}

    def queued_inputs(self) -> dict[str, int]:
        return {e.name: e.worker.queued_inputs for e in self.registry.entries.values() if e.loaded}

    # ----- tokenizer ------------------------------------------------------------------
    async def encoder(self, model: str | None = None) -> SentenceEncoder:
        """The loaded encoder of ``model`` (None: the default model), loading it first if needed."""
        self._loop = self._loop or asyncio.get_running_loop()
        entry = self.registry.resolve(self.settings.model if model is None else model)
        async with self.lifecycle.use(entry):
            await self.ensure_loaded(entry)
        if entry.encoder is None:  # its worker died just now
            raise ModelUnavailable(f"model '{entry.name}' stopped working and is being reloaded; retry")
        return entry.encoder

    async def tokens(self, texts: list[str], add_special_tokens: bool = True, prompt_name: str | None = None,
                     model: str | None = None) -> list[list[Token]]:
        """Every token of each text (after the model's prompt ``prompt_name``), untruncated, with its byte span."""
        encoder = await self.encoder(model)
        prompt = prompt_text(encoder, prompt_name)
        check_text(texts)
        return await self.tokenizer_work(texts, lambda: [encoder.tokens(t, add_special_tokens, prompt) for t in texts])

    async def decode(self, ids: list[list[int]], skip_special_tokens: bool = True,
                     model: str | None = None) -> list[str]:
        """The text of each list of model token ids (ids the tokenizer does not know are skipped)."""
        encoder = await self.encoder(model)
        return await self.tokenizer_work(ids, lambda: [encoder.decode(x, skip_special_tokens) for x in ids])

    async def ensure_loaded(self, entry: ModelEntry) -> int:
        """Load ``entry`` unless it is resident; nanoseconds spent loading."""
        self._loop = self._loop or asyncio.get_running_loop()
        if not entry.loaded:
            await self.lifecycle.make_room(entry)
        return await self.registry.ensure_loaded(entry, self._load)

    async def tokenizer_work(self, inputs: list, work: Callable[[], T]) -> T:
        """``work`` on the event loop when ``inputs`` are small, else on a tokenizer thread."""
        if small(inputs):
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, work)

    # ----- embedding -------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> EmbedResult:
        """Embed all inputs of ``request``, in order. Cancelling drops its queued work."""
        self._loop = self._loop or asyncio.get_running_loop()
        entry = self.registry.resolve(self.settings.model if request.model is None else request.model)
        if entry.task == "rerank":  # known from its folder: refused without loading it
            raise InvalidInput(f"model '{entry.name}' is a reranker (a cross-encoder): it scores query-document "
                               "pairs on the rerank routes and gives no embeddings", param="model")
        async with self.lifecycle.use(entry, request.keep_alive):
            return await self._embed(entry, request, await self.ensure_loaded(entry))

    async def preload(self, model: str | None, keep_alive: float | None = None) -> None:
        """Load ``model`` (Ollama's generate/chat without a prompt) and set its keep_alive; ``keep_alive`` 0
        unloads it once idle (and does not load it first)."""
        entry = self.registry.resolve(self.settings.model if model is None else model)
        async with self.lifecycle.use(entry, keep_alive):
            if keep_alive != 0:
                await self.ensure_loaded(entry)

    async def _embed(self, entry: ModelEntry, request: EmbedRequest, load_ns: int) -> EmbedResult:
        encoder = entry.encoder
        if len(request.inputs) > self.settings.max_inputs:
            raise LimitExceeded(
                f"too many inputs: {len(request.inputs)}, limit max_inputs={self.settings.max_inputs}", param="input")
        dim = encoder.details.dimension
        if request.dimensions is not None and not 1 <= request.dimensions <= dim:
            raise InvalidInput(f"dimensions must be between 1 and {dim} for model '{entry.name}'", param="dimensions")
        prompt = prompt_text(encoder, request.prompt_name)
        check_outputs(entry.name, encoder, request.outputs)
        if not request.inputs:
            empty = {head: [] for head in request.outputs - {DENSE}}
            return EmbedResult(entry.name, np.zeros((0, request.dimensions or dim), np.float32), [], load_ns,
                               empty.get(TOKENS), empty.get(SPARSE), empty.get(COLBERT))

        mode = (request.ids_mode or self.settings.token_ids) if request.token_ids else "text"
        if tokenize_inline(request):  # a query: cheaper here than a round trip through a thread
            ids = token_ids(encoder, request, mode, prompt)
        else:
            ids = await asyncio.get_running_loop().run_in_executor(
                self._tokenize_pool, token_ids, encoder, request, mode, prompt)
        check_rows(encoder, ids)
        counts = [len(x) for x in ids]
        outputs = await self.forward(entry, ids, request.outputs)
        vectors = (finish_dense(outputs[DENSE], request.dimensions, request.normalize) if DENSE in outputs
                   else np.zeros((len(ids), 0), np.float32))
        return EmbedResult(entry.name, vectors, counts, load_ns, outputs.get(TOKENS), outputs.get(SPARSE),
                           outputs.get(COLBERT))

    async def forward(self, entry: ModelEntry, ids: list[list[int]], heads: frozenset[str]) -> dict:
        """Queue ``ids`` on the model's worker and wait for ``heads``; cancelling drops the queued work."""
        if sum(map(len, ids)) > self.settings.max_request_tokens:
            raise LimitExceeded(f"too many tokens: {sum(map(len, ids))}, limit "
                                f"max_request_tokens={self.settings.max_request_tokens}", param="input")
        worker = entry.worker  # None if its thread died while this request was tokenized
        if worker is None or not worker.alive:
            raise ModelUnavailable(f"model '{entry.name}' stopped working and is being reloaded; retry")
        ticket = worker.submit(ids, heads)
        try:
            return await ticket.future
        except asyncio.CancelledError:
            worker.cancel(ticket)
            raise

    # ----- reranking -------------------------------------------------------------------
    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Score each document against the query with a cross-encoder (scores in document order)."""
        return await rerank_documents(self, request)

    def token_strings(self, model: str, ids: list[int]) -> list[str]:
        """Each token id of a loaded ``model`` decoded alone (FlagEmbedding's ``convert_id_to_token``)."""
        tokenizer = self.registry.resolve(model).encoder.tokenizer
        return [tokenizer.decode([i]) for i in ids]


def _calibrated_cost(encoder, name: str) -> CostModel:
    """The scheduler's cost model from a short warm-up of the real model (default if unavailable)."""
    if not hasattr(encoder, "calibrate"):
        return CostModel()
    if getattr(encoder, "padding_free", False):
        # A padding-free forward computes no padding in its dense layers and regroups sequences of near-equal
        # length for attention itself, so a batch's spread of lengths costs it nothing: its batches are cut
        # by real tokens, and never split to save padding (that only adds forward passes: the benchmark's
        # 32-input requests in two passes each ran 2.8% slower in-process than in one, 2.9% through the server).
        # With weight 0 no split ever pays for its overhead, so that needs no measuring: only the warm-up stays.
        encoder.warm_up()
        log.info("model %s: padding-free forward, batches cut by real tokens", name)
        return CostModel(padding_weight=0.0)
    overhead_ms, per_token_ms = encoder.calibrate()
    tokens = min(max(overhead_ms / per_token_ms, 8.0), 1024.0)
    log.info("model %s: forward overhead %.1f ms = %.0f tokens at %.3f ms/token", name, overhead_ms, tokens,
             per_token_ms)
    return CostModel(overhead=tokens, per_token=1.0, padding_weight=1.0)


def finish_dense(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Pooled vectors as the request wants them: the first ``dimensions`` components (Matryoshka-style),
    then L2-normalised unless ``normalize`` is False."""
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = np.ascontiguousarray(vectors[:, :dimensions])
    if not normalize:
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
