"""Benchmark the request budget: calls per cycle against the minimum, then a simulated day.

Runs the exporter's Poller, ZoomClient, RateLimiter and DailyBudget against the in-process
simulator over loopback HTTP, with Zoom's per-second limits and daily cap enforced. One fake
clock drives both sides and jumps from one cycle to the next, so a day takes seconds to a
minute of wall time. Prints numbers; asserts nothing.

(a) `--cycles N` cycles with a realistic configuration (Pro limits, a budget of half the daily
    cap, a 60 s base interval), one line each: the calls the simulator counted beside the
    minimum, i.e. the discovery pages (ceil(live / 300) for each list made) + ceil(P / 10) for
    each meeting polled (P = the entries Zoom listed) + one call for each meeting that ended
    after discovery (it answers 404).
(b) A simulated day from 00:00:10 UTC to the reset: calls used against the budget, the 429s
    the simulator answered, the cycles, the effective interval, and how many cycles in a row a
    live meeting went without a poll.

`--extra-meetings M --participants P` keeps M more meetings of P participants live all day (the
scenario ends a meeting every 20 minutes; each extra one that ends is replaced).

Usage:
    python benchmarks/bench_budget.py [--cycles 20] [--budget 15000] [--interval 60]
    python benchmarks/bench_budget.py --extra-meetings 1 --participants 300
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
from pydantic import SecretStr

from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import Health
from exporter.polling.planner import pages_for
from exporter.polling.poller import Poller, PollSettings
from exporter.settings import BUDGET_SHARE
from exporter.simulator import RateLimits, Scenario, Simulator
from exporter.simulator.app import ENDPOINTS
from exporter.simulator.clock import ManualClock
from exporter.zoom.client import DISCOVERY_PAGE_SIZE, ZoomClient
from exporter.zoom.limits import PLANS, DailyBudget, RateLimiter

DAY = 86400.0
DAY_ONE = 20_776 * DAY  # 2026-11-19 00:00 UTC
START = DAY_ONE + 10.0
KINDS = ("meeting", "webinar")
API_ENDPOINTS = frozenset(ENDPOINTS) - {"oauth_token"}
QOS_ENDPOINTS = frozenset({"meeting_participants_qos", "webinar_participants_qos"})

Key = tuple[str, str]


class Unrendered(SnapshotStore):
    """Keeps each snapshot without rendering the exposition (not what is measured here)."""

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        self.health = health
        self.ready.set()


class Wire:
    """HTTP statuses of the API answers, from an aiohttp trace."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.config = aiohttp.TraceConfig()
        self.config.on_request_end.append(self._end)

    async def _end(
        self, _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.url.raw_path.startswith("/v2/"):
            self.statuses[params.response.status] += 1


@dataclass
class Config:
    plan: str
    cap: int
    budget: int
    interval: float
    max_interval: float
    heavy_rate: float
    concurrency: int
    extra_meetings: int
    participants: int
    seed: int


@dataclass
class Cycle:
    index: int
    start: float
    health: Health
    calls: int  # API calls the simulator counted (the token endpoint aside)
    discovery_minimum: int
    qos_minimum: int
    gone: int  # 404s: meetings that ended after discovery listed them
    rate_limited: int  # 429s
    polled: dict[Key, int]  # meetings polled this cycle -> entries listed
    live: set[Key]  # live meetings when the cycle started
    interval: float

    @property
    def minimum(self) -> int:
        return self.discovery_minimum + self.qos_minimum + self.gone


@dataclass
class Harness:
    config: Config
    clock: ManualClock
    sim: Simulator
    wire: Wire
    poller: Poller
    extra: list[str] = field(default_factory=list)  # UUIDs of the extra meetings

    def live(self) -> dict[str, set[Key]]:
        at = self.sim.scenario.now()
        return {
            kind: {(kind, str(m.id)) for m in self.sim.scenario.meetings(kind, at)}
            for kind in KINDS
        }

    def keep_extra_meetings(self) -> None:
        scenario = self.sim.scenario
        at = scenario.now()
        self.extra = [u for u in self.extra if scenario.resolve("meeting", u, at) is not None]
        while len(self.extra) < self.config.extra_meetings:
            added = scenario.add_meeting(
                "meeting", topic="All Hands", participants=self.config.participants
            )
            self.extra.append(str(added["uuid"]))

    async def cycle(self, index: int) -> Cycle:
        """Run one cycle now; then move the clock to the next start (start to start)."""
        self.keep_extra_meetings()
        start = self.clock.now
        live = self.live()
        before, statuses = self.sim.stats, self.wire.statuses.copy()
        report = await self.poller.run_cycle()
        after = self.sim.stats
        delta = {e: after[e] - before[e] for e in API_ENDPOINTS}
        answers = self.wire.statuses - statuses
        discovery = sum(
            pages_for(len(live[kind]), DISCOVERY_PAGE_SIZE)
            for kind in KINDS
            if delta[f"list_{kind}s"]
        )
        polled: dict[Key, int] = {
            (r.target.kind, r.target.meeting_id): r.listed
            for r in report.snapshot.meetings
            if r.polled_at >= start
        }
        interval = self.poller.effective_interval
        self.clock.now = max(self.clock.now, start + interval)
        return Cycle(
            index=index,
            start=start,
            health=report.health,
            calls=sum(delta.values()),
            discovery_minimum=discovery,
            qos_minimum=sum(pages_for(n) for n in polled.values()),
            gone=answers[404],
            rate_limited=answers[429],
            polled=polled,
            live=live["meeting"] | live["webinar"],
            interval=interval,
        )


@asynccontextmanager
async def harness(config: Config, start: float) -> AsyncIterator[Harness]:
    clock = ManualClock(start)
    plan = PLANS[config.plan]
    sim = Simulator(
        Scenario(seed=config.seed, clock=clock),
        client_id="bench",
        client_secret="bench-secret",
        account_id="bench-account",
        daily_limit=config.cap,
        rate_limits=RateLimits.for_plan(config.plan),
    )
    wire = Wire()
    async with sim, aiohttp.ClientSession(trace_configs=[wire.config]) as session:
        client = ZoomClient(
            session,
            api_url=sim.api_url,
            oauth_url=sim.oauth_url,
            account_id="bench-account",
            client_id="bench",
            client_secret=SecretStr("bench-secret"),
            clock=clock,
            limiter=RateLimiter(config.heavy_rate, plan.resource_intensive_per_minute / 60, clock),
            budget=DailyBudget(config.budget),
        )
        settings = PollSettings(
            interval=config.interval,
            max_interval=config.max_interval,
            concurrency=config.concurrency,
            max_staleness=DAY,
        )
        poller = Poller(client, Unrendered(), settings, clock=clock)
        yield Harness(config, clock, sim, wire, poller)


def extra_text(config: Config) -> str:
    if not config.extra_meetings:
        return ""
    return f", +{config.extra_meetings} meeting(s) of {config.participants} participants"


def clock_text(at: float) -> str:
    seconds = int(at % DAY)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


async def per_cycle(config: Config, cycles: int) -> None:
    print(
        f"(a) {cycles} cycles: plan {config.plan}, budget {config.budget} of {config.cap}, "
        f"interval {config.interval:g} s (max {config.max_interval:g} s){extra_text(config)}"
    )
    print(
        f"{'cycle':>5} {'time':>8} {'live':>4} {'polled':>6} {'deferred':>8} "
        f"{'discovery':>9} {'qos pages':>9} {'404':>3} {'minimum':>7} {'calls':>5} "
        f"{'exporter':>8} {'429':>3} {'next in':>7}"
    )
    equal = 0
    async with harness(config, START) as bench:
        for index in range(1, cycles + 1):
            c = await bench.cycle(index)
            equal += c.calls == c.minimum == c.health.cycle_requests
            print(
                f"{index:>5} {clock_text(c.start):>8} {len(c.live):>4} {len(c.polled):>6} "
                f"{c.health.meetings_deferred:>8} {c.discovery_minimum:>9} "
                f"{c.qos_minimum:>9} {c.gone:>3} {c.minimum:>7} {c.calls:>5} "
                f"{c.health.cycle_requests or 0:>8} {c.rate_limited:>3} {c.interval:>6.1f}s"
            )
    print(f"calls == minimum == the exporter's own count in {equal} of {cycles} cycles\n")


async def whole_day(config: Config) -> None:
    print(
        f"(b) a day from {clock_text(START)} UTC to the reset: plan {config.plan}, "
        f"budget {config.budget} of {config.cap}, interval {config.interval:g} s "
        f"(max {config.max_interval:g} s), heavy rate {config.heavy_rate:g}/s"
        f"{extra_text(config)}"
    )
    began = time.perf_counter()
    cycles: list[Cycle] = []
    async with harness(config, START) as bench:
        while bench.clock.now < DAY_ONE + DAY:
            cycles.append(await bench.cycle(len(cycles) + 1))
        wall = time.perf_counter() - began
        hits = bench.sim.limit_hits
    waiting: dict[Key, int] = {}
    longest: Counter[Key] = Counter()
    size: dict[Key, int] = {}
    for c in cycles:
        waiting = {k: 0 if k in c.polled else waiting.get(k, 0) + 1 for k in c.live}
        for key, n in waiting.items():
            longest[key] = max(longest[key], n)
        size.update(c.polled)
    calls = sum(c.calls for c in cycles)
    polling = [c.interval for c in cycles if c.health.state == "ok"]
    states = Counter(c.health.state for c in cycles)
    worst = max(longest.values(), default=0)
    worst_sizes = sorted({size.get(k, 0) for k, n in longest.items() if n == worst})
    waits = sorted(longest.values())
    print(f"calls used:            {calls} of a budget of {config.budget} (cap {config.cap})")
    minimum = sum(c.minimum for c in cycles)
    print(f"minimum:               {minimum} (sum over cycles); {calls - minimum} calls over it")
    print(f"429 Daily-limit:       {hits['Daily-limit']}")
    print(
        f"429 QPS:               {hits['QPS']} (in {sum(c.rate_limited > 0 for c in cycles)}"
        f" cycles; max {max(c.calls for c in cycles)} calls in one cycle)"
    )
    print(f"404 (ended meetings):  {sum(c.gone for c in cycles)}")
    print(f"cycles:                {len(cycles)} {dict(states)}")
    print(
        f"effective interval:    mean {statistics.fmean(polling):.1f} s, "
        f"min {min(polling):.1f} s, max {max(polling):.1f} s"
    )
    print(f"meetings deferred:     {sum(c.health.meetings_deferred for c in cycles)} in all")
    which = f" (meetings listing {worst_sizes} entries)" if worst else ""
    print(
        f"staleness:             max {worst} cycles in a row without a poll{which}; "
        f"median of the per-meeting maxima {statistics.median(waits):g}; {len(longest)} meetings"
    )
    print(f"wall time:             {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20, help="(a) cycles; 0 skips (a)")
    parser.add_argument("--no-day", action="store_true", help="skip (b), the simulated day")
    parser.add_argument("--plan", default="pro", choices=sorted(PLANS))
    parser.add_argument("--cap", type=int, help="the account's daily cap (default: the plan's)")
    parser.add_argument("--budget", type=int, help="the exporter's budget (default: half the cap)")
    parser.add_argument("--interval", type=float, default=60.0, help="base poll interval, s")
    parser.add_argument("--max-interval", type=float, default=300.0, help="longest interval, s")
    parser.add_argument("--heavy-rate", type=float, help="Heavy calls/s (default: the plan's)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--extra-meetings", type=int, default=0)
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    plan = PLANS[args.plan]
    cap = args.cap or plan.daily_cap
    config = Config(
        plan=args.plan,
        cap=cap,
        budget=args.budget or math.floor(cap * BUDGET_SHARE),
        interval=args.interval,
        max_interval=max(args.interval, args.max_interval),
        heavy_rate=args.heavy_rate or plan.heavy_per_second,
        concurrency=args.concurrency,
        extra_meetings=args.extra_meetings,
        participants=args.participants,
        seed=args.seed,
    )
    if args.cycles > 0:
        asyncio.run(per_cycle(config, args.cycles))
    if not args.no_day:
        asyncio.run(whole_day(config))


if __name__ == "__main__":
    main()
