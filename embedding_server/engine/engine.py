"""The engine: one entry point per kind of work (``embed``, ``rerank``, ``tokens``, ``decode``, ``facts``) for every
dialect. Each request holds its model (``Lifecycle.use``) for everything it reads from it, and finishes within
EMBED_REQUEST_TIMEOUT_S or is answered ``RequestTimeout`` (its queued work dropped)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, TypeVar

from ..model.cpu import cpu_features
from ..model.encoder import SentenceEncoder, Token
from ..model.precision import resolve_dtype
from ..settings import Settings
from .errors import ModelNotFound, ModelUnavailable, RequestTimeout
from .facts import ModelFacts, facts_of
from .heap import HeapTrimmer
from .inputs import check_text, prompt_text
from .lifecycle import Lifecycle
from .loading import Loader
from .memory import estimate_bytes
from .pipeline import Pipeline, check_before_loading
from .registry import ModelEntry, ModelRegistry, discover
from .rerank import reranker_entry
from .scheduler import CostModel
from .types import EmbedRequest, EmbedResult, RerankRequest, RerankResult, Timeline
from .worker import BatchStats, ModelWorker

_timeout = getattr(asyncio, "timeout", None)
log = logging.getLogger(__name__)

T = TypeVar("T")


class Engine:
    """Owns the registry, the models' lifecycle and loads, and the pipeline every request runs through."""

    def __init__(self, settings: Settings, encoder_factory: Callable[[ModelEntry], object] | None = None):
        self.settings = settings
        self.cpu = cpu_features(settings.cpu_features)
        self.registry = ModelRegistry(discover(settings.models_dir), settings.aliases, settings.models_dir)
        self.lifecycle = Lifecycle(self.registry, settings, self._estimate, self.default_entry,
                                   on_stuck=lambda name: self.on_stuck and self.on_stuck(name))
        self.loader = Loader(self._launch, settings.load_timeout_s, self._loaded, self._died)
        self.pipeline = Pipeline(settings)
        self.on_batch: Callable[[str, BatchStats], None] | None = None  # observers, e.g. metrics
        self.on_load: Callable[[str, float], None] | None = None
        self.on_death: Callable[[str, str], None] | None = None
        self.on_stuck: Callable[[str], None] | None = None  # an unloaded model's worker did not stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloading: asyncio.Task | None = None
        self._encoder_factory = encoder_factory or self._load_encoder

    # ----- loading ---------------------------------------------------------------------------
    def dtype_for(self, entry: ModelEntry) -> str:
        """The dtype ``entry`` is (or will be) served in."""
        return resolve_dtype(self.settings.dtype_of(entry.name), self.cpu.native_bf16)[0]

    def _estimate(self, entry: ModelEntry) -> int:
        return estimate_bytes(entry.path, self.dtype_for(entry), self.settings.short_batch_copy_mb)

    def _load_encoder(self, entry: ModelEntry) -> SentenceEncoder:
        dtype, why = resolve_dtype(self.settings.dtype_of(entry.name), self.cpu.native_bf16)
        log.log(logging.WARNING if "emulated" in why else logging.INFO, "model %s: %s (%s)", entry.name, dtype, why)
        return SentenceEncoder(entry.path, self.settings.pooling, self.settings.num_threads,
                               padding_free=self.settings.padding_free,
                               short_batch_copy_mb=self.settings.short_batch_copy_mb, dtype=dtype, cpu=self.cpu)

    def _launch(self, entry: ModelEntry) -> ModelWorker:
        """A started worker for ``entry`` (in a loader thread; the worker's own thread builds the model)."""
        name, loop, s = entry.name, self._loop, self.settings
        return ModelWorker.launch(
            lambda: self._encoder_factory(entry), name, s.max_batch_tokens, s.max_batch_size, s.max_queued_inputs,
            cost_of=lambda encoder: calibrated_cost(encoder, name),
            on_batch=lambda stats: self.on_batch and self.on_batch(name, stats),
            trimmer=HeapTrimmer(s.heap_trim_mb), slice_seconds=s.slice_ms / 1000,
            on_death=lambda reason: loop.call_soon_threadsafe(self.loader.worker_died, entry))

    def _loaded(self, entry: ModelEntry) -> None:
        if self.on_load:
            self.on_load(entry.name, entry.load_seconds)

    def _died(self, entry: ModelEntry, reason: str) -> None:
        """On the event loop: a model's worker died (its requests were failed). The default model is loaded again
        at once, any other on its next request."""
        if self.on_death:
            self.on_death(entry.name, reason)
        if entry is self.default_entry():
            log.warning("reloading the default model %s", entry.name)
            self._reloading = asyncio.ensure_future(self._reload(entry))

    async def _reload(self, entry: ModelEntry) -> None:
        try:
            await self.ensure_loaded(entry)
        except Exception as exc:  # noqa: BLE001 - logged by the loader; /health says "failed"
            log.error("default model %s could not be reloaded: %s", entry.name, exc)

    async def ensure_loaded(self, entry: ModelEntry) -> int:
        """Load ``entry`` unless it is resident (waiting for an unload of it to end first); nanoseconds spent."""
        self._loop = self._loop or asyncio.get_running_loop()
        started, waited = time.perf_counter_ns(), False
        while True:
            if entry.unloading is not None:
                await asyncio.shield(entry.unloading)
                waited = True
                continue
            if entry.loaded:
                return time.perf_counter_ns() - started if waited else 0
            if entry.broken:
                raise ModelUnavailable(f"model '{entry.name}' cannot be loaded; the server log says why")
            if entry.loading is None:
                await self.lifecycle.make_room(entry)  # no await between its last check and the start below
                if entry.loaded or entry.loading is not None or entry.unloading is not None:
                    continue  # the state moved while room was made
                self.loader.start(entry)
            await self.loader.wait(entry)
            waited = True

    async def load_default(self) -> None:
        """Load the default model; raises ModelNotFound / ModelUnavailable on failure."""
        self._loop = asyncio.get_running_loop()
        await self.ensure_loaded(self.registry.resolve(self.settings.model))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued batches of every worker, then stop them."""
        deadline = time.monotonic() + timeout
        for entry in self.registry.entries.values():
            if entry.worker is not None:
                entry.worker.stop(max(0.1, deadline - time.monotonic()))
        self.pipeline.close()

    # ----- state -----------------------------------------------------------------------
    def default_entry(self) -> ModelEntry | None:
        try:
            return self.registry.resolve(self.settings.model)
        except ModelNotFound:
            return None

    def health(self) -> str:
        """The default model's state: ok, loading, reloading (its worker died), stalled (its worker has made no
        progress for longer than its current unit of work should take), or failed."""
        entry = self.default_entry()
        if entry is None or entry.error:
            return "failed"
        if entry.loaded and entry.worker.alive:
            return "stalled" if entry.worker.stalled_seconds > 0 else "ok"
        if entry.parked and entry.loading is None:
            return "ok"  # unloaded on request: it loads on the next one
        return "reloading" if entry.deaths else "loading"

    def healthy(self) -> bool:
        return self.health() == "ok"

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

    async def facts(self, model: str | None = None, load: bool = False) -> ModelFacts:
        """``model``'s facts (None: the default model); ``load``: load it first, so that they are exact."""
        entry = self._entry(model)
        if not load:
            return await asyncio.to_thread(facts_of, entry, self.dtype_for(entry))
        return await self._held(entry, None, lambda: asyncio.to_thread(facts_of, entry, self.dtype_for(entry)))

    async def all_facts(self) -> list[ModelFacts]:
        """The facts of every servable model (those whose folder or load failed, and those whose folder was removed
        and which are not loaded, are left out)."""
        entries = [e for e in self.registry.entries.values() if not e.error and (e.loaded or not e.removed)]
        return await asyncio.to_thread(lambda: [facts_of(e, self.dtype_for(e)) for e in entries])

    # ----- requests --------------------------------------------------------------------------
    def _entry(self, model: str | None) -> ModelEntry:
        self._loop = self._loop or asyncio.get_running_loop()
        return self.registry.resolve(self.settings.model if model is None else model)

    async def _held(self, entry: ModelEntry, keep_alive: float | None, work: Callable[[], Awaitable[T]],
                    load_ns: list | None = None) -> T:
        """``work()`` with ``entry`` loaded and held, all within the request deadline."""
        async def held() -> T:
            async with self.lifecycle.use(entry, keep_alive):
                spent = await self.ensure_loaded(entry)
                if load_ns is not None:
                    load_ns.append(spent)
                if entry.encoder is None:  # its worker died just now
                    raise ModelUnavailable(f"model '{entry.name}' stopped working and is being reloaded; retry")
                return await work()

        seconds = self.settings.request_timeout_s
        try:
            if _timeout is None:  # Python 3.10
                return await asyncio.wait_for(held(), seconds)
            async with _timeout(seconds):  # a timer on this task, where wait_for starts a task per request
                return await held()
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request did not finish within {seconds:g} s (EMBED_REQUEST_TIMEOUT_S)") \
                from None

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        """Embed all inputs of ``request``, in order. Cancelling drops its queued work."""
        timeline = Timeline(time.time_ns())
        entry = self._entry(request.model)
        check_before_loading(entry, request, self.settings)
        spent: list[int] = []
        return await self._held(entry, request.keep_alive,
                                lambda: self.pipeline.embed(entry, request, spent[0], timeline), spent)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Score each document against the query with a cross-encoder (scores in document order)."""
        self._loop = self._loop or asyncio.get_running_loop()
        timeline = Timeline(time.time_ns())
        entry = reranker_entry(self.registry, self.default_entry(), request.model)
        spent: list[int] = []
        return await self._held(entry, request.keep_alive,
                                lambda: self.pipeline.score(entry, request, spent[0], timeline), spent)

    async def preload(self, model: str | None, keep_alive: float | None = None) -> None:
        """Load ``model`` (Ollama's generate/chat without a prompt) and set its keep_alive; ``keep_alive`` 0
        unloads it once idle (and does not load it first)."""
        entry = self._entry(model)
        async with self.lifecycle.use(entry, keep_alive):
            if keep_alive != 0:
                await self.ensure_loaded(entry)

    async def tokens(self, texts: list[str], add_special_tokens: bool = True, prompt_name: str | None = None,
                     model: str | None = None) -> list[list[Token]]:
        """Every token of each text (after the model's prompt ``prompt_name``), untruncated, with its byte span."""
        check_text(texts)
        entry = self._entry(model)

        async def work():
            encoder = entry.encoder
            prompt = prompt_text(encoder, prompt_name)
            return await self.pipeline.tokenizer_work(
                texts, lambda: [encoder.tokens(t, add_special_tokens, prompt) for t in texts])

        return await self._held(entry, None, work)

    async def decode(self, ids: list[list[int]], skip_special_tokens: bool = True,
                     model: str | None = None) -> list[str]:
        """The text of each list of model token ids (ids the tokenizer does not know are skipped)."""
        entry = self._entry(model)

        async def work():
            encoder = entry.encoder
            return await self.pipeline.tokenizer_work(ids, lambda: [encoder.decode(x, skip_special_tokens) for x in ids])

        return await self._held(entry, None, work)


def calibrated_cost(encoder, name: str) -> CostModel:
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
