"""Prometheus metrics (``GET /metrics``) and one structured access-log line per request."""

from __future__ import annotations

import logging
import time

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..engine.worker import BatchStats

access_log = logging.getLogger("embedding_server.access")
router = APIRouter()

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """All metrics of one app, in their own registry (several apps can live in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("embed_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_seconds = Histogram("embed_http_request_seconds", "HTTP request latency", ["route"],
                                         buckets=_SECONDS_BUCKETS, registry=r)
        self.inputs = Counter("embed_inputs", "Inputs embedded", ["model"], registry=r)
        self.tokens = Counter("embed_tokens", "Tokens embedded (special tokens included)", ["model"], registry=r)
        self.batch_size = Histogram("embed_batch_size", "Inputs per forward pass", ["model"], buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.inference_seconds = Histogram("embed_inference_seconds", "Forward-pass time per batch", ["model"],
                                           buckets=_SECONDS_BUCKETS, registry=r)
        self.batch_failures = Counter("embed_batch_failures", "Batches whose forward pass failed", ["model"], registry=r)
        self.forward_fallbacks = Counter("embed_forward_fallbacks", "Batches whose padding-free forward raised and "
                                         "were redone by the transformers forward", ["model"], registry=r)
        self.batch_slices = Histogram("embed_batch_slices", "Slices a forward pass ran in (other work ran between "
                                      "them)", ["model"], buckets=_BATCH_BUCKETS, registry=r)
        self.worker_deaths = Counter("embed_worker_deaths", "Model worker threads that died (the model is then "
                                     "reloaded)", ["model"], registry=r)
        self.unload_timeouts = Counter("embed_unload_timeouts", "Unloads whose worker did not stop in time (its "
                                       "memory stays in use until it does)", ["model"], registry=r)
        self.load_seconds = Gauge("embed_model_load_seconds", "Time to load each model", ["model"], registry=r)
        self._queue_source = None
        self._models_source = None
        r.register(_QueueDepth(self))
        r.register(_ModelInfo(self))

    def on_batch(self, model: str, stats: BatchStats) -> None:
        """Engine observer: called from the model's worker thread after each forward pass."""
        self.batch_size.labels(model).observe(stats.size)
        self.inference_seconds.labels(model).observe(stats.seconds)
        self.batch_slices.labels(model).observe(stats.slices)
        if stats.fallback:
            self.forward_fallbacks.labels(model).inc()
        if stats.failed:
            self.batch_failures.labels(model).inc()
        else:
            self.inputs.labels(model).inc(stats.size)
            self.tokens.labels(model).inc(stats.tokens)

    def on_death(self, model: str, reason: str) -> None:
        """Engine observer: a model's worker thread died."""
        self.worker_deaths.labels(model).inc()

    def on_stuck(self, model: str) -> None:
        """Engine observer: an unloaded model's worker did not stop in time."""
        self.unload_timeouts.labels(model).inc()

    def on_load(self, model: str, seconds: float) -> None:
        self.load_seconds.labels(model).set(seconds)

    def watch_queues(self, source) -> None:
        """``source()`` returns {model: queued inputs}; read at every scrape."""
        self._queue_source = source

    def watch_models(self, source) -> None:
        """``source()`` returns {model: dtype served} for the loaded models; read at every scrape."""
        self._models_source = source


class _QueueDepth:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        family = GaugeMetricFamily("embed_queue_depth", "Inputs waiting per model", labels=["model"])
        source = self.metrics._queue_source
        for model, depth in (source() if source else {}).items():
            family.add_metric([model], depth)
        yield family


class _ModelInfo:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        family = GaugeMetricFamily("embed_model_info", "Loaded models and the dtype their weights are served in",
                                   labels=["model", "dtype"])
        source = self.metrics._models_source
        for model, dtype in (source() if source else {}).items():
            family.add_metric([model, dtype], 1)
        yield family


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class AccessRecorder:
    """Counts answered requests and writes their access-log lines (never input text unless asked)."""

    def __init__(self, metrics: Metrics, log_inputs: bool = False):
        self.metrics, self.log_inputs = metrics, log_inputs
        self._children: dict[tuple[str, int], tuple] = {}  # (route, status) -> its metric children
        self.tracing = None  # api.tracing.Tracing when EMBED_OTLP_ENDPOINT is set

    def record(self, method: str | None, route: str, status: int, seconds: float, embed_log: dict | None, carrier=None) -> None:
        """Count one answered request, write its access-log line and, when tracing, make its spans. ``seconds``: from
        its arrival until now; ``carrier``: its headers (ASGI list or mapping), for the caller's ``traceparent``."""
        if self.tracing is not None:
            self._trace(method, route, status, seconds, embed_log, carrier)
        children = self._children.get((route, status))
        if children is None:  # label lookups once per (route, status), not per request
            children = self._children[(route, status)] = (self.metrics.requests.labels(route, str(status)),
                                                           self.metrics.request_seconds.labels(route))
        children[0].inc()
        children[1].observe(seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        line = {"method": method, "route": route, "status": status, "ms": round(seconds * 1000, 2)}
        if embed_log:
            line.update(embed_log)
            line.pop("timeline", None)
            if not self.log_inputs:
                line.pop("texts", None)
        # One record handed to the handlers, as .info() would, minus its search of the stack for the caller's
        # file and line (which no access-log format shows): a tenth of a query's event-loop time otherwise.
        access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, "(access log)", 0,
                                                orjson.dumps(line).decode(), None, None))


    def _trace(self, method, route, status, seconds, embed_log, carrier) -> None:
        end = time.time_ns()
        try:
            self.tracing.request(method, route, status, end - int(seconds * 1e9), end, embed_log, carrier)
        except Exception:  # noqa: BLE001 - tracing never fails a request, nor its access-log line
            access_log.exception("tracing the request failed")


class AccessLog:
    """ASGI middleware: every request through ``recorder`` (its route label: the matched route's path)."""

    def __init__(self, app, recorder: AccessRecorder):
        self.app, self.recorder = app, recorder

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.recorder.record(scope.get("method"), route, status, time.perf_counter() - started,
                                 scope.get("state", {}).get("embed_log"), scope.get("headers"))
