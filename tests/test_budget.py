"""The pure parts of rate limiting: the planner, the daily budget, buckets, Retry-After."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from exporter.polling.planner import STARVING_AFTER, Candidate, can_discover, pages_for, plan_cycle
from exporter.zoom.limits import (
    Backoff,
    DailyBudget,
    RateLimiter,
    TokenBucket,
    parse_retry_after,
    seconds_until_reset,
)

NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp()  # 43,200 s before the reset


def meeting(name: str, cost: int = 1, **fields: object) -> Candidate:
    return Candidate(key=("meeting", name), cost=cost, **fields)  # type: ignore[arg-type]


def test_pages_for_is_ceil_of_ten_and_never_zero() -> None:
    assert [pages_for(n) for n in (0, 1, 9, 10, 11, 20, 21, 300)] == [1, 1, 1, 1, 2, 2, 3, 30]
    assert pages_for(301, 300) == 2


def test_seconds_until_reset_counts_to_midnight_utc() -> None:
    assert seconds_until_reset(NOON) == 43_200
    midnight = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    assert seconds_until_reset(midnight) == 86_400
    assert seconds_until_reset(midnight - 1) == 1


def test_retry_after_seconds_or_http_date() -> None:
    assert parse_retry_after("7", NOON) == 7
    when = datetime.fromtimestamp(NOON, UTC) + timedelta(seconds=90)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOON) == pytest.approx(90)
    past = datetime.fromtimestamp(NOON, UTC) - timedelta(seconds=90)
    assert parse_retry_after(format_datetime(past, usegmt=True), NOON) == 0
    for junk in (None, "", "soon", "-5", "1.5e3x"):
        assert parse_retry_after(junk, NOON) is None


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    backoff = Backoff(base=0.5, cap=4.0)
    assert [backoff.delay(n, lambda: 1.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(3, lambda: 0.0) == 0.0


def test_daily_budget_takes_the_lower_count_and_resets_at_midnight() -> None:
    budget = DailyBudget(100)
    budget.spend(NOON, 30)
    assert budget.remaining(NOON) == 70
    budget.observe(NOON, 50)  # other apps spent from the account's cap
    assert budget.remaining(NOON) == 50
    budget.observe(NOON, 5000)
    assert budget.remaining(NOON) == 70
    tomorrow = NOON + seconds_until_reset(NOON)
    assert budget.remaining(tomorrow) == 100 and budget.used(tomorrow) == 0


def test_plenty_of_budget_polls_everything_at_the_base_interval() -> None:
    plan = plan_cycle(
        [meeting("a", 3), meeting("b", 1)],
        now=NOON,
        remaining=15_000,
        base_interval=60,
        max_interval=300,
        discovery_calls=2,
    )
    assert plan.interval == 60
    assert set(plan.selected) == {("meeting", "a"), ("meeting", "b")}
    assert plan.deferred == ()
    assert plan.planned_calls == plan.full_cost == 6


def test_the_interval_stretches_so_the_budget_lasts_until_the_reset() -> None:
    # 12 calls a cycle, 4,320 calls left for 43,200 s: one cycle every 120 s.
    plan = plan_cycle(
        [meeting("a", 10)],
        now=NOON,
        remaining=4_320,
        base_interval=60,
        max_interval=300,
        discovery_calls=2,
    )
    assert plan.interval == pytest.approx(120)
    assert plan.selected == (("meeting", "a"),)
    assert plan.full_cost * (seconds_until_reset(NOON) / plan.interval) <= 4_320 + 1e-6


def test_configured_meetings_go_first_then_the_longest_unpolled() -> None:
    candidates = [
        meeting("fresh", 2, last_polled=NOON - 60),
        meeting("old", 2, last_polled=NOON - 600),
        meeting("new", 2),
        meeting("mine", 2, configured=True, last_polled=NOON - 30),
    ]
    # 864 calls for 43,200 s at most every 300 s: 6 calls a cycle, of 8.
    plan = plan_cycle(candidates, now=NOON, remaining=864, base_interval=60, max_interval=300)
    assert plan.interval == 300
    assert plan.selected == (("meeting", "mine"), ("meeting", "new"), ("meeting", "old"))
    assert plan.deferred == (("meeting", "fresh"),)
    assert plan.planned_calls == 6


def test_a_starving_meeting_jumps_the_queue_and_blocks_until_credit_builds() -> None:
    big = meeting("big", 9, deferred=STARVING_AFTER, last_polled=NOON - 3600)
    small = meeting("small", 1, configured=True)
    plan = plan_cycle([small, big], now=NOON, remaining=864, base_interval=60, max_interval=300)
    assert plan.selected == ()  # 6 calls of allowance: the big one waits, and so does everyone
    assert plan.credit == pytest.approx(6)
    later = plan_cycle(
        [small, big], now=NOON, remaining=864, base_interval=60, max_interval=300, credit=3
    )
    assert later.selected == (("meeting", "big"),)  # 9 calls of allowance: exactly the big one
    assert later.deferred == (("meeting", "small"),)
    assert later.credit == pytest.approx(0)


def test_no_budget_left_means_nothing_is_polled() -> None:
    plan = plan_cycle([meeting("a")], now=NOON, remaining=0, base_interval=60, max_interval=300)
    assert plan.selected == () and plan.interval == 300
    assert not can_discover(2, now=NOON, remaining=0, interval=300)
    assert can_discover(2, now=NOON, remaining=864, interval=300)


@settings(max_examples=300, deadline=None)
@given(
    costs=st.lists(st.integers(1, 40), min_size=1, max_size=30),
    budget=st.integers(0, 60_000),
    hours_left=st.floats(0.01, 24),
    base=st.floats(1, 600),
)
def test_simulated_days_never_overspend_and_never_starve(
    costs: list[int], budget: int, hours_left: float, base: float
) -> None:
    """Replay the planner cycle after cycle until the reset: spending stays within budget,
    and once the allowance can pay for the biggest meeting, every meeting gets polled."""
    now = datetime(2026, 11, 22, tzinfo=UTC).timestamp() + 86_400 - hours_left * 3600
    day_end = now + seconds_until_reset(now)
    remaining, credit = budget, 0.0
    books = {i: {"deferred": 0, "last": None} for i in range(len(costs))}
    max_wait = {i: 0 for i in books}
    cycles = 0
    while now < day_end and cycles < 5_000:
        candidates = [
            Candidate(("meeting", str(i)), c, False, books[i]["last"], books[i]["deferred"])  # type: ignore[arg-type]
            for i, c in enumerate(costs)
        ]
        plan = plan_cycle(
            candidates,
            now=now,
            remaining=remaining,
            base_interval=base,
            max_interval=max(base, 300),
            credit=credit,
        )
        assert plan.planned_calls <= remaining
        plenty_left = remaining >= 2 * sum(costs)  # not the day's last few calls
        remaining -= plan.planned_calls
        credit = plan.credit
        for key in plan.selected:
            i = int(key[1])
            books[i] = {"deferred": 0, "last": now}
        for key in plan.deferred:
            i = int(key[1])
            books[i]["deferred"] += 1
            if plenty_left:
                max_wait[i] = max(max_wait[i], books[i]["deferred"])
        now += plan.interval
        cycles += 1
    assert remaining >= 0
    per_cycle = min(budget, budget / (hours_left * 3600) * max(base, 300))
    if per_cycle >= 2 * sum(costs):  # enough for everything, with room to spare
        assert all(wait == 0 for wait in max_wait.values())
    elif per_cycle >= max(costs) and cycles > 4 * len(costs):
        # The queue turns: nobody waits more than a bounded number of cycles.
        bound = STARVING_AFTER + len(costs) * math.ceil(max(costs) / per_cycle + 1)
        assert max(max_wait.values()) <= bound


async def test_token_bucket_spaces_calls_at_the_rate() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(rate=10, burst=1, clock=clock)
    stamps = []
    for _ in range(5):
        await bucket.acquire()
        stamps.append(clock.now)
    assert [round(b - a, 6) for a, b in itertools.pairwise(stamps)] == [0.1] * 4


async def test_token_bucket_pause_holds_every_caller() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(rate=100, burst=1, clock=clock)
    bucket.pause(5)
    assert bucket.available() == 0
    await asyncio.gather(bucket.acquire(), bucket.acquire())
    assert clock.now >= 1005


async def test_discovery_bucket_allows_two_then_the_per_minute_rate() -> None:
    clock = FakeClock(1000.0)
    limiter = RateLimiter(heavy_per_second=10, resource_per_second=10 / 60, clock=clock)
    assert limiter.can_afford("Resource-intensive", 2)
    await limiter.acquire("Resource-intensive")
    await limiter.acquire("Resource-intensive")
    assert clock.now == 1000  # a burst of two, for the meetings and webinars lists
    assert not limiter.can_afford("Resource-intensive", 2)
    clock.now += 12  # 10 a minute: two more every 12 s
    assert limiter.can_afford("Resource-intensive", 2)


def test_the_first_cycle_polls_everything_the_remaining_budget_pays_for() -> None:
    candidates = [meeting("a", 3), meeting("b", 2)]
    options = {"now": NOON, "base_interval": 10, "max_interval": 300, "discovery_calls": 2}
    normal = plan_cycle(candidates, remaining=100, **options)  # type: ignore[arg-type]
    assert normal.selected == ()  # 0.7 calls of allowance: not even discovery is paid for
    first = plan_cycle(candidates, remaining=100, bootstrap=True, **options)  # type: ignore[arg-type]
    assert set(first.selected) == {("meeting", "a"), ("meeting", "b")}
    assert first.planned_calls == 7 and first.interval == 300
    broke = plan_cycle(candidates, remaining=5, bootstrap=True, **options)  # type: ignore[arg-type]
    assert broke.planned_calls <= 5  # never beyond what is left
