"""TEI's request bodies (field names and defaults as TEI's router) and, for the OpenAPI document only, its
response and error shapes. ``inputs``, ``sentences`` and ``ids`` are validated by hand in ``tei.py``: pydantic
validating a multi-megabyte array element by element (a union per element) is what must not happen."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema

_ID = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_IDS = {"type": "array", "items": _ID}
_TEXTS = {"type": "array", "items": {"type": "string"}}
EMBED_INPUTS = {"anyOf": [{"type": "string"}, _IDS, {"type": "array", "items": {"anyOf": [{"type": "string"}, _IDS]}}],
                "description": "A text, token ids (the model's own, special tokens included), or a batch of both."}
TOKENIZE_INPUTS = {"anyOf": [{"type": "string"}, _TEXTS], "description": "A text or a batch of texts."}
DECODE_IDS = {"anyOf": [_IDS, {"type": "array", "items": _IDS}], "description": "Token ids or a batch of them."}


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# TEI accepts "Left"/"left"/"Right"/"right"; clients send both casings (any casing is taken here).
Direction = Annotated[Literal["left", "right"], BeforeValidator(_lower),
                      WithJsonSchema({"type": "string", "enum": ["Left", "Right", "left", "right"], "default": "Right"})]
Truncate = Optional[StrictBool]
PromptName = Optional[StrictStr]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # TEI ignores fields it does not know (e.g. encoding_format)


class EmbedAllBody(_Body):
    """POST /embed_all and /embed_sparse."""

    inputs: Annotated[Any, WithJsonSchema(EMBED_INPUTS)]
    truncate: Truncate = Field(None, description="Cut over-long inputs to the context (default EMBED_AUTO_TRUNCATE).")
    truncation_direction: Direction = "right"
    prompt_name: PromptName = Field(None, description="A prompt of the model's config_sentence_transformers.json.")


class EmbedBody(EmbedAllBody):
    """POST /embed (and POST / unless the body is a similarity request)."""

    normalize: StrictBool = Field(True, description="L2-normalise the pooled vectors.")
    dimensions: Optional[StrictInt] = Field(None, description="Keep the first N components (before normalising).")


class SimilarityInputs(BaseModel):
    source_sentence: StrictStr
    sentences: Annotated[Any, WithJsonSchema(_TEXTS)]


class SimilarityParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    truncate: Truncate = None
    truncation_direction: Direction = "right"
    prompt_name: PromptName = None


class SimilarityBody(_Body):
    """POST /similarity (and POST / with ``inputs`` an object)."""

    inputs: SimilarityInputs
    parameters: Optional[SimilarityParameters] = None


class TokenizeBody(_Body):
    inputs: Annotated[Any, WithJsonSchema(TOKENIZE_INPUTS)]
    add_special_tokens: StrictBool = True
    prompt_name: PromptName = None


class DecodeBody(_Body):
    ids: Annotated[Any, WithJsonSchema(DECODE_IDS)]
    skip_special_tokens: StrictBool = True


# ----- responses, for the OpenAPI document ----------------------------------------------------------------------
class TeiError(BaseModel):
    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


TEI_ERRORS = {"4XX": {"model": TeiError, "description": "Client error, busy, or no such head (TEI shape)"},
              "5XX": {"model": TeiError, "description": "Server error or unhealthy (TEI shape)"}}


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: Optional[int] = Field(description="UTF-8 byte offset in the (prompted) text; null for special tokens")
    stop: Optional[int]


class SparseValue(BaseModel):
    index: int
    value: float


class EmbeddingModel(BaseModel):
    pooling: str


class ModelType(BaseModel):
    embedding: EmbeddingModel


class Info(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_id: str
    model_sha: Optional[str]
    model_dtype: str
    served_model_name: str
    model_type: ModelType
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: Optional[int]
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: Optional[str]
    docker_label: Optional[str]
    outputs: list[str] = Field(description="Ours: the heads /embed* can give for the default model.")
    models: list[dict] = Field(description="Ours: every model served, {model_id, kind: embedding | reranker}.")


EMBED_RESPONSE = list[list[float]]
EMBED_ALL_RESPONSE = list[list[list[float]]]
SPARSE_RESPONSE = list[list[SparseValue]]
TOKENIZE_RESPONSE = list[list[SimpleToken]]
