"""Helpers the HTTP dialects (api/common.py) and the gRPC one (api/grpc) share, without any web framework."""

from __future__ import annotations

import hmac
from typing import Any, Mapping

import numpy as np

from ..engine.types import EmbedRequest, EmbedResult

API_KEY_MESSAGE = "invalid or missing API key (send Authorization: Bearer <key> or X-API-Key: <key>)"


def access_note(internal: EmbedRequest, result: EmbedResult) -> dict[str, Any]:
    """What the access-log line says about an embedding request (texts only shown if configured), and the
    engine's timeline of it for tracing (never in the line)."""
    return {"model": result.model, "inputs": len(internal.inputs), "tokens": result.prompt_tokens,
            "texts": internal.inputs, "timeline": result.timeline}


def key_accepted(headers: Mapping[str, str], keys: list[str]) -> bool:
    """Whether ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` carries one of ``keys``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    bearer = token.strip().encode() if scheme.lower() == "bearer" else b""
    x_api_key = headers.get("x-api-key", "").strip().encode()
    # Compare both against every key, in constant time per key, without an early exit.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(bearer, key.encode())
        matched |= hmac.compare_digest(x_api_key, key.encode())
    return matched


def best_first(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices of ``scores`` from the highest, ties in their order (how every rerank answer is sorted)."""
    return [int(i) for i in np.argsort(-scores, kind="stable")[:top_n]]
