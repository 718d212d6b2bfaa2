"""What the last poll cycle ran into: the exporter's state, the budget, the planner's choices.

A `Health` is immutable and replaced whole after each cycle; the self-metrics and the status
page read it. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

# zoom_exporter_state{state}: what the last cycle ran into. zoom_up is 1 only in the first two.
STATES: tuple[str, ...] = (
    "ok",
    "degraded",  # some meetings failed, others were polled
    "unreachable",  # every call failed
    "auth_failed",  # Zoom refused the credentials or the token
    "forbidden",  # a missing scope, or the Dashboard feature off or not on the plan
    "token_unavailable",  # the OAuth token endpoint is down
    "daily_limit",  # Zoom's daily cap is spent: calls paused until 00:00 UTC
    "budget_exhausted",  # this exporter's own daily budget is spent until 00:00 UTC
)
UP_STATES = frozenset({"ok", "degraded"})


@dataclass(frozen=True, slots=True)
class BudgetReading:
    budget: int  # this exporter's daily request budget
    remaining: int  # the lower of our own count and Zoom's daily remaining count
    reset_timestamp: float  # the next 00:00 UTC


@dataclass(frozen=True, slots=True)
class Health:
    """The exporter's own view of the last cycle."""

    state: str | None = None  # one of STATES once a cycle has run
    up: bool = False
    last_success_timestamp: float | None = None
    poll_duration_seconds: float | None = None
    created_at: float = 0.0
    complete_cycles: int = 0
    errors: tuple[str, ...] = ()
    poll_interval_seconds: float | None = None  # the planner's effective interval
    budget: BudgetReading | None = None
    paused_until: float | None = None
    cycle_requests: int | None = None  # API calls the cycle made
    planned_requests: int | None = None  # what the planner expected them to be
    meetings_deferred: int = 0
    meetings_not_live: int = 0  # configured ids that are not live (and cost no call)
