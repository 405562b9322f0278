"""Human-readable byte sizes ("8GB", "512 MiB", 1_000_000) to integers. Pure."""

from __future__ import annotations

import math
import re

from lakeio.errors import clipped

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}  # fmt: skip
_PATTERN = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([a-zA-Z]{0,3})\s*")
MAX_SIZE = 2**60  # one exbibyte: more than any memory or disk, and safely inside int64


def parse_size(value: int | float | str | None, name: str = "size") -> int | None:
    """Bytes from ``value``: a number, or text like ``"8GB"`` (decimal) / ``"8GiB"`` (binary)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a size such as '8GB', got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 0 <= value <= MAX_SIZE:
            raise ValueError(f"{name}: size must be within 0..{MAX_SIZE} bytes, got {value}")
        return int(value)
    text = value if isinstance(value, str) else str(value)
    match = _PATTERN.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        shown = clipped(text)
        raise ValueError(f"{name}: {shown!r} is not a size such as '512MB', '8GiB' or 1000000")
    return parse_size(float(match.group(1)) * _UNITS[unit], name)


def human_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at 1 or more (``3.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
