"""A simulated day on an accelerated clock: the budget planner against the simulator over HTTP.

One clock drives everything: the Scenario (its world advances with the clock), the Simulator's
rate-limit windows and daily quota (they read the scenario clock), the ZoomClient, its
RateLimiter and the Poller. Cycles run start to start as `Poller.run_forever` runs them; time
jumps from one cycle to the next, so a whole day takes seconds.

The account's daily cap is shared: another app on the account has already spent most of day
1's cap, so on day 1 the exporter lives on what Zoom's X-RateLimit-Remaining leaves it (ROOM
calls), not on its own share (BUDGET). That squeeze makes the planner stretch the interval to
its maximum and defer meetings all day; at 00:00 UTC the cap resets, only the exporter's own
budget binds, and the interval shrinks back. (With its own share as the only limit, day 2 would
look exactly like day 1: the planner spends any budget evenly until the reset.)
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from conftest import FakeClock, zoom_client
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import Health
from exporter.polling.planner import STARVING_AFTER, pages_for
from exporter.polling.poller import Poller, PollSettings
from exporter.simulator import RateLimits, Scenario, Simulator
from exporter.simulator.app import ENDPOINTS, app_state
from exporter.zoom.client import encode_meeting_id
from exporter.zoom.limits import DailyBudget, RateLimiter

DAY = 86400.0
DAY_ONE = 20_776 * DAY  # Thursday 2026-11-19 00:00 UTC
START = DAY_ONE + 10.0  # the exporter starts shortly after midnight
MIDNIGHT = DAY_ONE + DAY  # the reset at the end of day 1
CYCLES_ON_DAY_TWO = 6

CAP = 10_000  # the account's daily cap (Zoom's; the simulator enforces it)
BUDGET = 8_000  # the exporter's own share of it (DailyBudget)
OTHER_APP = 7_000  # day 1 calls another app on the account made before the exporter started
ROOM = min(BUDGET, CAP - OTHER_APP)  # what the exporter may spend on day 1: 3,000
BASE_INTERVAL = 30.0
MAX_INTERVAL = 120.0
SEED = 7

# Every AD_HOC_EVERY cycles of day 1 a small ad-hoc meeting starts between two cycles, and
# AD_HOC_CYCLES cycles later it ends in the middle of one: after discovery listed it and after
# the cycle's first QoS call, so a poll of it later in that cycle answers 404.
AD_HOC_EVERY = 30
AD_HOC_CYCLES = 5
AD_HOC_ENDS_AFTER = 0.05  # s into the cycle: the second Heavy call waits 0.1 s for its token

# Freshness bound, in cycles. The planner (exporter/budget.py) promises: a meeting deferred
# STARVING_AFTER cycles in a row goes first (longest-deferred first), nobody overtakes it while
# it waits for credit, and unspent allowance carries over. On day 1 a cycle's allowance is
# ROOM / DAY * MAX_INTERVAL ~ 4.2 calls; discovery takes 2, so meetings get >= 2.1 calls a
# cycle. At most 5 meetings are live (4, and an ad-hoc one), <= 10 pages in all, so a starving
# meeting waits at most ceil(10 / 2.1) = 5 cycles for the others ahead of it and its own pages.
# Polled in cycle i, a meeting is polled again by cycle i + STARVING_AFTER + 5.
REFRESH_EVERY = STARVING_AFTER + 5
QOS_ENDPOINTS = frozenset({"meeting_participants_qos", "webinar_participants_qos"})
DISCOVERY_ENDPOINTS = frozenset({"list_meetings", "list_webinars"})
API_ENDPOINTS = frozenset(ENDPOINTS) - {"oauth_token"}

Key = tuple[str, str]  # (kind, meeting id) as the snapshot labels a meeting


class EventClock(FakeClock):
    """A FakeClock that runs scheduled actions as soon as a sleep carries time past them: the
    world changes between one call of a cycle and the next."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self._due: list[tuple[float, Callable[[], None]]] = []

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._due.append((when, action))

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        ready = [action for when, action in self._due if when <= self.now]
        self._due = [(when, action) for when, action in self._due if when > self.now]
        for action in ready:
            action()


