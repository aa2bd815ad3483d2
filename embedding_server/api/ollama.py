"""Ollama's API: /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps, /api/version, /."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .. import __version__
from ..engine.types import EmbedRequest
from .common import engine_of, note_for_access_log, require_api_key, until_disconnect
from .errors import ApiError
from .models_info import describe_all, describe_loaded, describe_one
from .responses import json_response
from .schemas import OLLAMA_ERRORS, OllamaEmbeddingsResponse, OllamaEmbedResponse

router = APIRouter(responses=OLLAMA_ERRORS)
protected = APIRouter(dependencies=[Depends(require_api_key)], responses=OLLAMA_ERRORS)


class EmbedBody(BaseModel):
    """POST /api/embed. Unknown keys, ``options`` and ``keep_alive`` are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    input: Any = Field(None, description="A string or a list of strings.")
    truncate: bool | None = True
    dimensions: StrictInt | None = None
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class EmbeddingsBody(BaseModel):
    """POST /api/embeddings (legacy): one prompt, one vector."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    prompt: str | None = None
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    name: str | None = None  # older clients
    verbose: bool | None = None


def _model_name(model: str | None) -> str:
    if not model:
        raise ApiError(400, "model is required", param="model")
    return model


def _inputs(raw: Any) -> list[str]:
    """Ollama accepts a string or a list of strings; an empty string means no input."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return raw
    raise ApiError(400, "invalid input type", param="input")


@protected.post("/api/embed", summary="Embed one or more texts (Ollama)", response_model=OllamaEmbedResponse)
async def embed(body: EmbedBody, request: Request) -> Response:
    started = time.perf_counter_ns()
    internal = EmbedRequest(
        model=_model_name(body.model),
        inputs=_inputs(body.input),
        truncate=body.truncate is not False,
        dimensions=body.dimensions or None,
    )
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return json_response({
        "model": body.model,
        "embeddings": result.embeddings,
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": result.load_ns,
        "prompt_eval_count": result.prompt_tokens,
    })


@protected.post("/api/embeddings", summary="Embed one prompt (legacy Ollama)",
                response_model=OllamaEmbeddingsResponse)
async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
    internal = EmbedRequest(model=_model_name(body.model), inputs=[body.prompt] if body.prompt else [])
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return json_response({"embedding": result.embeddings[0] if len(result.embeddings) else []})


@protected.get("/api/tags", summary="List served models (Ollama)")
async def tags(request: Request) -> Response:
    return json_response({"models": describe_all(engine_of(request))})


@protected.post("/api/show", summary="Show a model's details (Ollama)")
async def show(body: ShowBody, request: Request) -> Response:
    name = _model_name(body.model or body.name)
    return json_response(describe_one(engine_of(request), name))


@protected.get("/api/ps", summary="List loaded models (Ollama)")
async def ps(request: Request) -> Response:
    return json_response({"models": describe_loaded(engine_of(request))})


@router.get("/api/version", summary="Server version (Ollama)")
async def version() -> Response:
    return json_response({"version": __version__})


@router.api_route("/", methods=["GET", "HEAD"], summary="Liveness banner (Ollama)", include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("Ollama is running")
