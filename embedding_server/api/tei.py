"""Hugging Face TEI's API (text-embeddings-inference): /embed, /embed_all, /embed_sparse, /similarity, /tokenize,
/decode, /info, and POST / (similarity when ``inputs`` is an object, else embed: huggingface_hub's InferenceClient
posts every task to the bare URL). TEI's requests name no model: every route serves the default one. Errors come
in TEI's shape and statuses (api/errors.py); messages the router itself writes are TEI's words."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from ..engine.types import COLBERT, SPARSE, EmbedRequest, EmbedResult
from ..settings import Settings
from .common import engine_of, note_for_access_log, require_api_key, until_disconnect
from .errors import ApiError
from .models_info import kinds
from .responses import json_response
from .tei_schemas import (EMBED_ALL_RESPONSE, EMBED_RESPONSE, SPARSE_RESPONSE, TEI_ERRORS, TOKENIZE_RESPONSE,
                          DecodeBody, EmbedAllBody, EmbedBody, Info, SimilarityBody, SimilarityParameters,
                          TokenizeBody)

from .tei_requests import (MAX_CHAR_MULTIPLIER, check_not_empty, check_sparse, check_tokenize_length,  # noqa: F401
                           compute_headers, embed_request as tei_embed_request, info_fields, per_token_head, too_many)

router = APIRouter(dependencies=[Depends(require_api_key)], responses=TEI_ERRORS, tags=["TEI"])
_too_many, _check_not_empty = too_many, check_not_empty


def _invalid(field: str, expected: str) -> ApiError:
    return ApiError(422, f"Failed to deserialize the JSON body into the target type: {field}: expected {expected}",
                    param=field)


def _is_ids(value: Any) -> bool:
    return type(value) is list and all(type(i) is int for i in value)  # bool is not an id


def _in_u32(ids: list) -> bool:
    return all(0 <= i < 2**32 for i in ids)


def _embed_inputs(raw: Any, limit: int) -> list:
    """TEI's ``inputs``: a text, token ids (u32), or a batch of texts and token-id lists (checked without pydantic;
    a failure here is TEI's deserialisation error, so it comes before any check of what the model can do)."""
    expected = "a string, token ids (0 to 4294967295), or an array of strings and token-id arrays"
    if type(raw) is str or _is_ids(raw):
        batch = [raw]
    elif type(raw) is not list:
        raise _invalid("inputs", expected)
    elif len(raw) > limit:  # before looking at a million items
        raise _too_many(len(raw), limit)
    elif not all(type(x) is str or _is_ids(x) for x in raw):
        raise _invalid("inputs", expected)
    else:
        batch = raw
    if not all(type(x) is str or _in_u32(x) for x in batch):
        raise _invalid("inputs", expected)
    return batch


def _internal(body: EmbedAllBody | SimilarityParameters, settings: Settings, inputs: list, **options) -> EmbedRequest:
    """The engine's request for the default model: token ids are the model's own whole sequences (TEI's reading),
    ``truncate`` defaults to EMBED_AUTO_TRUNCATE."""
    truncate = settings.auto_truncate if body.truncate is None else body.truncate
    return tei_embed_request(inputs, truncate, body.truncation_direction, body.prompt_name, **options)


async def _run(request: Request, internal: EmbedRequest) -> tuple[EmbedResult, dict[str, str]]:
    """Embed, note it for the access log, and TEI's x-compute-* headers."""
    started = time.perf_counter_ns()
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return result, compute_headers(internal, result, started)


def embed_request(body: EmbedBody, settings: Settings) -> EmbedRequest:
    """The engine's request for POST /embed's ``body``."""
    inputs = _embed_inputs(body.inputs, settings.max_inputs)
    _check_not_empty(inputs)
    return _internal(body, settings, inputs, normalize=body.normalize, dimensions=body.dimensions)


@router.post("/embed", summary="Pooled embeddings (TEI)", response_model=EMBED_RESPONSE)
async def embed(body: EmbedBody, request: Request) -> Response:
    result, headers = await _run(request, embed_request(body, engine_of(request).settings))
    return json_response(result.embeddings, headers=headers)


@router.post("/embed_all", summary="Per-token vectors (TEI): BGE-M3's ColBERT vectors, else last hidden states",
             response_model=EMBED_ALL_RESPONSE)
async def embed_all(body: EmbedAllBody, request: Request) -> Response:
    engine = engine_of(request)
    inputs = _embed_inputs(body.inputs, engine.settings.max_inputs)
    _check_not_empty(inputs)
    head = await per_token_head(engine)
    result, headers = await _run(request, _internal(body, engine_of(request).settings, inputs,
                                                    outputs=frozenset({head})))
    return json_response(result.colbert if head == COLBERT else result.token_states, headers=headers)


