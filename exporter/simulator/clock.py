"""Clocks for the scenario: `ScaledClock` runs the simulated world faster than real time."""

from __future__ import annotations

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
