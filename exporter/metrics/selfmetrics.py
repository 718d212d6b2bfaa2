"""The exporter's own metrics, from a live registry read at every scrape.

Counters live as long as the daemon (they never go back, whatever is reloaded); the process,
GC and platform collectors are prometheus_client's own. The rendered lines follow the cached
QoS body of each scrape.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, cast

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter import build as build_info
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import STATES, Health
from exporter.zoom.auth import TokenProvider
from exporter.zoom.limits import HEAVY, RESOURCE_INTENSIVE
from exporter.zoom.telemetry import ApiTelemetry

REFRESH: Final = " Refreshed each poll cycle."


class AccountView(Protocol):
    """What the self-metrics read of one account."""

    @property
    def name(self) -> str: ...

    @property
    def health(self) -> Health: ...

    @property
    def telemetry(self) -> ApiTelemetry: ...

    @property
    def token_expiry(self) -> float | None: ...

    def overdue(self) -> float | None:
        """Seconds since the account's last publish if its polling looks stuck, else None."""


class DaemonView(Protocol):
    """What the self-metrics read from the running daemon: its accounts, and its reloads."""

    @property
    def config_reload(self) -> tuple[bool, float | None]: ...

    @property
    def state_file_writes(self) -> tuple[int, int] | None: ...

    def accounts(self) -> Sequence[AccountView]: ...


@dataclass
class StoreView:
    """The DaemonView of a store and a client's telemetry without a daemon (tests, benchmarks):
    one account (the snapshot's), no reload has happened, and the token is the client's, if
    any."""

    store: SnapshotStore
    telemetry: ApiTelemetry
    token: TokenProvider | None = None
    config_reload: tuple[bool, float | None] = (True, None)
    state_file_writes: tuple[int, int] | None = None  # no state file

    @property
    def name(self) -> str:
        return self.store.snapshot.account

    @property
    def health(self) -> Health:
        return self.store.health

    @property
    def token_expiry(self) -> float | None:
        return self.token.expires_at if self.token is not None else None

    def overdue(self) -> float | None:
        return self.store.overdue()

    def accounts(self) -> Sequence[AccountView]:
        return (self,)


Values = Iterable[tuple[str, float | None]]  # (account, value); None: no sample


