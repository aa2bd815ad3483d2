"""Operational routes: /health (liveness), /ready (readiness). Open even when API keys are set."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .common import engine_of
from .responses import json_response
from .schemas import NOT_READY, Status

router = APIRouter()


@router.get("/health", summary="Liveness: default model loaded and its worker alive", response_model=Status,
            responses=NOT_READY)
async def health(request: Request) -> Response:
    status = "failed" if request.app.state.load_error else engine_of(request).health()
    return json_response({"status": status}, 200 if status == "ok" else 503)


@router.get("/ready", summary="Readiness: healthy and the last batch did not fail", response_model=Status,
            responses=NOT_READY)
async def ready(request: Request) -> Response:
    engine = engine_of(request)
    if engine.ready():
        return json_response({"status": "ready"})
    return json_response({"status": "not ready"}, 503)
