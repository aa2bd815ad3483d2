"""The application factory: ``create_app(settings)`` wires routers, errors and the engine's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from . import __version__
from .api import console, native, observability, ollama, ollama_models, openai, rerank, simple, system, tei, tracing
from .api.errors import install_error_handlers
from .api.fast import FastApp
from .api.middleware import ApiKeys, BodyLimit, OllamaJsonBodies
from .engine.engine import Engine
from .engine.errors import EngineError
from .settings import Settings

log = logging.getLogger("embedding_server")
GRPC_GRACE_S = 5.0  # seconds running gRPC calls get to finish at shutdown


def create_app(settings: Settings | None = None, engine: Engine | None = None, span_exporter=None) -> FastAPI:
    """Build the app. Models load in the lifespan (the default one in the background). Traces go to
    EMBED_OTLP_ENDPOINT, or to ``span_exporter`` (an OpenTelemetry SpanExporter; tests) when given."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = engine or Engine(settings)
        app.state.engine.on_batch = app.state.metrics.on_batch
        app.state.engine.on_load = app.state.metrics.on_load
        app.state.engine.on_death = app.state.metrics.on_death
        app.state.engine.on_stuck = app.state.metrics.on_stuck
        app.state.metrics.watch_queues(app.state.engine.queued_inputs)
        app.state.metrics.watch_models(app.state.engine.loaded_dtypes)
        app.state.load_error = None
        loading = asyncio.create_task(_load_default(app))
        app.state.grpc = None
        try:
            app.state.grpc = await _start_grpc(app, settings)  # a port it cannot listen on stops the start
            yield
        finally:
            loading.cancel()
            if app.state.grpc is not None:
                await app.state.grpc.stop(GRPC_GRACE_S)
            await app.state.engine.lifecycle.stop()
            await asyncio.to_thread(app.state.engine.stop)
            if app.state.tracing is not None:  # the last spans, within tracing.SHUTDOWN_TIMEOUT_S
                await asyncio.to_thread(app.state.tracing.shutdown)

    app = FastApp(title="embedding-server", version=__version__, lifespan=lifespan,
                  description="Offline CPU embeddings with the Ollama and OpenAI APIs.")
    app.state.settings = settings
    app.state.metrics = observability.Metrics()
    app.state.recorder = observability.AccessRecorder(app.state.metrics, settings.log_inputs)
    app.state.tracing = app.state.recorder.tracing = tracing.start(settings, span_exporter)
    install_error_handlers(app)
    routers = (console.router, system.router, observability.router, ollama.router, ollama.protected,
               ollama_models.router, native.router, openai.router, tei.router, rerank.router, simple.router)
    for router in routers:
        app.include_router(router)
    # Outermost last: the access log, CORS (its headers on every answer, preflight without a key), the API key
    # (before any body is read), the body limit.
    app.add_middleware(OllamaJsonBodies)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeys, routes=[route for router in routers for route in router.routes])
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "HEAD", "OPTIONS"], allow_headers=["*"])
    app.add_middleware(observability.AccessLog, recorder=app.state.recorder)
    return app


async def _start_grpc(app: FastAPI, settings: Settings):
    """TEI's gRPC API on EMBED_GRPC_PORT (None when unset); grpc is imported only then."""
    if settings.grpc_port is None:
        return None
    from .api.grpc.server import GrpcServer

    server = GrpcServer(app.state, settings.host, settings.grpc_port)
    await server.start()
    return server


async def _load_default(app: FastAPI) -> None:
    """Load the default model; a failure is one clear log line and /health stays 503."""
    try:
        await app.state.engine.load_default()
    except EngineError as exc:
        app.state.load_error = exc.message
        log.error("default model not served: %s", exc.message)
        on_fatal = getattr(app.state, "on_fatal", None)
        if on_fatal is not None:
            on_fatal()