class ExporterCollector:
    """The exporter's own health, read live at each scrape: reachability of Zoom, cycle timing,
    API calls, the budget and the planner per account; reloads, tasks, build.

        zoom_up{account="default"} 1
        zoom_exporter_state{account="default",state="ok"} 1
        zoom_api_requests_total{account="default",code="200",endpoint="meeting_participants_qos"} 7
    """

    def __init__(self, view: DaemonView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view
        accounts = [(a.name, a, a.health, a.overdue()) for a in view.accounts()]
        yield from _gauges(
            "zoom_up",
            "1 if the last poll cycle reached the Zoom API, 0 if it failed or if no cycle has "
            "published for longer than 3 intervals plus 30 s." + REFRESH,
            ((n, 1.0 if h.up and o is None else 0.0) for n, _a, h, o in accounts),
            always=True,
        )
        yield from _gauges(
            "zoom_exporter_publish_overdue_seconds",
            "Seconds since the last cycle published, present only while that is longer than 3 "
            "intervals plus 30 s (polling is stuck).",
            ((n, o) for n, _a, _h, o in accounts),
        )
        yield from _gauges(
            "zoom_last_successful_poll_timestamp_seconds",
            "Unix time at which the last successful poll cycle ended." + REFRESH,
            ((n, h.last_success_timestamp) for n, _a, h, _o in accounts),
        )
        yield from _gauges(
            "zoom_poll_duration_seconds",
            "Duration of the last poll cycle in seconds." + REFRESH,
            ((n, h.poll_duration_seconds) for n, _a, h, _o in accounts),
        )
        requests = CounterMetricFamily(
            "zoom_api_requests",
            "Zoom API calls by endpoint and HTTP status code (error: no answer)." + REFRESH,
            labels=["account", "endpoint", "code"],
        )
        for name, account, _h, _o in accounts:
            for endpoint, code, count in account.telemetry.requests.snapshot():
                requests.add_metric([name, endpoint, code], count)
        yield requests
        yield from _durations(accounts)
        yield from _health(accounts)
        yield from _daemon(view, accounts)
        build = InfoMetricFamily("zoom_exporter_build", "Exporter build information; always 1.")
        build.add_metric(
            [],
            {
                "version": build_info.VERSION,
                "revision": build_info.revision(),
                "pythonversion": platform.python_version(),
            },
        )
        yield build


RATE_LIMIT_PAIRS = tuple(
    (category, kind) for category in (HEAVY, RESOURCE_INTENSIVE) for kind in ("QPS", "Daily-limit")
)
Accounts = list[tuple[str, AccountView, Health, float | None]]


def _gauges(
    name: str, documentation: str, values: Values, *, always: bool = False
) -> Iterator[Metric]:
    """A gauge by account, for the accounts that have a value; no family if none has one
    (unless `always`)."""
    family = GaugeMetricFamily(name, documentation, labels=["account"])
    for account, value in values:
        if value is not None:
            family.add_metric([account], value)
    if family.samples or always:
        yield family


def _durations(accounts: Accounts) -> Iterator[Metric]:
    """Each account's call-duration histogram, as one family with the account label."""
    merged: Metric | None = None
    for name, account, _h, _o in accounts:
        for metric in account.telemetry.durations.collect():
            if merged is None:
                merged = Metric(metric.name, metric.documentation, metric.type)
            merged.samples.extend(
                sample._replace(labels={"account": name, **sample.labels})
                for sample in metric.samples
            )
    if merged is not None:
        yield merged


def _health(accounts: Accounts) -> Iterator[Metric]:
    """Rate limits, the daily budget and the planner, the exporter's state (per account)."""
    state = GaugeMetricFamily(
        "zoom_exporter_state",
        "What the last poll cycle ran into: 1 for the current state, 0 for the others." + REFRESH,
        labels=["account", "state"],
    )
    for label, _a, snap, _o in accounts:
        if snap.state is not None:
            for name in STATES:
                state.add_metric([label, name], 1.0 if name == snap.state else 0.0)
    if state.samples:
        yield state
    yield from _gauges(
        "zoom_exporter_poll_interval_seconds",
        "Effective seconds between poll cycles, stretched so the daily budget lasts.",
        ((n, h.poll_interval_seconds) for n, _a, h, _o in accounts),
    )
    budgets = [(n, h.budget) for n, _a, h, _o in accounts]
    yield from _gauges(
        "zoom_exporter_daily_budget",
        "This exporter's daily Zoom API request budget (its share of the account's cap).",
        ((n, b.budget if b is not None else None) for n, b in budgets),
    )
    yield from _gauges(
        "zoom_exporter_daily_budget_remaining",
        "Requests left today: the lower of our own count and Zoom's X-RateLimit-Remaining.",
        ((n, b.remaining if b is not None else None) for n, b in budgets),
    )
    yield from _gauges(
        "zoom_exporter_daily_budget_reset_timestamp_seconds",
        "Unix time of the next daily reset (00:00 UTC).",
        ((n, b.reset_timestamp if b is not None else None) for n, b in budgets),
    )
    yield from _gauges(
        "zoom_exporter_paused_until_timestamp_seconds",
        "Unix time until which Zoom API calls are paused (daily limit or budget spent).",
        ((n, h.paused_until) for n, _a, h, _o in accounts),
    )
    yield from _gauges(
        "zoom_exporter_last_cycle_requests",
        "Zoom API requests the last poll cycle made.",
        ((n, h.cycle_requests) for n, _a, h, _o in accounts),
    )
    yield from _gauges(
        "zoom_exporter_last_cycle_planned_requests",
        "Requests the planner expected the last cycle to make (discovery pages plus, per "
        "meeting, ceil(participants / 10)).",
        ((n, h.planned_requests) for n, _a, h, _o in accounts),
    )
    yield from _gauges(
        "zoom_exporter_meetings_deferred",
        "Meetings left out of the last cycle to stay within the daily budget.",
        ((n, h.meetings_deferred if h.state is not None else None) for n, _a, h, _o in accounts),
    )
    limited = CounterMetricFamily(
        "zoom_api_rate_limited",
        "HTTP 429 answers from Zoom by rate-limit category and X-RateLimit-Type." + REFRESH,
        labels=["account", "category", "type"],
    )
    retries = CounterMetricFamily(
        "zoom_api_retries",
        "Zoom API calls made again, by endpoint and reason." + REFRESH,
        labels=["account", "endpoint", "reason"],
    )
    dropped = CounterMetricFamily(
        "zoom_exporter_items_dropped",
        "Records, participants or meetings left out of the snapshot, by reason (schema: not "
        "the expected shape; build, render: failed to build or render).",
        labels=["account", "reason"],
    )
    truncated = CounterMetricFamily(
        "zoom_exporter_values_truncated",
        "Strings from Zoom cut to 256 characters (label values among them).",
        labels=["account"],
    )
    for label, account, snap, _o in accounts:
        telemetry = account.telemetry
        # The known pairs start at 0, so the first 429 is an increase Prometheus can see.
        counts = {pair: 0 for pair in RATE_LIMIT_PAIRS} if snap.state is not None else {}
        counts.update({(c, kind): n for c, kind, n in telemetry.rate_limited.snapshot()})
        for (category, kind), count in sorted(counts.items()):
            limited.add_metric([label, category, kind], count)
        for endpoint, reason, count in telemetry.retries.snapshot():
            retries.add_metric([label, endpoint, reason], count)
        for reason, count in telemetry.dropped.snapshot():
            dropped.add_metric([label, reason], count)
        truncated.add_metric([label], telemetry.truncated)
    yield from (limited, retries, dropped, truncated)
    yield from _gauges(
        "zoom_exporter_meetings_not_live",
        "Configured meetings and webinars that are not live, left out without a call.",
        ((n, h.meetings_not_live if h.state is not None else None) for n, _a, h, _o in accounts),
    )


def _daemon(view: DaemonView, accounts: Accounts) -> Iterator[Metric]:
    """What the daemon keeps for its whole life: cycles, reloads, the tokens, its tasks."""
    cycles = CounterMetricFamily(
        "zoom_exporter_poll_cycles",
        "Poll cycles completed since the exporter started.",
        labels=["account"],
    )
    for name, _a, health, _o in accounts:
        cycles.add_metric([name], health.complete_cycles)
    yield cycles
    ok, when = view.config_reload
    yield GaugeMetricFamily(
        "zoom_exporter_config_last_reload_successful",
        "1 if the last configuration reload (SIGHUP or /-/reload) succeeded, 0 if it failed.",
        value=1.0 if ok else 0.0,
    )
    if when is not None:
        yield GaugeMetricFamily(
            "zoom_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload.",
            value=when,
        )
    writes = view.state_file_writes
    if writes is not None:
        family = CounterMetricFamily(
            "zoom_exporter_state_file_writes",
            "Writes of the state file (--storage.path) by result: while they fail, a restart "
            "forgets the day's spend and pauses.",
            labels=["result"],
        )
        family.add_metric(["ok"], writes[0])
        family.add_metric(["failed"], writes[1])
        yield family
    yield from _gauges(
        "zoom_exporter_token_expiry_timestamp_seconds",
        "Unix time at which the current Zoom access token expires.",
        ((n, a.token_expiry) for n, a, _h, _o in accounts),
    )
    yield GaugeMetricFamily(
        "zoom_exporter_asyncio_tasks",
        "asyncio tasks alive in the exporter (a leak shows here).",
        value=len(asyncio.all_tasks()),
    )


class SelfMetrics:
    """A registry of the exporter's own metrics, rendered for a scrape (about 10 KB and 0.7 ms:
    cheap enough for the event loop). A render is reused for up to `MAX_AGE` seconds while
    nothing that matters changed (the same cycle's health, the same reload outcome, publishing
    still on time), so a flood of scrapes costs the loop next to nothing and a new cycle, a
    reload or a stuck poll shows at once."""

    MAX_AGE: Final = 1.0  # seconds

    def __init__(self, view: DaemonView, clock: Callable[[], float] = time.monotonic) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ExporterCollector(view))
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self._view = view
        self._clock = clock
        self._rendered: dict[bool, tuple[float, tuple[object, ...], bytes]] = {}

    def render(self, *, openmetrics: bool) -> bytes:
        """The text format, or OpenMetrics ending in `# EOF` (the last part of a scrape)."""
        now = self._clock()
        view = self._view
        key = (
            tuple((a.name, a.health, a.overdue() is None) for a in view.accounts()),
            view.config_reload,
        )
        cached = self._rendered.get(openmetrics)
        if cached is not None and now - cached[0] < self.MAX_AGE and cached[1] == key:
            return cached[2]
        render = cast(
            Callable[[CollectorRegistry], bytes],
            generate_openmetrics if openmetrics else generate_latest,
        )
        body = render(self.registry)
        self._rendered[openmetrics] = (now, key, body)
        return body
