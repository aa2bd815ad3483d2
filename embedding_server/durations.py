"""Go's time.ParseDuration (what Ollama's keep_alive strings follow; go_json.py reports its errors) and keep_alive
values, from requests or EMBED_KEEP_ALIVE, in seconds."""

from __future__ import annotations

import re
from typing import Any

# ----- time.ParseDuration ---------------------------------------------------------------------------------
_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}
_NUMBER = re.compile(r"([0-9]*)(\.([0-9]*))?")
_UNIT = re.compile(r"[^.0-9]*")
_MAX = 1 << 63


def go_duration(text: str) -> tuple[int | None, str | None]:
    """Go's ``time.ParseDuration``: (nanoseconds, None), or (None, Go's error message)."""
    invalid = "time: invalid duration " + _go_quote(text)
    s, negative = text, text[:1] == "-"
    if s[:1] in ("-", "+"):
        s = s[1:]
    if s == "0":
        return 0, None
    if not s:
        return None, invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            return None, invalid
        number = _NUMBER.match(s)
        whole, fraction = number.group(1), number.group(3) or ""
        s = s[number.end():]
        if not whole and not fraction:
            return None, invalid
        if whole and int(whole) > _MAX:
            return None, invalid
        unit_text = _UNIT.match(s).group(0)
        if not unit_text:
            return None, "time: missing unit in duration " + _go_quote(text)
        s = s[len(unit_text):]
        unit = _UNITS.get(unit_text)
        if unit is None:
            return None, "time: unknown unit " + _go_quote(unit_text) + " in duration " + _go_quote(text)
        value = int(whole or "0")
        if value > _MAX // unit:
            return None, invalid
        value *= unit
        f, scale = _leading_fraction(fraction)
        if f > 0:
            value += int(float(f) * (float(unit) / scale))
            if value > _MAX:
                return None, invalid
        total += value
        if total > _MAX:
            return None, invalid
    if not negative and total >= _MAX:
        return None, invalid
    return (-total if negative else total), None


def duration_error(text: str) -> str | None:
    """None if Go's ``time.ParseDuration`` reads ``text``, else its error message."""
    return go_duration(text)[1]


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's leadingFraction: the digits' value and scale, ignoring those that would overflow."""
    x, scale = 0, 1.0
    for ch in digits:
        y = x * 10 + int(ch)
        if x > (_MAX - 1) // 10 or y > _MAX:
            break
        x, scale = y, scale * 10
    return x, scale


def _go_quote(s: str) -> str:
    """Go's time.quote: non-ASCII and control bytes as \\xNN, quote and backslash escaped."""
    out = ['"']
    for ch in s:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            ch = "\ufffd"  # Go's JSON decoder already replaced a lone surrogate
        if ord(ch) >= 0x80 or ch < " ":
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append("\\" + ch if ch in '"\\' else ch)
    out.append('"')
    return "".join(out)


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
            seconds = float(text)  # EMBED_KEEP_ALIVE may be a plain number of seconds
        except ValueError:
            nanoseconds, error = go_duration(text)
            if error:
                raise ValueError(f"{error} (e.g. 30s, 5m, 1h, -1 for ever)") from None
            seconds = nanoseconds / 1e9
    if seconds != seconds:  # NaN
        raise ValueError("invalid keep_alive: NaN")
    return float("inf") if seconds < 0 else seconds
