"""OpenAI's API: POST /v1/embeddings, GET /v1/models, GET /v1/models/{id}."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, WithJsonSchema

from ..engine.errors import ModelUnavailable
from ..engine.types import EmbedRequest, EmbedResult
from .common import engine_of, note_for_access_log, require_api_key, until_disconnect
from .errors import ApiError
from .models_info import openai_models
from .responses import float32_base64, json_response
from .schemas import OPENAI_ERRORS, OpenAIEmbeddingsResponse, OpenAIModel, OpenAIModelList

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=OPENAI_ERRORS)

OpenAIInput = Union[str, list[str], list[int], list[list[int]]]
# Documented as OpenAI's union, but validated by hand (``to_request``): pydantic's union validation of a
# multi-megabyte array builds an error per element per branch (gigabytes for one 16 MB body).
_INPUT_SCHEMA = TypeAdapter(OpenAIInput).json_schema()
_INVALID_INPUT = ("'$.input' is invalid: expected a string, an array of strings, an array of integers "
                  "or an array of integer arrays")


class EmbeddingsBody(BaseModel):
    """POST /v1/embeddings, as in OpenAI's API reference."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: Annotated[Any, WithJsonSchema(_INPUT_SCHEMA)] = Field(
        description="Text, texts, or token-id arrays (cl100k_base ids by default).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: str | None = None


def _is_ids(value: Any) -> bool:
    return type(value) is list and all(type(i) is int for i in value)  # bool is not an id


def to_request(body: EmbeddingsBody, max_inputs: int, max_tokens: int) -> EmbedRequest:
    """Translate the OpenAI body into the engine's request (all the validation OpenAI does)."""
    raw = body.input
    if type(raw) is str:
        raw = [raw]
    if type(raw) is not list:
        raise ApiError(400, _INVALID_INPUT, param="input")
    if not raw:
        raise ApiError(400, "'$.input' is invalid: the input list must not be empty", param="input")
    if type(raw[0]) is not int and len(raw) > max_inputs:  # before looking at millions of items
        raise ApiError(400, f"too many inputs: {len(raw)}, limit max_inputs={max_inputs}", param="input",
                       code="limit_exceeded")
    if all(type(x) is str for x in raw):
        if any(s == "" for s in raw):
            raise ApiError(400, "'$.input' is invalid: inputs must be non-empty strings", param="input")
        return EmbedRequest(model=body.model, inputs=raw, dimensions=body.dimensions)
    if _is_ids(raw):
        raw = [raw]  # one token array
    elif not all(_is_ids(x) for x in raw):
        raise ApiError(400, _INVALID_INPUT, param="input")
    if any(len(ids) == 0 for ids in raw):
        raise ApiError(400, "'$.input' is invalid: token arrays must not be empty", param="input")
    total = sum(len(ids) for ids in raw)
    if total > max_tokens:
        raise ApiError(400, f"too many tokens: {total}, limit max_request_tokens={max_tokens}", param="input",
                       code="limit_exceeded")
    return EmbedRequest(model=body.model, inputs=raw, dimensions=body.dimensions, token_ids=True)


@router.post("/embeddings", summary="Create embeddings (OpenAI)", response_model=OpenAIEmbeddingsResponse)
async def create_embeddings(body: EmbeddingsBody, request: Request) -> Response:
    return await answer(body, request)


async def answer(body: EmbeddingsBody, request: Request) -> Response:
    """The OpenAI answer to ``body`` (also for OpenAI bodies sent to /embeddings, see simple.py)."""
    settings = engine_of(request).settings
    internal = to_request(body, settings.max_inputs, settings.max_request_tokens)
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return json_response(embeddings_answer(body, result))


def embeddings_answer(body: EmbeddingsBody, result: EmbedResult) -> dict[str, Any]:
    """/v1/embeddings' answer to ``body``."""
    vectors = result.embeddings
    if body.encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": float32_base64(v)} for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"object": "list", "data": data, "model": body.model, "usage": usage}


@router.get("/models", summary="List models (OpenAI)", response_model=OpenAIModelList)
async def list_models(request: Request) -> Response:
    return json_response({"object": "list", "data": await openai_models(engine_of(request))})


@router.get("/models/{model_id:path}", summary="Retrieve a model (OpenAI)", response_model=OpenAIModel)
async def retrieve_model(model_id: str, request: Request) -> Response:
    for item in await openai_models(engine_of(request)):
        if item["id"] == model_id:
            return json_response(item)
    entry = engine_of(request).registry.resolve(model_id)  # raises ModelNotFound for unknown names
    if entry.error:  # left out of /v1/models: not described as if it worked either
        raise ModelUnavailable(f"model '{entry.name}' cannot be loaded; the server log says why")
    return json_response({"id": model_id, "object": "model", "created": 0, "owned_by": "embedding-server"})