@router.post("/embed_sparse", summary="Sparse embeddings (TEI): models with a sparse head",
             response_model=SPARSE_RESPONSE)
async def embed_sparse(body: EmbedAllBody, request: Request) -> Response:
    engine = engine_of(request)
    inputs = _embed_inputs(body.inputs, engine.settings.max_inputs)
    await check_sparse(engine)  # TEI's answer for a model without SPLADE pooling
    _check_not_empty(inputs)
    result, headers = await _run(request, _internal(body, engine_of(request).settings, inputs, outputs=frozenset({SPARSE})))
    sparse = [[{"index": i, "value": w} for i, w in zip(ids.tolist(), weights.tolist())]
              for ids, weights in result.sparse]
    return json_response(sparse, headers=headers)


@router.post("/similarity", summary="Cosine similarity of sentences to a source sentence (TEI)",
             response_model=list[float])
async def similarity(body: SimilarityBody, request: Request) -> Response:
    sentences, limit = body.inputs.sentences, engine_of(request).settings.max_inputs
    if type(sentences) is not list:
        raise _invalid("inputs.sentences", "an array of strings")
    if not sentences:
        raise ApiError(400, "`inputs.sentences` cannot be empty", param="inputs.sentences")
    if len(sentences) + 1 > limit:  # the source sentence counts
        raise _too_many(len(sentences) + 1, limit)
    if not all(type(s) is str for s in sentences):
        raise _invalid("inputs.sentences", "an array of strings")
    texts = [body.inputs.source_sentence, *sentences]
    _check_not_empty(texts)
    result, headers = await _run(request, _internal(body.parameters or SimilarityParameters(), engine_of(request).settings, texts))
    vectors = result.embeddings  # L2-normalised: their dot products are the cosines
    return json_response(vectors[1:] @ vectors[0], headers=headers)


@router.post("/tokenize", summary="Tokens of texts with their byte spans (TEI)", response_model=TOKENIZE_RESPONSE)
async def tokenize(body: TokenizeBody, request: Request) -> Response:
    engine, raw = engine_of(request), body.inputs
    if type(raw) is str:
        texts = [raw]
    elif type(raw) is list:
        if not raw:
            raise ApiError(400, "`inputs` cannot be empty", param="inputs")
        if len(raw) > engine.settings.max_inputs:
            raise _too_many(len(raw), engine.settings.max_inputs)
        if not all(type(t) is str for t in raw):
            raise _invalid("inputs", "a string or an array of strings")
        texts = raw
    else:
        raise _invalid("inputs", "a string or an array of strings")
    _check_not_empty(texts)
    await check_tokenize_length(engine, texts)
    tokens = await until_disconnect(request, engine.tokens(texts, body.add_special_tokens, body.prompt_name))
    total, limit = sum(map(len, tokens)), engine.settings.max_request_tokens
    if total > limit:  # the answer would be ~60 bytes of JSON per token
        raise ApiError(422, f"too many tokens: {total}, limit max_request_tokens={limit}", param="inputs")
    return json_response(tokens)


@router.post("/decode", summary="Text of token ids (TEI)", response_model=list[str])
async def decode(body: DecodeBody, request: Request) -> Response:
    engine, raw = engine_of(request), body.ids
    if _is_ids(raw):
        batch = [raw]
    elif type(raw) is list:
        if len(raw) > engine.settings.max_inputs:
            raise _too_many(len(raw), engine.settings.max_inputs)
        if not all(_is_ids(x) for x in raw):
            raise _invalid("ids", "token ids or an array of token-id arrays")
        batch = raw
    else:
        raise _invalid("ids", "token ids or an array of token-id arrays")
    if not all(_in_u32(ids) for ids in batch):
        raise _invalid("ids", "token ids between 0 and 4294967295")
    _check_not_empty(batch, "input_ids")
    return json_response(await until_disconnect(request, engine.decode(batch, body.skip_special_tokens)))


@router.get("/info", summary="The served model and the server's limits (TEI)", response_model=Info)
async def info(request: Request) -> Response:
    engine = engine_of(request)
    return json_response({
        **await info_fields(engine),
        "models": await kinds(engine),  # ours: every model served, embedding or reranker (/rerank serves rerankers)
    })


@router.post("/", summary="Embed, or similarity when inputs is an object (TEI's root route)", include_in_schema=False)
async def root(request: Request, body: Any = Body(None)) -> Response:
    if isinstance(body, dict) and isinstance(body.get("inputs"), dict):
        return await similarity(validated(SimilarityBody, body), request)
    return await embed(validated(EmbedBody, body), request)


def validated(model: type[BaseModel], body: Any):
    """``body`` as ``model``; a failure is the same validation error FastAPI raises for the routes."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
