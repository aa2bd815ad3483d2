"""The small FastAPI embedding services' API: POST /embeddings ``{texts, normalize}`` -> ``{embeddings, count,
total_time_ms}``, with the key in ``X-API-Key`` or ``Authorization: Bearer`` (checked before the body is read, so a
refusal is always ``{"detail"}``: which dialect a body speaks is not known then).

A body with ``input`` on the same path is OpenAI's (clients whose base URL lacks ``/v1``) and is answered
exactly as POST /v1/embeddings, errors included. Otherwise errors are FastAPI's ``{"detail": "message"}``, what
those services' clients read, with status 400 for a bad body (never FastAPI's 422, as on every route here).
The body is read as JSON whatever its content type: ``requests.post(url, data=json.dumps(body))`` sends none.
"""

from __future__ import annotations

import json
import time
from typing import Any, Union

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from ..engine.types import EmbedRequest, EmbedResult
from . import openai
from .common import engine_of, note_for_access_log, require_api_key, until_disconnect
from .errors import ApiError
from .responses import json_response
from .schemas import SIMPLE_ERRORS, OpenAIEmbeddingsResponse, SimpleEmbeddingsResponse

router = APIRouter(responses=SIMPLE_ERRORS)


class TextsBody(BaseModel):
    """The small services' request: texts, and whether to L2-normalise (false: the pooled vectors)."""

    model_config = ConfigDict(extra="ignore")
    texts: list[str] = Field(json_schema_extra={"minItems": 1})
    normalize: StrictBool = True
    model: str | None = Field(None, description="The model; the default model when left out.")


_BODY_SCHEMA = {"anyOf": [TextsBody.model_json_schema(), openai.EmbeddingsBody.model_json_schema()]}
_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}}


@router.post("/embeddings", summary="Embed texts (small FastAPI services; OpenAI's body too)",
             response_model=Union[SimpleEmbeddingsResponse, OpenAIEmbeddingsResponse], openapi_extra=_BODY_DOC,
             dependencies=[Depends(require_api_key)])
async def embeddings(request: Request) -> Response:
    started = time.perf_counter_ns()
    body = _json(await request.body())
    if isinstance(body, dict) and "input" in body:
        request.state.dialect = "openai"  # errors from here on in OpenAI's shape
        return await openai.answer(_validate(openai.EmbeddingsBody, body), request)
    internal = texts_request(_validate(TextsBody, body))
    result = await until_disconnect(request, engine_of(request).embed(internal))
    note_for_access_log(request, internal, result)
    return json_response(texts_answer(result, started))


def texts_request(texts: TextsBody) -> EmbedRequest:
    """The engine's request for a ``{texts, normalize}`` body."""
    if not texts.texts:
        raise ApiError(400, '"texts" must not be empty: send at least one text', param="texts")
    return EmbedRequest(model=texts.model, inputs=texts.texts, normalize=texts.normalize)


def texts_answer(result: EmbedResult, started_ns: int) -> dict[str, Any]:
    """The answer to a ``{texts}`` body whose request arrived at ``started_ns`` (perf_counter_ns)."""
    return {"embeddings": result.embeddings, "count": len(result.embeddings),
            "total_time_ms": round((time.perf_counter_ns() - started_ns) / 1e6, 3)}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, nesting too deep
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}]) \
            from None


def _validate(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
