"""Reranking with a cross-encoder: ``POST /v1/rerank`` and ``/v2/rerank`` (the shape Cohere, Jina and vLLM share;
OpenAI-shaped errors) and ``POST /rerank``, which is TEI's route (``{query, texts}``, TEI's errors) unless the body
has ``documents`` (then as ``/v1/rerank``). Each builds the engine's ``RerankRequest``; results come back sorted
by score, highest first."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Union

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from ..engine.types import RerankRequest, RerankResult
from .common import engine_of, require_api_key, until_disconnect
from .errors import ApiError
from .responses import json_response
from .rerank_schemas import TEI_RERANK_RESPONSE, RerankBody, RerankResponse, TeiRerankBody
from .schemas import OPENAI_ERRORS, OpenAIError
from .shared import best_first as _best_first
from .tei import validated
from .tei_schemas import TeiError

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["Rerank"])
_EITHER_BODY = {"anyOf": [TeiRerankBody.model_json_schema(), RerankBody.model_json_schema()]}
_EITHER_ERROR = {status: {"model": Union[TeiError, OpenAIError], "description": "TEI's shape; OpenAI's for a body "
                          "with documents"} for status in ("4XX", "5XX")}


async def _rerank(request: Request, internal: RerankRequest) -> RerankResult:
    result = await until_disconnect(request, engine_of(request).rerank(internal))
    request.state.embed_log = {"model": result.model, "inputs": len(internal.documents),
                               "tokens": result.prompt_tokens, "texts": [internal.query, *internal.documents]}
    return result


async def _documents_shape(body: RerankBody, request: Request, version: str) -> Response:
    """Cohere / Jina / vLLM: ``{id, model, results: [{index, relevance_score, document?}], usage, meta}``."""
    docs = body.documents
    if type(docs) is not list or not all(type(d) is str or (type(d) is dict and type(d.get("text")) is str)
                                         for d in docs):
        raise ApiError(400, "'documents' must be an array of strings or of objects with a 'text' string",
                       param="documents")
    if not docs:
        raise ApiError(400, "'documents' must not be empty", param="documents")
    texts = [d if type(d) is str else d["text"] for d in docs]
    result = await _rerank(request, RerankRequest(model=body.model, query=body.query, documents=texts))
    echo = (version != "2") if body.return_documents is None else body.return_documents
    results = [{"index": i, "relevance_score": float(result.scores[i]), **({"document": {"text": texts[i]}} if echo
                                                                            else {})}
               for i in _best_first(result.scores, body.top_n)]
    tokens = result.prompt_tokens
    return json_response({"id": str(uuid.uuid4()), "model": result.model, "results": results,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                          "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}})


async def _tei_shape(body: TeiRerankBody, request: Request) -> Response:
    """TEI: ``[{index, score, text?}]``."""
    texts = body.texts
    if type(texts) is not list or not all(type(t) is str for t in texts):
        raise ApiError(422, "Failed to deserialize the JSON body into the target type: texts: expected an array "
                            "of strings", param="texts")
    if not texts:
        raise ApiError(400, "`texts` cannot be empty", param="texts")
    truncate = engine_of(request).settings.auto_truncate if body.truncate is None else body.truncate
    result = await _rerank(request, RerankRequest(None, body.query, texts, truncate, body.truncation_direction,
                                                  body.raw_scores))
    return json_response([{"index": i, "score": float(result.scores[i]), **({"text": texts[i]} if body.return_text
                                                                             else {})}
                          for i in _best_first(result.scores)])


@router.post("/v1/rerank", summary="Rerank documents (Cohere / Jina / vLLM shape)", response_model=RerankResponse,
             responses=OPENAI_ERRORS)
async def rerank_v1(body: RerankBody, request: Request) -> Response:
    return await _documents_shape(body, request, "1")


@router.post("/v2/rerank", summary="Rerank documents (Cohere's v2 client)", response_model=RerankResponse,
             responses=OPENAI_ERRORS)
async def rerank_v2(body: RerankBody, request: Request) -> Response:
    return await _documents_shape(body, request, "2")


@router.post("/rerank", summary="Rerank (TEI's body; a body with 'documents' is answered as /v1/rerank)",
             response_model=Union[TEI_RERANK_RESPONSE, RerankResponse], responses=_EITHER_ERROR)
async def rerank(request: Request, body: Annotated[Any, Body(), WithJsonSchema(_EITHER_BODY)]) -> Response:
    if isinstance(body, dict) and "documents" in body and "texts" not in body:
        request.state.dialect = "openai"
        return await _documents_shape(validated(RerankBody, body), request, "1")
    return await _tei_shape(validated(TeiRerankBody, body), request)
