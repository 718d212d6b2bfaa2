"""Parse Zoom's unit-bearing strings ("23 kbps", "126 ms", "0.3%", "1280*720") into base units.

Every function is pure and total: any input (including None, numbers and garbage) returns a
value or None, and never raises. None means "no reading": callers export no series for it.
"""

from __future__ import annotations

import math
import re
from typing import Final

_NUMBER: Final = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_VALUE_UNIT: Final = re.compile(r"^\s*" + _NUMBER + r"\s*([A-Za-z%/]*)\s*$")
_RESOLUTION: Final = re.compile(r"^\s*(\d{1,6})\s*[*xX\u00d7]\s*(\d{1,6})\s*$")

# Multipliers from Zoom's bitrate units to bytes per second.
_BITRATE_TO_BYTES: Final[dict[str, float]] = {
    "": 1 / 8,  # a bare number is bits per second
    "bps": 1 / 8,
    "kbps": 1000 / 8,
    "kb/s": 1000 / 8,
    "mbps": 1_000_000 / 8,
    "mb/s": 1_000_000 / 8,
    "gbps": 1_000_000_000 / 8,
}
_DURATION_TO_SECONDS: Final[dict[str, float]] = {
    "": 1 / 1000,  # Zoom reports latency and jitter in milliseconds
    "ms": 1 / 1000,
    "s": 1.0,
    "us": 1 / 1_000_000,
    "µs": 1 / 1_000_000,
}


def _split(value: object) -> tuple[float, str] | None:
    """Split "12.5 kbps" into (12.5, "kbps"); numbers pass through with an empty unit."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        unit = ""
    elif isinstance(value, str):
        if len(value) > 64:
            return None
        match = _VALUE_UNIT.match(value)
        if match is None:
            return None
        try:
            number = float(match.group(1))
        except ValueError:  # pragma: no cover - the regex only admits valid floats
            return None
        unit = match.group(2).lower()
    else:
        return None
    if not math.isfinite(number):
        return None
    return number, unit


def _scaled(value: object, table: dict[str, float]) -> float | None:
    """A non-negative number times its unit's factor; None for an unknown unit."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    factor = table.get(unit)
    if factor is None or number < 0:
        return None
    return number * factor


def parse_bitrate(value: object) -> float | None:
    """ "23 kbps" -> 2875.0 bytes per second. Accepts bps, kbps, Mbps, with or without a space."""
    return _scaled(value, _BITRATE_TO_BYTES)


def parse_duration(value: object) -> float | None:
    """ "126 ms" -> 0.126 seconds."""
    return _scaled(value, _DURATION_TO_SECONDS)


def parse_percent(value: object) -> float | None:
    """ "0.3%" -> 0.003. A bare number is read as a percentage too."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    if unit not in ("%", "") or number < 0:
        return None
    return number / 100


def parse_frame_rate(value: object) -> float | None:
    """ "12 fps" -> 12.0."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    if unit not in ("fps", "") or number < 0:
        return None
    return number


def parse_resolution(value: object) -> tuple[int, int] | None:
    """ "1280*720" or "1280x720" -> (1280, 720). "0*0" is a real reading of 0 by 0."""
    if not isinstance(value, str):
        return None
    match = _RESOLUTION.match(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def parse_rssi(value: object) -> float | None:
    """Wi-Fi RSSI in dBm: an integer (or a numeric string such as "-52" or "-52 dBm")."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    if unit not in ("", "dbm"):
        return None
    return number
