"""Ollama's ``keep_alive`` values (and ``EMBED_KEEP_ALIVE``) in seconds."""

from __future__ import annotations

import re
from typing import Any

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_TERM = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds to keep a model loaded after its last request: None when unset, ``inf`` when negative (for ever),
    0 to unload once idle. A number is seconds, a string a Go duration ("5m", "1h30m", "-1s") or a number.
    ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION.match(text):
                raise ValueError(f"invalid duration {text!r} (e.g. 30s, 5m, 1h, -1 for ever)") from None
            seconds = sum(float(n or 0) * _UNITS[u] for n, u in _TERM.findall(text))
            seconds = -seconds if text.startswith("-") else seconds
    if seconds != seconds:  # NaN
        raise ValueError("invalid keep_alive: NaN")
    return float("inf") if seconds < 0 else seconds
