"""TEI's request semantics without any web framework, shared by TEI's HTTP routes (api/tei.py, api/rerank.py) and
its gRPC services (api/grpc): the engine's request for an embed call, TEI's checks and their words, the x-compute-*
metadata, and what /info (gRPC: Info) says."""

from __future__ import annotations

import time
from typing import Literal

from .. import __version__
from ..engine.engine import Engine
from ..engine.pipeline import TOKENIZER_THREADS
from ..engine.types import COLBERT, SPARSE, TOKENS, EmbedRequest, EmbedResult
from .error_table import ApiError

MAX_CHAR_MULTIPLIER = 250  # /tokenize refuses texts over this many characters per context token (as TEI)
POOLING_NAMES = {"lasttoken": "last_token"}  # TEI's names where ours differ
NO_SPARSE_HEAD = "Backend error: Model is not an embedding model with SPLADE pooling"


def too_many(n: int, limit: int) -> ApiError:
    return ApiError(422, f"batch size {n} > maximum allowed batch size {limit}", param="inputs")


def check_not_empty(items: list, what: str = "inputs") -> None:
    """TEI's Empty error (HTTP 400, gRPC INVALID_ARGUMENT) for an empty input."""
    if any(len(item) == 0 for item in items):
        raise ApiError(400, f"Input validation error: `{what}` cannot be empty", param=what)


def embed_request(inputs: list, truncate: bool, truncation_direction: Literal["right", "left"],
                  prompt_name: str | None, **options) -> EmbedRequest:
    """The engine's request for the default model: token ids are the model's own whole sequences (TEI's reading)."""
    ids = any(type(x) is list for x in inputs)
    return EmbedRequest(model=None, inputs=inputs, truncate=truncate, truncation_direction=truncation_direction,
                        prompt_name=prompt_name, token_ids=ids, ids_mode="model_full" if ids else None, **options)


async def per_token_head(engine: Engine) -> str:
    """What embed_all gives for the default model: BGE-M3's ColBERT vectors, else the last hidden states."""
    return COLBERT if COLBERT in (await engine.facts(load=True)).outputs else TOKENS


async def check_sparse(engine: Engine) -> None:
    """TEI's Backend error (HTTP 424, gRPC FAILED_PRECONDITION) for a model without a sparse head."""
    if SPARSE not in (await engine.facts(load=True)).outputs:
        raise ApiError(424, NO_SPARSE_HEAD)


async def check_tokenize_length(engine: Engine, texts: list[str]) -> None:
    """TEI's cap on the characters /tokenize takes: the context length times MAX_CHAR_MULTIPLIER."""
    cap = (await engine.facts(load=True)).context_length * MAX_CHAR_MULTIPLIER
    longest = max(len(t) for t in texts)
    if longest > cap:
        raise ApiError(422, f"Input validation error: `inputs` must have less than {cap} characters. "
                            f"Given: {longest}", param="inputs")


def compute_headers(internal: EmbedRequest, result: EmbedResult, started_ns: int) -> dict[str, str]:
    """TEI's x-compute-* headers for a request whose work began at ``started_ns`` (perf_counter_ns)."""
    ms = str((time.perf_counter_ns() - started_ns) // 1_000_000)
    return {"x-compute-time": ms, "x-total-time": ms, "x-compute-tokens": str(result.prompt_tokens),
            "x-compute-characters": str(sum(len(x) for x in internal.inputs))}


async def info_fields(engine: Engine) -> dict:
    """TEI's /info fields for the default model (loaded first, so that they are exact)."""
    facts, settings = await engine.facts(load=True), engine.settings
    return {
        "model_id": facts.name, "model_sha": None, "model_dtype": facts.dtype, "served_model_name": facts.name,
        "model_type": {"embedding": {"pooling": POOLING_NAMES.get(facts.pooling, facts.pooling)}},
        "max_concurrent_requests": settings.max_queued_inputs, "max_input_length": facts.context_length,
        "max_batch_tokens": settings.max_batch_tokens, "max_batch_requests": settings.max_batch_size,
        "max_client_batch_size": settings.max_inputs, "auto_truncate": settings.auto_truncate,
        "tokenization_workers": TOKENIZER_THREADS, "version": __version__, "sha": None, "docker_label": None,
        "outputs": sorted(facts.outputs),  # ours: which heads /embed* can give
    }
