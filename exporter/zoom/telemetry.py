"""What the Zoom client counts about its own calls, for as long as the process lives.

One `ApiTelemetry` belongs to the daemon: every client it builds, before and after a reload,
counts into the same object, so counters never go back.
"""

from __future__ import annotations

import logging
from collections import Counter

from prometheus_client import Histogram

from exporter.logfmt import kv

log = logging.getLogger(__name__)

# Seconds; a QoS page answers in about 0.1-0.5 s, a slow one takes seconds, a timeout 10 s.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Tally:
    """A counter by a pair of label values, e.g. (endpoint, code); read as sorted triples."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, first: str, second: str) -> None:
        self._counts[(first, second)] += 1

    def snapshot(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((a, b, n) for (a, b), n in sorted(self._counts.items()))

    def total(self, *, excluding: str | None = None) -> int:
        return sum(n for (first, _), n in self._counts.items() if first != excluding)


# zoom_exporter_items_dropped_total{reason}: why a record, participant or meeting was left out.
DROP_REASONS = (
    "schema",  # a record in Zoom's list that is not an object of the expected shape
    "build",  # building a participant's or meeting's reading failed (a bug, or odd input)
    "render",  # rendering a participant or meeting to the exposition failed
)


class Drops:
    """Items left out of the snapshot, by reason; the first of each reason is logged as a
    warning, the rest at debug level (a hostile answer repeats every cycle)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})

    def add(self, reason: str, detail: str, count: int = 1) -> None:
        if count <= 0:
            return
        first = self._counts[reason] == 0
        self._counts[reason] += count
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "left an item out of the snapshot", extra=kv(reason=reason, item=detail))

    def snapshot(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self._counts.items()))

    def total(self) -> int:
        return sum(self._counts.values())


class ApiTelemetry:
    """Calls by endpoint and HTTP code, retries by reason, 429s by category and type, the
    duration of each call by endpoint, items left out of the snapshot, strings cut."""

    def __init__(self) -> None:
        self.dropped = Drops()
        self.truncated = 0  # strings from Zoom cut to models.MAX_TEXT characters
        self.requests = Tally()  # (endpoint, HTTP code or "error")
        self.retries = Tally()  # (endpoint, reason)
        self.rate_limited = Tally()  # (category, type)
        self.durations = Histogram(
            "zoom_api_request_duration_seconds",
            "Duration of Zoom API calls by endpoint, answered or not.",
            ["endpoint"],
            registry=None,
            buckets=DURATION_BUCKETS,
        )
