"""JSON responses built once with orjson (numpy arrays serialised natively, no pydantic pass)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response whose body is serialised by orjson in one pass."""
    return Response(orjson.dumps(content, option=_OPTIONS), status_code=status_code,
                    headers=headers, media_type="application/json")


def float32_base64(vector: np.ndarray) -> str:
    """Base64 of the vector's little-endian float32 bytes (what OpenAI clients decode)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
