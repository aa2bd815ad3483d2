"""This server's own route for BGE-M3's three outputs: ``POST /api/encode``.

Named like Ollama's ``/api/embed`` (same ``model``, ``input``, ``truncate``, ``dimensions``, token count and
nanosecond timings), with the outputs named as FlagEmbedding's ``BGEM3FlagModel.encode`` computes them:

    {"model": "bge-m3", "input": ["..."], "outputs": ["dense", "sparse", "colbert"],
     "sparse_format": "indices" | "map", "sparse_tokens": false}
    -> {"model", "dense": [[f32]], "sparse": [{"indices": [int], "values": [f32]}] | [{"<token id>": f32}],
        "sparse_tokens": [{"<token>": f32}], "colbert": [[[f32]]], "total_duration", "load_duration",
        "prompt_eval_count"}

Only the outputs asked for are present; all come from one forward pass. ``sparse_format`` "indices" is
Qdrant's ``SparseVector``; "map" is Milvus' sparse row (JSON object keys are strings: ``{int(k): v}`` on the
client). ``sparse_tokens`` adds the same weights by token string (FlagEmbedding's ``convert_id_to_token``).
Errors come in Ollama's shape.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ..engine.types import COLBERT, DENSE, SPARSE, EmbedRequest
from .common import engine_of, note_for_access_log, require_api_key, until_disconnect
from .errors import ApiError
from .responses import json_response
from .schemas import OLLAMA_ERRORS

router = APIRouter(dependencies=[Depends(require_api_key)], responses=OLLAMA_ERRORS)

Output = Literal["dense", "sparse", "colbert"]


class EncodeBody(BaseModel):
    """POST /api/encode: any subset of BGE-M3's dense, sparse and ColBERT outputs, from one pass."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="Model name; the default model when absent.")
    input: str | list[str] = Field(description="A text or a list of texts.")
    outputs: list[Output] = Field(["dense"], min_length=1, description="Which outputs to return.")
    truncate: StrictBool = Field(True, description="Cut over-long inputs to the context (else 400).")
    dimensions: StrictInt | None = Field(None, ge=1, description="Keep the first N dense components (dense only).")
    normalize: StrictBool = Field(True, description="L2-normalise the dense vectors.")
    sparse_format: Literal["indices", "map"] = Field("indices", description="Sparse as {indices, values} or {id: w}.")
    sparse_tokens: StrictBool = Field(False, description="Add the token string of each sparse entry.")


@router.post("/api/encode", summary="Dense, sparse and ColBERT outputs of BGE-M3 (this server's own route)")
async def encode(body: EncodeBody, request: Request) -> Response:
    started = time.perf_counter_ns()
    texts = [body.input] if isinstance(body.input, str) else body.input
    if any(not text for text in texts):
        raise ApiError(400, "inputs must be non-empty strings", param="input")
    outputs = frozenset(body.outputs)
    internal = EmbedRequest(model=body.model, inputs=texts, truncate=body.truncate, dimensions=body.dimensions,
                            normalize=body.normalize, outputs=outputs, sparse_token_strings=body.sparse_tokens)
    engine = engine_of(request)
    result = await until_disconnect(request, engine.embed(internal))
    note_for_access_log(request, internal, result)
    response: dict[str, Any] = {"model": result.model}
    if DENSE in outputs:
        response["dense"] = result.embeddings
    if SPARSE in outputs:
        response["sparse"] = [_sparse(ids, values, body.sparse_format) for ids, values in result.sparse]
        if body.sparse_tokens:
            response["sparse_tokens"] = [dict(zip(strings, values.tolist()))
                                         for strings, (_, values) in zip(result.sparse_strings, result.sparse)]
    if COLBERT in outputs:
        response["colbert"] = result.colbert
    response.update(total_duration=time.perf_counter_ns() - started, load_duration=result.load_ns,
                    prompt_eval_count=result.prompt_tokens)
    return json_response(response)


def _sparse(ids, values, shape: str) -> dict:
    """One input's lexical weights: Qdrant's {indices, values}, or Milvus' {token id: weight}."""
    if shape == "indices":
        return {"indices": ids, "values": values}
    return {str(i): v for i, v in zip(ids.tolist(), values.tolist())}
