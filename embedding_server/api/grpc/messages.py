"""Between tei.v1 messages and our types: TEI's truncation direction, proto3 optional fields, TEI's Metadata."""

from __future__ import annotations

import time

from ...engine.errors import InvalidInput
from . import tei_pb2 as pb

_DIRECTIONS = {pb.TRUNCATION_DIRECTION_RIGHT: "right", pb.TRUNCATION_DIRECTION_LEFT: "left"}


def direction(value: int) -> str:
    if value not in _DIRECTIONS:
        raise InvalidInput(f"unknown truncation_direction {value}", param="truncation_direction")
    return _DIRECTIONS[value]


def optional(message, name: str):
    return getattr(message, name) if message.HasField(name) else None


def metadata(chars: int, tokens: int, started_ns: int, timings: dict[str, int] | None = None
              ) -> tuple[pb.Metadata, dict[str, str]]:
    """TEI's Metadata message and its x-* headers (sent as initial metadata): ``timings`` in ns from the engine
    (tokenization, waiting in the model's queue, from the batch's start to the answer)."""
    total, timings = time.perf_counter_ns() - started_ns, timings or {}
    phases = {name: timings.get(name, 0) for name in ("tokenize", "queue", "inference")}
    ms = str(total // 1_000_000)
    headers = {"x-compute-type": "cpu", "x-compute-time": ms, "x-compute-characters": str(chars),
               "x-compute-tokens": str(tokens), "x-total-time": ms,
               "x-tokenization-time": str(phases["tokenize"] // 1_000_000),
               "x-queue-time": str(phases["queue"] // 1_000_000),
               "x-inference-time": str(phases["inference"] // 1_000_000)}
    return pb.Metadata(compute_chars=chars, compute_tokens=tokens, total_time_ns=total,
                       tokenization_time_ns=phases["tokenize"], queue_time_ns=phases["queue"],
                       inference_time_ns=phases["inference"]), headers
