"""Response shapes for the OpenAPI document only (routes return orjson Responses, never validated).

Declaring them lets the spec say what the server really answers, errors included: each dialect's error
shape under "4XX"/"5XX" (which also stops FastAPI from advertising a 422 the server never sends).
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, Field


class OllamaError(BaseModel):
    error: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


OLLAMA_ERRORS = {"4XX": {"model": OllamaError, "description": "Client error (Ollama shape)"},
                 "5XX": {"model": OllamaError, "description": "Server error or busy (Ollama shape)"}}
OPENAI_ERRORS = {"4XX": {"model": OpenAIError, "description": "Client error or busy (OpenAI shape)"},
                 "5XX": {"model": OpenAIError, "description": "Server error (OpenAI shape)"}}


class SimpleError(BaseModel):
    detail: str


# POST /embeddings: FastAPI's detail shape, or OpenAI's for an OpenAI body (simple.py).
SIMPLE_ERRORS = {"4XX": {"model": Union[SimpleError, OpenAIError], "description": "Client error (detail or OpenAI)"},
                 "5XX": {"model": Union[SimpleError, OpenAIError], "description": "Server error (detail or OpenAI)"}}


class SimpleEmbeddingsResponse(BaseModel):
    embeddings: list[list[float]]
    count: int
    total_time_ms: float


class OllamaEmbedResponse(BaseModel):
    model: str
    embeddings: Union[list[list[float]], list[str]]  # list[str]: encoding_format "base64"
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class OllamaEmbeddingsResponse(BaseModel):
    embedding: list[float]


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str]


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["embedding", "reranker"] = Field("embedding", description="Ours: what the model serves.")


class OpenAIModelList(BaseModel):
    object: Literal["list"]
    data: list[OpenAIModel]


class Status(BaseModel):
    status: str


NOT_READY = {503: {"model": Status, "description": "Not (yet) healthy or ready"}}
