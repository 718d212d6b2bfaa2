"""Zoom's rate limits: per-category sliding windows on the scenario clock, and the plans.

Zoom counts requests per rate-limit category: "Heavy" APIs (every participants QoS call) are
limited per second, "Resource-intensive" ones (the meetings and webinars listings) per minute,
and the account has a daily cap shared by all of them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Final

HEAVY: Final = "Heavy"
RESOURCE_INTENSIVE: Final = "Resource-intensive"
WINDOW_SECONDS: Final = {HEAVY: 1.0, RESOURCE_INTENSIVE: 60.0}


@dataclass(frozen=True)
class RateLimits:
    """Per-category request limits to enforce; None leaves a limit unenforced.

    `heavy_per_second` applies to Heavy calls in any 1 s window, `resource_per_minute` to
    Resource-intensive calls in any 60 s window, and `daily` (if set) is the account's daily
    cap, used when the simulator is not given an explicit `daily_limit`.
    """

    heavy_per_second: int | None = None
    resource_per_minute: int | None = None
    daily: int | None = None

    PRO: ClassVar[RateLimits]
    BUSINESS: ClassVar[RateLimits]

    def __post_init__(self) -> None:
        for name in ("heavy_per_second", "resource_per_minute", "daily"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit)")

    def limit(self, category: str) -> int | None:
        """The most requests of `category` accepted in one of its windows (None: unlimited)."""
        if category == HEAVY:
            return self.heavy_per_second
        if category == RESOURCE_INTENSIVE:
            return self.resource_per_minute
        raise ValueError(f"unknown rate-limit category {category!r}")

    @classmethod
    def for_plan(cls, name: str) -> RateLimits:
        """The limits of a Zoom plan by name, in any case.

        "pro" is PRO; "business", "business_plus" (or "business+"), "enterprise" and
        "education" share the BUSINESS limits.
        """
        business = ("business", "business_plus", "enterprise", "education")
        plans = {"pro": cls.PRO} | dict.fromkeys(business, cls.BUSINESS)
        try:
            return plans[name.lower().replace("+", "_plus")]
        except KeyError:
            raise ValueError(f"unknown plan {name!r}; known: {sorted(plans)}") from None


RateLimits.PRO = RateLimits(heavy_per_second=10, resource_per_minute=10, daily=30_000)
RateLimits.BUSINESS = RateLimits(heavy_per_second=40, resource_per_minute=20, daily=60_000)


class Window:
    """The accepted requests of one category within a sliding window of scenario time.

    A request at time t counts in every window (t - seconds, t]. `peak` is the most requests
    ever seen in one window. Times are expected not to go backwards.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.peak = 0
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.seconds:
            self._times.popleft()

    def wait(self, now: float, limit: int | None) -> int | None:
        """None if one more request fits under `limit` now; else whole seconds (>= 1) to wait."""
        self._expire(now)
        if limit is None or len(self._times) < limit:
            return None
        must_leave = self._times[len(self._times) - limit]
        return max(1, math.ceil(must_leave + self.seconds - now))

    def record(self, now: float) -> None:
        """Count an accepted request at `now`."""
        self._expire(now)
        self._times.append(now)
        self.peak = max(self.peak, len(self._times))
