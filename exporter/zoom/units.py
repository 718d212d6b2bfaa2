"""Parse Zoom's unit-bearing strings ("23 kbps", "126 ms", "0.3%", "1280*720") into base units.

Every function is pure and total: any input (including None, numbers and garbage) returns a
value or None, and never raises. None means "no reading": callers export no series for it.
A value outside its field's sane range (`RANGES`, in base units) is no reading either: Zoom
has sent nonsense, and one absurd number must not distort a dashboard or an alert.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Final, TypeVar

_NUMBER: Final = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_VALUE_UNIT: Final = re.compile(r"^\s*" + _NUMBER + r"\s*([A-Za-z%/]*)\s*$")
_RESOLUTION: Final = re.compile(r"^\s*(\d{1,6})\s*[*xX\u00d7]\s*(\d{1,6})\s*$")

# The sane range of each reading, in base units; outside it a value is no reading.
RANGES: Final[dict[str, tuple[float, float]]] = {
    "bitrate": (0.0, 1.25e10),  # bytes/s: up to 100 Gbit/s
    "duration": (0.0, 3600.0),  # seconds of latency or jitter
    "percent": (0.0, 1.0),  # a ratio: loss and CPU are 0-100 %
    "frame_rate": (0.0, 1000.0),  # frames a second
    "pixels": (0.0, 100_000.0),  # one side of a resolution
    "rssi": (-200.0, 100.0),  # dBm; real readings are about -100 to 0
}


def _within(value: float | None, field: str) -> float | None:
    if value is None:
        return None
    low, high = RANGES[field]
    return value if low <= value <= high else None


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
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range
            return None
        unit = ""
    elif isinstance(value, str):
        if len(value) > 64:
            return None
        match = _VALUE_UNIT.match(value)
        if match is None:
            return None
        try:
            number = float(match.group(1))  # "1e400" is inf, refused below
        except (ValueError, OverflowError):  # pragma: no cover - the regex admits only floats
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
    return _within(_scaled(value, _BITRATE_TO_BYTES), "bitrate")


def parse_duration(value: object) -> float | None:
    """ "126 ms" -> 0.126 seconds."""
    return _within(_scaled(value, _DURATION_TO_SECONDS), "duration")


def parse_percent(value: object) -> float | None:
    """ "0.3%" -> 0.003. A bare number is read as a percentage too."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    if unit not in ("%", "") or number < 0:
        return None
    return _within(number / 100, "percent")


def parse_frame_rate(value: object) -> float | None:
    """ "12 fps" -> 12.0."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    if unit not in ("fps", "") or number < 0:
        return None
    return _within(number, "frame_rate")


def parse_resolution(value: object) -> tuple[int, int] | None:
    """ "1280*720" or "1280x720" -> (1280, 720). "0*0" is a real reading of 0 by 0."""
    if not isinstance(value, str):
        return None
    match = _RESOLUTION.match(value)
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if _within(width, "pixels") is None or _within(height, "pixels") is None:
        return None
    return width, height


def parse_rssi(value: object) -> float | None:
    """Wi-Fi RSSI in dBm: an integer (or a numeric string such as "-52" or "-52 dBm")."""
    parts = _split(value)
    if parts is None:
        return None
    number, unit = parts
    if unit not in ("", "dbm"):
        return None
    return _within(number, "rssi")


T = TypeVar("T")


def memo(parse: Callable[[object], T], limit: int) -> Callable[[str | None], T]:
    """`parse` with its answers kept by input string: Zoom repeats "0.0%", "25 ms" and
    minute-aligned sample times across thousands of participants. Bounded: emptied when it
    grows past `limit` strings."""
    cache: dict[str | None, T] = {}

    def cached(value: str | None) -> T:
        try:
            return cache[value]
        except KeyError:
            if len(cache) >= limit:
                cache.clear()
            result = cache[value] = parse(value)
            return result

    return cached
