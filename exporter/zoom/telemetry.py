"""What the Zoom client counts about its own calls, for as long as the process lives.

One `ApiTelemetry` belongs to the daemon: every client it builds, before and after a reload,
counts into the same object, so counters never go back.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import Histogram

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


class ApiTelemetry:
    """Calls by endpoint and HTTP code, retries by reason, 429s by category and type, and the
    duration of each call by endpoint."""

    def __init__(self) -> None:
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
