"""Zoom's limits on our side: plans, a token bucket per rate-limit category, backoff, the
daily budget and the holds, and the state file that keeps the day's spend across restarts.

Zoom limits every account per category: "Heavy" calls (every QoS call) per second and
"Resource-intensive" calls (the discovery lists) per minute, plus a daily cap shared by both
that resets at 00:00 UTC. The exporter paces itself under the per-second limits here; the
daily cap is `budget`'s job.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard

from exporter.clock import Clock
from exporter.logfmt import kv

log = logging.getLogger(__name__)

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


def utc_day(now: float) -> int:
    """The UTC day of `now` (epoch seconds), as a day number; Zoom's daily cap is per UTC day."""
    return int(now // DAY)


def seconds_until_reset(now: float) -> float:
    """Seconds from `now` (epoch) to the next 00:00 UTC, when Zoom resets the daily cap."""
    return DAY - now % DAY


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: delay-seconds, an HTTP date, or an ISO-8601 time
    (Zoom's documented example is `2020-05-31T00:00:00Z`)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text) if len(text) <= 12 else None
    when: datetime | None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
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

    def set_rates(self, heavy_per_second: float, resource_per_second: float) -> None:
        """New rates (a reload); tokens in hand and pauses are kept."""
        self.buckets[HEAVY].rate = heavy_per_second
        self.buckets[RESOURCE_INTENSIVE].rate = resource_per_second

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

    `remaining` is the lower of our own count and the account-wide remaining count that Zoom
    last reported (other apps spend from the same cap). The day's spend can be saved and
    resumed (`state`, `resume`), so a restart on the same day does not start afresh.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._day = -1
        self._used = 0
        self._reported: int | None = None

    def _roll(self, now: float) -> None:
        day = utc_day(now)
        if day != self._day:
            self._day, self._used, self._reported = day, 0, None

    def spend(self, now: float, calls: int = 1) -> None:
        self._roll(now)
        self._used += calls

    def observe(self, now: float, reported_remaining: int) -> None:
        """Zoom's daily remaining count, as it arrived with an answer (see
        `transport.daily_remaining` for when a header is trusted as one)."""
        self._roll(now)
        self._reported = max(0, reported_remaining)

    def used(self, now: float) -> int:
        self._roll(now)
        return self._used

    def remaining(self, now: float) -> int:
        self._roll(now)
        own = max(0, self.budget - self._used)
        return own if self._reported is None else min(own, self._reported)

    def state(self, now: float) -> dict[str, int]:
        """What a restart on the same UTC day resumes from."""
        self._roll(now)
        state = {"day": self._day, "used": self._used}
        if self._reported is not None:
            state["reported_remaining"] = self._reported
        return state

    def resume(self, now: float, state: dict[str, Any]) -> bool:
        """Take the spend saved earlier today; a state of another day, or one whose numbers
        are not whole and sane, is ignored."""
        self._roll(now)
        day, used = state.get("day"), state.get("used")
        if not _count(day) or day != self._day or not _count(used):
            return False
        self._used = max(self._used, used)
        reported = state.get("reported_remaining")
        if _count(reported):
            self._reported = reported
        return True


def _count(value: object) -> TypeGuard[int]:
    """A whole, non-negative number of a sane size (JSON from disk is not trusted)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12


@dataclass(frozen=True, slots=True)
class Hold:
    """Calls held back until `until` (epoch seconds), and why."""

    until: float
    reason: str  # daily_limit, auth_failed, forbidden, rate_limited
    message: str
    failures: int  # consecutive holds of this scope: the backoff step


class Holds:
    """Calls Zoom told us not to make yet, by scope: "all" (a daily limit, refused credentials),
    a kind ("meeting", "webinar": a missing scope or feature) or a rate-limit category (a QPS
    Retry-After too long to wait). Lives as long as the daemon,
    so a reload forgets none."""

    ALL: Final = "all"

    def __init__(self) -> None:
        self._holds: dict[str, Hold] = {}

    def hold(self, scope: str, until: float, reason: str, message: str) -> Hold:
        """Hold `scope` until `until`. The same reason held at least as long already is the
        same incident (concurrent refusals): one backoff step, not one each."""
        previous = self._holds.get(scope)
        if previous is not None and previous.reason == reason and previous.until >= until:
            return previous
        failures = previous.failures + 1 if previous is not None else 1
        held = Hold(until, reason, message, failures)
        self._holds[scope] = held
        return held

    def active(self, scope: str, now: float) -> Hold | None:
        """The hold on `scope` (or on every call) still in force at `now`."""
        for key in (self.ALL, scope):
            held = self._holds.get(key)
            if held is not None and now < held.until:
                return held
        return None

    def active_only(self, scope: str, now: float) -> Hold | None:
        """The hold on exactly `scope` (a rate-limit category, say) still in force at `now`."""
        held = self._holds.get(scope)
        return held if held is not None and now < held.until else None

    def any_active(self, reason: str, now: float) -> bool:
        """Whether a hold of this reason, on any scope, is in force at `now`."""
        return any(h.reason == reason and now < h.until for h in self._holds.values())

    def failures(self, scope: str) -> int:
        held = self._holds.get(scope)
        return held.failures if held is not None else 0

    def release_reason(self, reason: str) -> None:
        """Drop every hold of this reason (new credentials make an auth_failed hold moot)."""
        self._holds = {k: h for k, h in self._holds.items() if h.reason != reason}

    def release(self, scope: str) -> None:
        self._holds.pop(scope, None)

    def succeeded(self, scope: str, now: float) -> None:
        """A call in `scope` went through: its backoff, and that of an expired hold on every
        call, start again from the first step."""
        self._holds.pop(scope, None)
        held = self._holds.get(self.ALL)
        if held is not None and now >= held.until:
            del self._holds[self.ALL]

    def current(self, now: float) -> dict[str, Hold]:
        return {scope: h for scope, h in self._holds.items() if now < h.until}


class StateFile:
    """The day's spend and a daily-limit pause, kept on disk so that a restart on the same UTC
    day resumes them. Written atomically (a temporary file, fsync, rename); a missing or
    corrupt file starts the day afresh, with a warning."""

    NAME: Final = "state.json"
    VERSION: Final = 1
    MAX_SIZE: Final = 1 << 20  # bytes; about 150 an account

    LOCK: Final = ".lock"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.NAME
        self._failed = False  # a write failed: warn once, not every cycle
        self._lock: int | None = None  # the open lock file: this process owns the directory
        self.shared = False  # another exporter holds the directory: write nothing

    def claim(self) -> bool:
        """Take the directory for this process (an advisory lock, held while it lives). Two
        exporters on one directory would overwrite each other's spend: the second writes
        nothing and says so."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.parent / self.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return True  # no lock to be had (read-only dir): save() reports the real problem
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.shared = True
            log.error(
                "another exporter uses this storage path; this one keeps its spend in memory "
                "only (give each exporter its own --storage.path)",
                extra=kv(path=str(self.path.parent)),
            )
            return False
        self._lock = fd
        return True

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (with a warning) when there is none that can be used."""
        try:
            with self.path.open("rb") as source:
                raw = source.read(self.MAX_SIZE + 1)
        except FileNotFoundError:
            log.warning(
                "no state file yet; today's API spend starts at 0",
                extra=kv(path=str(self.path)),
            )
            return None
        except OSError as error:
            log.warning(
                "cannot read the state file; today's API spend starts at 0",
                extra=kv(path=str(self.path), error=error.strerror),
            )
            return None
        try:
            state = json.loads(raw) if len(raw) <= self.MAX_SIZE else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            state = None
        if not isinstance(state, dict) or state.get("version") != self.VERSION:
            log.warning(
                "the state file is corrupt; today's API spend starts at 0",
                extra=kv(path=str(self.path)),
            )
            return None
        return state

    def save(self, state: dict[str, Any]) -> bool:
        """Write `state` atomically; on failure log once and go on (polling never stops)."""
        if self.shared:
            return False
        temporary = self.path.with_name(f".{self.NAME}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w", encoding="utf-8") as out:
                json.dump({"version": self.VERSION, **state}, out, allow_nan=False)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except (OSError, ValueError) as error:
            if not self._failed:
                log.warning(
                    "cannot write the state file; a restart today will count the day afresh",
                    extra=kv(path=str(self.path), error=getattr(error, "strerror", str(error))),
                )
            self._failed = True
            return False
        if self._failed:
            log.info("the state file is written again", extra=kv(path=str(self.path)))
        self._failed = False
        return True
