"""Zoom's rate limits on our side: plans, a token bucket per rate-limit category, backoff.

Zoom limits every account per category: "Heavy" calls (every QoS call) per second and
"Resource-intensive" calls (the discovery lists) per minute, plus a daily cap shared by both
that resets at 00:00 UTC. The exporter paces itself under the per-second limits here; the
daily cap is `budget`'s job.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final, Literal

from exporter.clock import Clock

Category = Literal["Heavy", "Resource-intensive"]
HEAVY: Final = "Heavy"
RESOURCE_INTENSIVE: Final = "Resource-intensive"
DAY: Final = 86400.0
_SLACK: Final = 1e-6  # float rounding must not leave a caller waiting for 0.9999999 tokens


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """One Zoom plan's limits for an account."""

    name: str
    heavy_per_second: float
    resource_intensive_per_minute: float
    daily_cap: int


_PRO = AccountPlan("pro", 10, 10, 30_000)
_BUSINESS = AccountPlan("business", 40, 20, 60_000)
PLANS: Final[dict[str, AccountPlan]] = {
    "pro": _PRO,
    "business": _BUSINESS,
    "business_plus": _BUSINESS,
    "enterprise": _BUSINESS,
    "education": _BUSINESS,
}


def seconds_until_reset(now: float) -> float:
    """Seconds from `now` (epoch) to the next 00:00 UTC, when Zoom resets the daily cap."""
    return DAY - now % DAY


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: it is either delay-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.cap, self.base * 2.0 ** max(0, attempt))


class TokenBucket:
    """`rate` tokens a second, up to `burst`; `acquire` waits its turn (first come, first served).

    `pause(seconds)` empties the bucket and holds every caller back, as after a 429.
    """

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock.monotonic()
        self._paused_until = float("-inf")
        self._turn = asyncio.Lock()

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def available(self) -> float:
        """Tokens ready now (0 while paused)."""
        now = self._clock.monotonic()
        if now < self._paused_until:
            return 0.0
        self._refill(now)
        return self._tokens

    async def acquire(self, tokens: float = 1.0) -> None:
        async with self._turn:
            while True:
                now = self._clock.monotonic()
                if now < self._paused_until:
                    await self._clock.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens + _SLACK >= tokens:
                    self._tokens -= tokens  # a rounding shortfall is owed, not forgiven
                    return
                await self._clock.sleep(max(_SLACK, (tokens - self._tokens) / self.rate))

    def pause(self, seconds: float) -> None:
        now = self._clock.monotonic()
        self._refill(now)
        self._tokens = 0.0
        self._updated = max(self._updated, now + seconds)
        self._paused_until = max(self._paused_until, now + seconds)


class RateLimiter:
    """One token bucket per rate-limit category.

    Heavy calls are spaced evenly at the per-second rate. Resource-intensive calls may come two
    at a time (the meetings list and the webinars list) and then wait for the per-minute rate.
    """

    def __init__(self, heavy_per_second: float, resource_per_second: float, clock: Clock) -> None:
        self.buckets: dict[str, TokenBucket] = {
            HEAVY: TokenBucket(heavy_per_second, 1, clock),
            RESOURCE_INTENSIVE: TokenBucket(resource_per_second, 2, clock),
        }

    async def acquire(self, category: str) -> None:
        await self.buckets[category].acquire()

    def pause(self, category: str, seconds: float) -> None:
        self.buckets[category].pause(seconds)

    def can_afford(self, category: str, calls: int) -> bool:
        """Whether `calls` calls of `category` could go now without waiting."""
        bucket = self.buckets[category]
        return bucket.available() + _SLACK >= min(float(calls), bucket.burst)


class DailyBudget:
    """Counts this exporter's calls per UTC day against its share of the daily cap.

    `remaining` is the lower of our own count and the account-wide X-RateLimit-Remaining that
    Zoom last reported (other apps spend from the same cap).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._day = -1
        self._used = 0
        self._reported: int | None = None

    def _roll(self, now: float) -> None:
        day = int(now // 86400)
        if day != self._day:
            self._day, self._used, self._reported = day, 0, None

    def spend(self, now: float, calls: int = 1) -> None:
        self._roll(now)
        self._used += calls

    def observe(self, now: float, reported_remaining: int) -> None:
        """Zoom's X-RateLimit-Remaining, as it arrived with an answer."""
        self._roll(now)
        self._reported = max(0, reported_remaining)

    def used(self, now: float) -> int:
        self._roll(now)
        return self._used

    def remaining(self, now: float) -> int:
        self._roll(now)
        own = max(0, self.budget - self._used)
        return own if self._reported is None else min(own, self._reported)
