"""Parsing the command line's budgets: ``--time-budget 1h30m``, ``--memory-budget 8G``."""
from __future__ import annotations

import math
import re


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: str | float, option: str = "--time-budget") -> float:
    """Seconds from ``"15m"``, ``"90s"``, ``"1h30m"``, ``"2.5h"`` or a number of seconds (``"600"``).

    Raises:
        ValueError: naming ``option`` for anything else, or a duration <= 0.
    """
    text = str(value).strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)\s*([dhms])", text)
        if not parts or re.fullmatch(r"(?:(?:\d+(?:\.\d*)?|\.\d+)\s*[dhms]\s*)+", text) is None:
            raise ValueError(f"{option}: cannot read {value!r} as a duration; write e.g. 90s, 15m, "
                             "1h30m or a number of seconds") from None
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{option}: the duration must be > 0, got {value!r}")
    return seconds


def parse_bytes(value: str | float, option: str = "--memory-budget") -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"64k"`` or a number of bytes.

    K, M, G, T (with or without ``B``/``iB``) are powers of 1024, as memory is
    counted.

    Raises:
        ValueError: naming ``option`` for anything else, or a size <= 0.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
    if match is None:
        raise ValueError(f"{option}: cannot read {value!r} as a size; write e.g. 8G, 512M or a "
                         "number of bytes")
    number, unit = float(match.group(1)), match.group(2)
    size = int(number * 1024 ** ("kmgt".index(unit) + 1 if unit else 0))
    if size <= 0:
        raise ValueError(f"{option}: the size must be > 0, got {value!r}")
    return size
