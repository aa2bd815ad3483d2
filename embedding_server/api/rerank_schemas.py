"""Rerank bodies: the shape Cohere, Jina and vLLM share (``/v1/rerank``, ``/v2/rerank``, ``/rerank`` with
``documents``) and TEI's (``/rerank`` with ``texts``)."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema

from .tei_schemas import Direction, Truncate

_DOCUMENTS = {"type": "array", "items": {"anyOf": [{"type": "string"},
                                                   {"type": "object", "properties": {"text": {"type": "string"}},
                                                    "required": ["text"]}]}}


class RerankBody(BaseModel):
    """Cohere / Jina / vLLM: documents are strings or ``{"text": ...}`` objects."""

    model_config = ConfigDict(extra="ignore")  # e.g. Cohere's max_tokens_per_doc, rank_fields
    model: Optional[StrictStr] = Field(None, description="A reranker served here (optional when only one is).")
    query: StrictStr
    documents: Annotated[Any, WithJsonSchema(_DOCUMENTS)] = Field(description="Texts, or objects with a text.")
    top_n: Optional[StrictInt] = Field(None, ge=1, description="Return only the best N (default: all).")
    return_documents: Optional[StrictBool] = Field(
        None, description="Echo each document's text (default: true on /v1/rerank and /rerank, false on /v2/rerank).")


class RerankDocument(BaseModel):
    text: str


class RerankResultItem(BaseModel):
    index: int
    relevance_score: float
    document: Optional[RerankDocument] = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResultItem]
    usage: RerankUsage
    meta: dict = Field(description="Cohere's meta: api_version and billed_units (one search unit).")


class TeiRerankBody(BaseModel):
    """TEI's POST /rerank."""

    model_config = ConfigDict(extra="ignore")
    query: StrictStr
    texts: Annotated[Any, WithJsonSchema({"type": "array", "items": {"type": "string"}})]
    truncate: Truncate = Field(None, description="Cut over-long pairs to the context (default EMBED_AUTO_TRUNCATE).")
    truncation_direction: Direction = "right"
    raw_scores: StrictBool = Field(False, description="Logits instead of the model's activation (sigmoid).")
    return_text: StrictBool = False


class TeiRank(BaseModel):
    index: int
    score: float
    text: Optional[str] = None


TEI_RERANK_RESPONSE = list[TeiRank]
RERANK_BODY = Union[RerankBody, TeiRerankBody]
