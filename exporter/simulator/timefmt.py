"""Zoom's time formats."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime


def iso(epoch: float) -> str:
    """Epoch seconds as Zoom's ISO 8601 UTC form, e.g. "2021-06-24T20:00:00Z"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(epoch: float) -> str:
    """Epoch seconds as a UTC date, e.g. "2021-06-24"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def hms(seconds: float) -> str:
    """A duration as "HH:MM:SS"."""
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def http_date(epoch: float) -> str:
    """Epoch seconds as an RFC 7231 IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT"."""
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)