class LatestSnapshot(SnapshotStore):
    """Keeps the snapshot without rendering it (rendering 700 cycles would dominate the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: Snapshot | None = None

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        self.latest, self.health = snapshot, health
        self.ready.set()


class Wire:
    """The API answers as they came over the wire (an aiohttp trace): statuses, 404 paths."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.not_found: list[str] = []  # raw paths that answered 404
        self.failures = 0
        self.config = aiohttp.TraceConfig()
        self.config.on_request_end.append(self._end)
        self.config.on_request_exception.append(self._failed)

    async def _end(
        self, _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.url.raw_path.startswith("/v2/"):
            self.statuses[params.response.status] += 1
            if params.response.status == 404:
                self.not_found.append(params.url.raw_path)

    async def _failed(
        self,
        _: aiohttp.ClientSession,
        __: SimpleNamespace,
        ___: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        self.failures += 1


@dataclass
class Cycle:
    """One cycle as the test saw it, beside the exporter's own snapshot."""

    start: float
    snapshot: Snapshot
    health: Health
    calls: Counter[str]  # simulator-counted requests per endpoint during the cycle
    statuses: Counter[int]  # API answers by HTTP status during the cycle
    not_found: list[str]  # raw paths of the 404s
    live_before: dict[Key, str]  # the scenario's live meetings (-> QoS path) at the start
    live_after: dict[Key, str]  # ... and at the end
    interval: float  # the poller's effective interval after the cycle

    @property
    def api_calls(self) -> int:
        return sum(n for endpoint, n in self.calls.items() if endpoint in API_ENDPOINTS)

    @property
    def discovery_calls(self) -> int:
        return sum(self.calls[e] for e in DISCOVERY_ENDPOINTS)

    @property
    def polled(self) -> dict[Key, int]:
        """Meetings polled this cycle and the entries Zoom listed for each."""
        return {
            (r.target.kind, r.target.meeting_id): r.listed
            for r in self.snapshot.meetings
            if r.polled_at >= self.start
        }

    @property
    def deferred(self) -> set[Key]:
        """Live meetings the cycle made no call for (neither polled nor found gone)."""
        gone = set(self.not_found)
        return {k for k, path in self.live_before.items() if path not in gone} - self.polled.keys()

    @property
    def ended(self) -> set[Key]:
        """Meetings live when the cycle started that ended before it was over."""
        return set(self.live_before) - set(self.live_after)

    @property
    def day_one(self) -> bool:
        return self.start < MIDNIGHT


@dataclass
class Day:
    cycles: list[Cycle] = field(default_factory=list)
    day_one_quota: int = 0  # the simulator's count of day 1 requests (every app's)
    wall: float = 0.0


def live_meetings(scenario: Scenario) -> dict[Key, str]:
    """Live meetings now, each with the raw path of its participants QoS listing."""
    at = scenario.now()
    return {
        (kind, str(m.id)): f"/v2/metrics/{kind}s/{encode_meeting_id(m.uuid)}/participants/qos"
        for kind in ("meeting", "webinar")
        for m in scenario.meetings(kind, at)
    }


def counts(sim: Simulator) -> Counter[str]:
    return Counter({k: v for k, v in sim.stats.items() if k != "total"})


def pro_limiter(clock: FakeClock) -> RateLimiter:
    heavy, per_minute = RateLimits.PRO.heavy_per_second, RateLimits.PRO.resource_per_minute
    assert heavy is not None and per_minute is not None
    return RateLimiter(heavy, per_minute / 60, clock)


def pro_simulator(clock: FakeClock) -> Simulator:
    return Simulator(
        Scenario(seed=SEED, clock=clock),
        client_id="c",
        client_secret="s",
        account_id="a",
        daily_limit=CAP,
        rate_limits=RateLimits.PRO,
    )


def budgeted_poller(
    session: aiohttp.ClientSession,
    sim: Simulator,
    clock: FakeClock,
    budget: int | None,
    **options: Any,
) -> Poller:
    """The exporter on `clock`: Pro pacing, an optional daily budget, no rendering."""
    client = zoom_client(
        session,
        sim.api_url,
        sim.oauth_url,
        limiter=pro_limiter(clock),
        budget=DailyBudget(budget) if budget is not None else None,
        clock=clock,
    )
    return Poller(client, LatestSnapshot(), PollSettings(**options), clock=clock)


@pytest.fixture
async def day() -> AsyncIterator[tuple[Day, Simulator]]:
    """Run the exporter from 00:00:10 on day 1 until a few cycles into day 2."""
    began = time.perf_counter()
    clock = EventClock(START)
    sim = pro_simulator(clock)
    wire = Wire()
    result = Day()
    async with sim, aiohttp.ClientSession(trace_configs=[wire.config]) as session:
        quota = app_state(sim.app).quota
        quota.used_today(clock.now)  # today's count starts ...
        quota.used += OTHER_APP  # ... with what the other app has spent
        poller = budgeted_poller(
            session,
            sim,
            clock,
            BUDGET,
            interval=BASE_INTERVAL,
            max_interval=MAX_INTERVAL,
            max_staleness=DAY,  # deferred meetings keep their last reading in the snapshot
        )
        ad_hoc = ""
        while sum(c.start >= MIDNIGHT for c in result.cycles) < CYCLES_ON_DAY_TWO:
            start, index = clock.now, len(result.cycles)
            if start < MIDNIGHT - DAY / 24 and index % AD_HOC_EVERY == 1:
                ad_hoc = str(sim.scenario.add_meeting(participants=4)["uuid"])
            if ad_hoc and index % AD_HOC_EVERY == 1 + AD_HOC_CYCLES:

                def end(uuid: str = ad_hoc) -> None:
                    with contextlib.suppress(KeyError):  # the scenario may have rotated it out
                        sim.scenario.end_meeting(uuid, "meeting")

                clock.at(start + AD_HOC_ENDS_AFTER, end)
                ad_hoc = ""
            live = live_meetings(sim.scenario)
            calls, statuses, not_found = counts(sim), wire.statuses.copy(), len(wire.not_found)
            report = await poller.run_cycle()
            result.cycles.append(
                Cycle(
                    start=start,
                    snapshot=report.snapshot,
                    health=report.health,
                    calls=counts(sim) - calls,
                    statuses=wire.statuses - statuses,
                    not_found=wire.not_found[not_found:],
                    live_before=live,
                    live_after=live_meetings(sim.scenario),
                    interval=poller.effective_interval,
                )
            )
            assert wire.failures == 0
            following = start + poller.effective_interval  # start to start, like run_forever
            if following >= MIDNIGHT > start:
                assert clock.now < MIDNIGHT  # the cycle did not straddle the reset
                result.day_one_quota = sim.quota_used
            clock.now = max(clock.now, following)  # limiter sleeps may have passed it already
        result.wall = time.perf_counter() - began
        yield result, sim


def test_a_simulated_day_stays_within_the_budget_and_the_rate_limits(
    day: tuple[Day, Simulator],
) -> None:
    run, sim = day
    one = [c for c in run.cycles if c.day_one]
    two = [c for c in run.cycles if not c.day_one]
    assert len(two) == CYCLES_ON_DAY_TWO
    assert len(one) > DAY / MAX_INTERVAL * 0.95  # cycles kept coming all day

    # The exporter's day 1 calls, counted by the simulator two ways, fit what the day allowed;
    # and the planner did spend it (budget left unused is polling left undone).
    calls_day_one = sum(c.api_calls for c in one)
    assert calls_day_one == run.day_one_quota - OTHER_APP
    assert 0.95 * ROOM <= calls_day_one <= ROOM <= BUDGET
    assert sim.limit_hits == {"QPS": 0, "Daily-limit": 0}
    heavy, per_minute = sim.rate_limits.heavy_per_second, sim.rate_limits.resource_per_minute
    assert heavy is not None and per_minute is not None
    assert sim.peak_rate("Heavy") <= heavy
    assert sim.peak_rate("Resource-intensive") <= per_minute

    for cycle in run.cycles:
        snapshot, health = cycle.snapshot, cycle.health
        assert health.errors == ()
        # Only 200s, and 404s from meetings that ended after discovery: no 401, 429 or 5xx.
        assert set(cycle.statuses) <= {200, 404}
        assert sum(cycle.statuses.values()) == cycle.api_calls  # the trace agrees
        # The exporter's own count agrees with the simulator's.
        assert cycle.api_calls == health.cycle_requests
        # No wasted call: a discovery list fits one page (one call per kind at most), a polled
        # meeting costs ceil(listed / 10) pages, and a meeting that ended after discovery
        # listed it costs the one call that answered 404 (its first page).
        assert all(cycle.calls[e] <= 1 for e in DISCOVERY_ENDPOINTS)
        gone = cycle.statuses[404]
        if cycle.discovery_calls:
            ended = Counter(cycle.live_before[k] for k in cycle.ended)
            assert Counter(cycle.not_found) <= ended  # one 404 per meeting that ended
        qos_minimum = sum(pages_for(listed) for listed in cycle.polled.values())
        assert sum(cycle.calls[e] for e in QOS_ENDPOINTS) == qos_minimum + gone
        assert cycle.api_calls == cycle.discovery_calls + qos_minimum + gone
        if cycle.discovery_calls:
            # Fresh discovery: every live meeting was polled, found gone or deferred, and no
            # meeting that is not live is exported.
            exported = {(r.target.kind, r.target.meeting_id) for r in snapshot.meetings}
            assert exported <= cycle.live_before.keys()
            assert len(cycle.deferred) == health.meetings_deferred
    gone_total = sum(c.statuses[404] for c in run.cycles)
    assert gone_total > 0  # the mid-cycle ends did cost calls, and they were counted above

    # Freshness: a live meeting is polled at least every REFRESH_EVERY cycles; and the
    # deferral path ran for every meeting that lived long enough to need it.
    waiting: dict[Key, int] = {}
    longest_wait: Counter[Key] = Counter()
    deferred: Counter[Key] = Counter()
    lifetime: Counter[Key] = Counter()
    listed: dict[Key, int] = {}
    for cycle in one:
        listed.update(cycle.polled)
        # The premises of REFRESH_EVERY: at most 5 live meetings, 10 pages in all.
        assert len(cycle.live_before) <= 5
        assert sum(pages_for(listed.get(k, 0)) for k in cycle.live_before) <= 10
        polled = cycle.polled.keys()
        waiting = {k: 0 if k in polled else waiting.get(k, 0) + 1 for k in cycle.live_before}
        for key, cycles in waiting.items():
            longest_wait[key] = max(longest_wait[key], cycles)
            lifetime[key] += 1
        if cycle.health.state == "ok":  # not paused: what was not called for was deferred
            deferred.update(cycle.deferred)
    assert max(longest_wait.values()) < REFRESH_EVERY
    assert sum(c.health.meetings_deferred for c in one) == sum(deferred.values()) > 0
    long_lived = [k for k, n in lifetime.items() if n >= 2 * REFRESH_EVERY]
    assert len(long_lived) > 10  # the scenario's meetings come and go all day
    assert all(deferred[k] > 0 for k in long_lived)

    # Day 1: the interval is stretched to the maximum nearly all day. The budget may run out
    # in the last cycle before the reset (the planner spends what is left rather than keep it).
    polling = [c for c in one if c.health.state == "ok"]
    assert {c.health.state for c in one} <= {"ok", "budget_exhausted"}
    assert all(MIDNIGHT - c.start < MAX_INTERVAL for c in one if c not in polling)
    assert sum(c.interval == MAX_INTERVAL for c in polling) > 0.9 * len(polling)
    assert min(c.interval for c in polling) > BASE_INTERVAL

    # After midnight: the budget is back, the interval shrinks and nothing is deferred.
    last, first = one[-1].health.budget, two[0].health.budget
    assert last is not None and first is not None
    assert last.remaining < MAX_INTERVAL / DAY * ROOM + 5
    assert first.remaining == BUDGET - two[0].api_calls
    assert first.reset_timestamp == MIDNIGHT + DAY
    assert all(c.health.state == "ok" for c in two)
    assert all(c.interval < MAX_INTERVAL for c in two)
    assert all(c.health.meetings_deferred == 0 for c in two)
    assert all(c.polled.keys() == c.live_before.keys() for c in two)

    print(
        f"\nsimulated day: {len(run.cycles)} cycles ({len(one)} on day 1); "
        f"{calls_day_one} calls on day 1 of {ROOM} allowed (budget {BUDGET}, cap {CAP}, "
        f"other app {OTHER_APP}), {sum(c.api_calls for c in two)} after midnight; "
        f"max {max(c.api_calls for c in run.cycles)} calls in a cycle; {gone_total} 404s; "
        f"{sum(deferred.values())} deferrals; longest wait {max(longest_wait.values())} "
        f"cycles (bound {REFRESH_EVERY - 1}); interval day 1 "
        f"{min(c.interval for c in polling):.1f}-{max(c.interval for c in polling):.1f} s, "
        f"after midnight {min(c.interval for c in two):.1f}-{max(c.interval for c in two):.1f} s"
        f"; {run.wall:.1f} s wall"
    )


async def test_a_fresh_start_on_a_small_budget_discovers_meetings_at_once() -> None:
    # 3,000 calls a day spent evenly are 1.04 calls per 30 s cycle, less than the 2 discovery
    # calls. Before the fix, no meeting was known, so the plan cost nothing, carried nothing
    # over and kept the base interval, and discovery waited until 11:30 UTC (when
    # 3,000 / seconds left * 30 >= 2). Now the first cycle discovers, and unspent allowance
    # builds up to pay for later discoveries.
    clock = FakeClock(START)
    async with pro_simulator(clock) as sim, aiohttp.ClientSession() as session:
        poller = budgeted_poller(
            session, sim, clock, 3_000, interval=BASE_INTERVAL, max_interval=MAX_INTERVAL
        )
        first_hour: list[Snapshot] = []
        while clock.now < START + 3600:
            start = clock.now
            first_hour.append(await poller.run_cycle())
            clock.now = max(clock.now, start + poller.effective_interval)
    assert any(s.snapshot.meetings for s in first_hour), (
        f"{len(first_hour)} cycles in the first hour, "
        f"{sum(s.health.cycle_requests or 0 for s in first_hour)} calls, no meeting discovered"
    )


async def test_a_cycle_of_more_than_ten_heavy_calls_stays_under_the_per_second_limit() -> None:
    # One call at a time (concurrency 1), so the simulator sees each call exactly when the
    # limiter released it: any 429 is the limiter's own doing.
    clock = FakeClock(START)
    async with pro_simulator(clock) as sim, aiohttp.ClientSession() as session:
        # 10 pages, and the other meetings: more than 10 Heavy calls in a row.
        sim.scenario.add_meeting(participants=100)
        # No daily budget: every meeting is polled.
        poller = budgeted_poller(session, sim, clock, None, interval=60.0, concurrency=1)
        report = await poller.run_cycle()
    assert report.health.errors == ()
    assert max(len(m.participants) for m in report.snapshot.meetings) == 100
    assert sim.limit_hits["QPS"] == 0
    assert poller._client.retries.snapshot() == ()
