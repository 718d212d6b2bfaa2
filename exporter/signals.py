"""SIGHUP before the daemon can handle it: remembered, not fatal.

Python's default for SIGHUP ends the process. `install_early` runs first thing in the entry
point, before the heavy imports, so a reload asked for during start-up is kept and carried
out once the daemon runs (`take_early`).
"""

from __future__ import annotations

import signal
from types import FrameType

_pending = False


def _remember(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True


def install_early() -> None:
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _remember)


def take_early() -> bool:
    """Whether a SIGHUP arrived before the daemon took over (and forget it)."""
    global _pending
    pending, _pending = _pending, False
    return pending
