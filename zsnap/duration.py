"""Durations as operators write them in the config: "2d", "12h", "1d12h", "90s", "1w"."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?[wdhms])+$")


def parse_duration(text: str) -> timedelta:
    """A sum of number+unit parts (w, d, h, m, s); a bare "0" is zero."""
    compact = text.strip().replace(" ", "").lower()
    if compact == "0":
        return timedelta(0)
    if not _WHOLE.match(compact):
        raise ValueError(f"not a duration: {text!r} (write e.g. 2d, 12h, 1d12h, 30m, 90s, 1w)")
    seconds = sum(float(n) * UNITS[unit] for n, unit in _PART.findall(compact))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 1d12h, 90s -> 1m30s, 0 -> 0s."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
