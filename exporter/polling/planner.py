"""The planner that spreads the daily request budget over the day.

Zoom's daily cap is shared by every app on the account and resets at 00:00 UTC. The exporter
spends at most its own share (`daily_request_budget`). Before each cycle the planner:

1. counts what a full cycle costs: the discovery pages plus, per meeting, ceil(participants/10)
   (Zoom's QoS lists hold at most 10 participants a page; an empty meeting still costs a call);
2. stretches the poll interval so that the remaining budget lasts until the reset, never
   beyond `max_interval`;
3. if even `max_interval` cannot pay for every meeting, polls what the cycle's allowance pays
   for, in this order, and leaves the rest with their last data:
   - meetings deferred `STARVING_AFTER` cycles in a row or more, longest-waiting first
     (so none is starved forever);
   - then configured meetings, then discovered ones;
   - within each, the one polled longest ago (never polled first), then the cheaper one.

Unspent allowance carries over (up to one full cycle's cost), so a meeting too big for one
cycle's allowance is polled once enough has accumulated. The first cycle discovers and polls
everything the remaining budget pays for, so the exporter starts with data whatever the
budget. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.zoom.client import QOS_PAGE_SIZE
from exporter.zoom.limits import seconds_until_reset

STARVING_AFTER = 3  # cycles in a row a meeting may be deferred before it jumps the queue
EPSILON = 1e-6  # float slack: an allowance of 0.9999999 calls pays for one


def pages_for(records: int, page_size: int = QOS_PAGE_SIZE) -> int:
    """Calls to list `records` entries: ceil(records / page_size), and at least one."""
    return max(1, math.ceil(max(0, records) / page_size))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A meeting the cycle could poll, and what the planner knows of it."""

    key: tuple[str, str]
    cost: int  # expected calls: ceil(participants / 10), at least 1
    configured: bool = False
    last_polled: float | None = None  # wall time of its last successful poll
    deferred: int = 0  # consecutive cycles the planner has left it out


@dataclass(frozen=True, slots=True)
class CyclePlan:
    """What one cycle does: its interval, the meetings it polls and those it defers."""

    interval: float  # seconds until the next cycle starts
    selected: tuple[tuple[str, str], ...]  # meetings to poll, in order
    deferred: tuple[tuple[str, str], ...]  # meetings left out to stay within the budget
    planned_calls: int  # discovery calls + the selected meetings' costs
    full_cost: int  # what discovery and polling every meeting costs
    credit: float  # allowance carried over to the next cycle (negative: a debt)


def priority(candidate: Candidate) -> tuple[int, int, float, int, tuple[str, str]]:
    """Sort key: starving first (longest-deferred first), configured, oldest poll, cheapest."""
    starving = candidate.deferred >= STARVING_AFTER
    last = candidate.last_polled if candidate.last_polled is not None else float("-inf")
    return (
        0 if starving else 1,
        -candidate.deferred if starving else (0 if candidate.configured else 1),
        last,
        candidate.cost,
        candidate.key,
    )


def even_rate(now: float, remaining: int) -> float:
    """Calls a second that spend `remaining` evenly until the next 00:00 UTC."""
    return remaining / seconds_until_reset(now)


def can_discover(
    pages: int, *, now: float, remaining: int, interval: float, credit: float = 0.0
) -> bool:
    """Whether this cycle's allowance pays for discovery's `pages` calls."""
    allowance = min(float(remaining), credit + even_rate(now, remaining) * interval)
    return pages <= allowance + EPSILON


def plan_cycle(
    candidates: Iterable[Candidate],
    *,
    now: float,
    remaining: int,
    base_interval: float,
    max_interval: float,
    discovery_calls: int = 0,
    discovery_pages: int = 0,
    credit: float = 0.0,
    bootstrap: bool = False,
) -> CyclePlan:
    """Choose this cycle's interval and meetings so the budget lasts until 00:00 UTC.

    `remaining` is the budget left before this cycle's discovery, which made `discovery_calls`
    calls (0 if it did not run); a discovery run costs `discovery_pages`, and unspent allowance
    may build up to pay for one. `credit` is what the previous plan carried over. A
    `bootstrap` cycle (the first) polls everything the remaining budget pays for, so the
    exporter starts with data; the rest of the day's spreading absorbs the extra calls.
    """
    ordered = sorted(candidates, key=priority)
    full = discovery_calls + sum(c.cost for c in ordered)
    rate = even_rate(now, remaining)
    needed = full / rate if rate > 0 else math.inf
    interval = min(max(base_interval, needed), max_interval)
    allowance = min(float(remaining), credit + rate * interval)
    if bootstrap:
        allowance = min(float(remaining), max(allowance, float(full)))
    if allowance + EPSILON >= full:
        carry = min(allowance - full, float(full + discovery_pages))
        return CyclePlan(interval, tuple(c.key for c in ordered), (), full, full, carry)

    budget = allowance - discovery_calls
    selected: list[tuple[str, str]] = []
    deferred: list[tuple[str, str]] = []
    planned = discovery_calls
    blocked = False
    for candidate in ordered:
        if not blocked and candidate.cost <= budget + EPSILON:
            selected.append(candidate.key)
            budget -= candidate.cost
            planned += candidate.cost
            continue
        deferred.append(candidate.key)
        if candidate.deferred >= STARVING_AFTER and candidate.cost <= remaining:
            # It waits for credit to build up and nobody overtakes it; one that the rest of
            # today's budget can never pay for blocks nobody.
            blocked = True
    return CyclePlan(
        interval=interval,
        selected=tuple(selected),
        deferred=tuple(deferred),
        planned_calls=planned,
        full_cost=full,
        credit=budget,
    )
