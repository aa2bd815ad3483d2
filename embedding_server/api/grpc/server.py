"""TEI's gRPC API next to HTTP: a ``grpc.aio`` server on EMBED_GRPC_PORT, on the app's event loop, serving the
``tei.v1`` services (api/grpc/services.py) on the app's engine, with the standard health service
(``grpc.health.v1.Health``) and server reflection. Started by the app's lifespan once the engine exists, stopped
(with a grace) before the engine stops.

As TEI: the health service and reflection need no API key; every ``tei.v1`` call does when EMBED_API_KEY is set.
Health: "" and ``tei.v1.Info``/``tei.v1.Tokenize`` are SERVING; ``tei.v1.Embed`` is SERVING while the default model
is an embedding model and healthy, ``tei.v1.Rerank`` while a reranker answers requests naming no model,
``tei.v1.Predict`` never (no classifiers here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ...engine.errors import EngineError
from ...engine.rerank import reranker_entry
from . import tei_pb2 as pb
from .calls import Calls
from .services import ADDERS, SERVICERS

log = logging.getLogger("embedding_server.grpc")

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name
                      for name in ("Info", "Embed", "Predict", "Rerank", "Tokenize"))
_SERVING, _NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class Health(health_aio.HealthServicer):
    """The standard health service, its statuses read from the engine at each check (and every second for
    watchers)."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def statuses(self) -> dict[str, int]:
        engine = self.engine
        default = engine.default_entry()
        embedding = engine.healthy() and default is not None and default.task != "rerank"
        try:
            entry = reranker_entry(engine.registry, default, None)
            reranking = not entry.error and (entry is not default or engine.healthy())
        except EngineError:
            reranking = False
        return {"": _SERVING, "tei.v1.Info": _SERVING, "tei.v1.Tokenize": _SERVING,
                "tei.v1.Embed": _SERVING if embedding else _NOT_SERVING,
                "tei.v1.Rerank": _SERVING if reranking else _NOT_SERVING, "tei.v1.Predict": _NOT_SERVING}

    async def refresh(self) -> None:
        for service, status in self.statuses().items():
            if self._server_status.get(service) != status:
                await self.set(service, status)

    async def Check(self, request, context):
        await self.refresh()
        return await super().Check(request, context)


class GrpcServer:
    """The gRPC server of one app (``state``: the app's state, with its engine, settings and recorder)."""

    def __init__(self, state: Any, host: str, port: int):
        self.state, self.host, self.port = state, host, port
        self.server: grpc.aio.Server | None = None
        self.health: Health | None = None
        self._watch: asyncio.Task | None = None

    async def start(self) -> int:
        """Listen and serve; the port bound (OSError if it cannot be)."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        calls = Calls(self.state)
        for servicer in SERVICERS:
            ADDERS[servicer](servicer(calls), server)
        self.health = Health(self.state.engine)
        await self.health.refresh()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older releases returned 0
            bound = 0
        if bound == 0:
            raise OSError(f"gRPC (EMBED_GRPC_PORT): cannot listen on {address}: in use or not an address of this host")
        await server.start()
        self.server, self.port = server, bound
        self._watch = asyncio.create_task(self._watch_health())
        log.info("gRPC (TEI's tei.v1 API) listening on %s", address)
        return bound

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self.health.refresh()

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let running ones finish for ``grace`` seconds, then cancel them."""
        if self._watch is not None:
            self._watch.cancel()
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
            self.server = None
