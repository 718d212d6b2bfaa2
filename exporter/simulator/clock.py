"""Clocks for simulated worlds: `ScaledClock` runs the scenario faster than real time, and
`ManualClock` moves only when told to (tests, benchmarks, accelerated simulations)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class ScaledClock:
    """A wall clock that runs `speed` times as fast as real time, from `start`.

    Calling it returns `start + speed * (seconds elapsed since creation)`, measured with a
    monotonic clock (so it never jumps with the system time). `start` defaults to the current
    epoch time, so with speed 1 it reads like `time.time()`. `monotonic` may be replaced to
    drive the clock in tests.
    """

    def __init__(
        self,
        speed: float,
        start: float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self.start = time.time() if start is None else float(start)
        self._monotonic = monotonic
        self._origin = monotonic()

    def __call__(self) -> float:
        """The scaled time now, in epoch seconds."""
        return self.start + self.speed * (self._monotonic() - self._origin)

    def __repr__(self) -> str:
        return f"ScaledClock(speed={self.speed}, start={self.start})"


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
