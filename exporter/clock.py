"""Time, in one injectable object: wall time for UTC days and timestamps, monotonic time for
rates and deadlines, and sleeping. Tests pass a fake clock to make time-driven behaviour exact."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (UTC)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class SystemClock:
    """The real clocks, and asyncio's sleep."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to, or when someone sleeps on it (time passes at once).

    Callable (for the simulator's Scenario) and a `Clock` (for the exporter), so one object
    drives both in tests, benchmarks and accelerated simulations. Wall and monotonic time are
    the same number here.
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept = 0.0  # seconds all sleepers together have waited

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (never back)."""
        self.now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Time passes at once; other tasks get a turn."""
        self.advance(seconds)
        self.slept += max(0.0, seconds)
        await asyncio.sleep(0)
