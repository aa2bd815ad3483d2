"""Ollama's request bodies read as Go's encoding/json reads them into Ollama's structs (api/types.go).

A value of the wrong JSON type is a 400 with Go's message, e.g. ``json: cannot unmarshal string into Go
struct field EmbedRequest.truncate of type bool``; null leaves a field unset; unknown keys are ignored;
keys match field names exactly or else case-insensitively. Go reports the first such type error in the
document, unless ``keep_alive`` (a type with its own decoder) fails first-hand.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from ..durations import duration_error
from .errors import ApiError

STRING, BOOL, INT, ANY = "string", "bool", "int", "interface {}"
MAP = "map[string]interface {}"
DURATION = "*api.Duration"  # keep_alive: a number of seconds or a Go duration string ("5m", "1h30m", "-1s")


@dataclass(frozen=True)
class GoStruct:
    name: str                 # e.g. "EmbedRequest" (package api)
    fields: dict[str, str]    # JSON name -> Go type


_KINDS = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}
_INT64 = range(-(1 << 63), 1 << 63)


def decode(body: Any, struct: GoStruct, raw: bytes) -> dict[str, Any]:
    """The fields ``body`` (the parsed JSON of ``raw``) sets in ``struct``; ApiError(400) as Ollama answers."""
    if body is None:
        if not raw:
            raise ApiError(400, "missing request body")  # Ollama's handlers, on io.EOF
        return {}  # JSON null into a struct: nothing set
    if type(body) is not dict:
        raise ApiError(400, f"json: cannot unmarshal {_KINDS[type(body)]} into Go value of type api.{struct.name}")
    folded = {_fold(name): name for name in struct.fields}
    out: dict[str, Any] = {}
    first_error: str | None = None
    for key, value in body.items():
        name = key if key in struct.fields else folded.get(_fold(key))
        if name is None or value is None:
            continue
        error = _check(struct.fields[name], value, lambda: _number_text(raw, key, value))
        if error is None:
            out[name] = value
        elif struct.fields[name] == DURATION:
            raise ApiError(400, error)  # returned by its UnmarshalJSON: decoding stops there
        elif first_error is None:
            first_error = f"json: cannot unmarshal {error} into Go struct field {struct.name}.{name} of type " \
                          f"{struct.fields[name]}"
    if first_error is not None:
        raise ApiError(400, first_error)
    return out


def _check(go_type: str, value: Any, number_text) -> str | None:
    """None if ``value`` fits ``go_type``; else what Go calls the value (or, for keep_alive, its whole error)."""
    kind = _KINDS[type(value)]
    if go_type == DURATION:
        if kind == "number":
            if value in (float("inf"), float("-inf")):
                return f"json: cannot unmarshal number {number_text()} into Go value of type float64"
            return None
        if kind == "string":
            return duration_error(value)
        return "Unsupported type: '{}'".format({"bool": "bool", "array": "[]interface {}"}.get(kind, MAP))
    if go_type == INT:
        if type(value) is int and value in _INT64:
            return None
        return f"number {number_text()}" if kind == "number" else kind
    expected = {STRING: "string", BOOL: "bool", MAP: "object"}.get(go_type)
    return None if expected is None or kind == expected else kind


def _number_text(raw: bytes, key: str, value: Any) -> str:
    """The number as written in the body (Go quotes the literal: "1.50", "1e400")."""
    if type(value) is int:
        return str(value)
    try:
        return str(json.loads(raw, parse_float=str, parse_constant=str)[key])
    except Exception:  # noqa: BLE001 - a best-effort rendering of the message only
        return repr(value)


@functools.lru_cache(maxsize=1024)  # struct field names, folded on every request
def _fold(name: str) -> str:
    """Go's case folding of keys (simple per-character mappings: "ſ" folds to "s", "K" to "k")."""
    out = []
    for ch in name:
        up = ch.upper() if len(ch.upper()) == 1 else ch
        low = up.lower()
        out.append(low if len(low) == 1 else up)
    return "".join(out)
