"""Ollama's API: /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps, /api/version, /."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .. import __version__
from ..durations import keep_alive_seconds
from ..engine.types import EmbedRequest, EmbedResult
from .common import engine_of, note_for_access_log, require_api_key, until_disconnect
from .errors import ApiError
from .go_json import ANY, BOOL, DURATION, INT, MAP, STRING, GoStruct, decode
from .models_info import describe_all, describe_loaded, describe_one
from .responses import float32_base64, json_response
from .schemas import OLLAMA_ERRORS, OllamaEmbeddingsResponse, OllamaEmbedResponse

router = APIRouter(responses=OLLAMA_ERRORS)
protected = APIRouter(dependencies=[Depends(require_api_key)], responses=OLLAMA_ERRORS)


# Ollama's structs (api/types.go), read with Go's type rules (go_json.py). encoding_format is this server's
# addition to EmbedRequest, for clients of the single-model services that took it.
EMBED_REQUEST = GoStruct("EmbedRequest", {"model": STRING, "input": ANY, "keep_alive": DURATION, "truncate": BOOL,
                                          "dimensions": INT, "options": MAP, "encoding_format": STRING})
EMBEDDING_REQUEST = GoStruct("EmbeddingRequest", {"model": STRING, "prompt": STRING, "keep_alive": DURATION,
                                                  "options": MAP})


class EmbedBody(BaseModel):
    """POST /api/embed (documentation: the body is read by ``go_json.decode``). Unknown keys are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, description="The model; the default model when left out.")
    input: Union[str, list[str], None] = Field(None, description="A string or a list of strings.")
    truncate: bool | None = Field(True, description="Cut inputs to the context length (false: refuse them).")
    dimensions: int | None = Field(None, description="Keep the first components, renormalised.")
    options: dict[str, Any] | None = Field(None, description="Accepted and ignored.")
    keep_alive: Union[float, str, None] = Field(None, description="How long the model stays loaded after this "
                                                "request: seconds, a duration (\"5m\"), 0 (unload), negative (for ever).")
    encoding_format: Literal["float", "base64"] | None = Field(
        "float", description="base64: each embedding as base64 of its little-endian float32 values.")


class EmbeddingsBody(BaseModel):
    """POST /api/embeddings (legacy; documentation, read by ``go_json.decode``): one prompt, one vector."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | None = None
    options: dict[str, Any] | None = None
    keep_alive: Union[float, str, None] = None


def _body_of(doc: type[BaseModel]) -> Any:
    """A request body FastAPI hands over as parsed JSON, documented by ``doc``."""
    return Annotated[Any, Body(), WithJsonSchema(doc.model_json_schema())]


EmbedJson, EmbeddingsJson = _body_of(EmbedBody), _body_of(EmbeddingsBody)


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


def _encoding(value: str | None) -> str:
    if value in (None, "float", "base64"):
        return value or "float"
    raise ApiError(400, f'invalid encoding_format "{value}": expected "float" or "base64"', param="encoding_format")


def embed_request(fields: dict[str, Any]) -> tuple[EmbedRequest, str]:
    """The engine's request for /api/embed's decoded ``fields``, and the encoding its vectors are sent in."""
    encoding = _encoding(fields.get("encoding_format"))
    internal = EmbedRequest(
        model=fields.get("model") or None,  # left out: the default model (Ollama clients always name one)
        inputs=_inputs(fields.get("input")),
        truncate=fields.get("truncate") is not False,
        dimensions=fields.get("dimensions") or None,
        keep_alive=keep_alive_seconds(fields.get("keep_alive")),
    )
    return internal, encoding


def embed_answer(internal: EmbedRequest, result: EmbedResult, encoding: str, started_ns: int) -> dict[str, Any]:
    """/api/embed's answer (``started_ns``: perf_counter_ns when the request arrived)."""
    vectors = result.embeddings
    return {
        "model": internal.model or result.model,
        "embeddings": [float32_base64(v) for v in vectors] if encoding == "base64" else vectors,
        "total_duration": time.perf_counter_ns() - started_ns,
        "load_duration": result.load_ns,
        "prompt_eval_count": result.prompt_tokens,
    }


@protected.post("/api/embed", summary="Embed one or more texts (Ollama)", response_model=OllamaEmbedResponse)
async def embed(request: Request, body: EmbedJson = None) -> Response:
    started = time.perf_counter_ns()
    internal, encoding = embed_request(decode(body, EMBED_REQUEST, await request.body()))
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return json_response(embed_answer(internal, result, encoding, started))


@protected.post("/api/embeddings", summary="Embed one prompt (legacy Ollama)",
                response_model=OllamaEmbeddingsResponse)
async def embeddings(request: Request, body: EmbeddingsJson = None) -> Response:
    fields = decode(body, EMBEDDING_REQUEST, await request.body())
    prompt = fields.get("prompt")
    internal = EmbedRequest(model=_model_name(fields.get("model")), inputs=[prompt] if prompt else [],
                            keep_alive=keep_alive_seconds(fields.get("keep_alive")))
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return json_response({"embedding": result.embeddings[0] if len(result.embeddings) else []})


@protected.get("/api/tags", summary="List served models (Ollama)")
async def tags(request: Request) -> Response:
    engine_of(request).registry.rescan()  # a folder copied in since (at most once a second)
    return json_response({"models": await describe_all(engine_of(request))})


@protected.post("/api/show", summary="Show a model's details (Ollama)")
async def show(body: ShowBody, request: Request) -> Response:
    name = _model_name(body.model or body.name)
    return json_response(await describe_one(engine_of(request), name))


@protected.get("/api/ps", summary="List loaded models (Ollama)")
async def ps(request: Request) -> Response:
    return json_response({"models": await describe_loaded(engine_of(request))})


@router.get("/api/version", summary="Server version (Ollama)")
async def version() -> Response:
    return json_response({"version": __version__})


@router.api_route("/", methods=["GET", "HEAD"], summary="Liveness banner (Ollama)", include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("Ollama is running")
