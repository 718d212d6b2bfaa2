"""The background poll loop: discover, fetch every meeting's participant QoS, publish a snapshot.

Cycles never overlap (one lock), meetings are fetched with bounded concurrency, and each cycle
ends by swapping one new immutable Snapshot (pre-rendered) into the `SnapshotStore`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from prometheus_client import ProcessCollector

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.metrics.snapshot import (
    UP_STATES,
    BudgetReading,
    MeetingReading,
    Snapshot,
    meeting_reading,
)
from exporter.polling.planner import Candidate, can_discover, pages_for, plan_cycle
from exporter.polling.targets import MeetingTarget, discovered_target, merge_targets
from exporter.privacy import DEFAULT_PRIVACY, ParticipantPrivacy
from exporter.zoom.client import (
    DISCOVERY_PAGE_SIZE,
    OAUTH_ENDPOINT,
    ZoomAPIError,
    ZoomAuthError,
    ZoomClient,
    ZoomError,
    ZoomPausedError,
    ZoomTokenError,
)
from exporter.zoom.limits import RESOURCE_INTENSIVE, seconds_until_reset
from exporter.zoom.models import KINDS, Kind

log = logging.getLogger(__name__)

UNLIMITED = 10**12  # the remaining budget when no daily budget is set


class Publisher(Protocol):
    """Where each cycle's snapshot goes (the metrics layer's SnapshotStore)."""

    @property
    def snapshot(self) -> Snapshot: ...

    async def publish(self, snapshot: Snapshot) -> None: ...


@dataclass
class CycleOutcome:
    readings: list[MeetingReading] = field(default_factory=list)
    successes: int = 0
    failures: int = 0
    token_error: ZoomTokenError | None = None
    paused: ZoomPausedError | None = None
    errors: list[str] = field(default_factory=list)
    logged: set[str] = field(default_factory=set)  # errors the client has logged already

    @property
    def halted(self) -> bool:
        """No call can succeed for the rest of this cycle: no token, or calls are paused."""
        return self.token_error is not None or self.paused is not None

    def failed(self, error: Exception, where: str = "") -> None:
        if isinstance(error, ZoomPausedError):
            self.paused = error
            return
        self.failures += 1
        detail = str(error) if isinstance(error, ZoomError) else f"unexpected {error!r}"
        message = f"{where}: {detail}" if where else detail
        self.errors.append(message)
        if isinstance(error, ZoomTokenError):
            self.token_error = error
            self.logged.add(message)

    def state(self) -> str | None:
        """The cycle's zoom_exporter_state, or None if it made no attempt (keep the last)."""
        if self.paused is not None:
            return self.paused.reason
        if isinstance(self.token_error, ZoomAuthError):
            return "auth_failed"
        if self.token_error is not None:
            return "token_unavailable"
        if self.failures and self.successes:
            return "degraded"
        if self.failures:
            return "unreachable"
        return "ok" if self.successes else None


@dataclass
class MeetingBook:
    """What the poller remembers of a meeting between cycles, for the planner."""

    records: int | None = None  # entries its last listing held (participants who left count)
    last_polled: float | None = None
    deferred: int = 0


class Poller:
    def __init__(
        self,
        client: ZoomClient,
        store: Publisher,
        *,
        interval: float,
        configured: list[MeetingTarget],
        discovery: bool = True,
        concurrency: int = 4,
        max_staleness: float = 600.0,
        max_interval: float | None = None,
        privacy: ParticipantPrivacy = DEFAULT_PRIVACY,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cycle_lock = asyncio.Lock()
        self._discovered: dict[Kind, list[MeetingTarget]] = {k: [] for k in KINDS}
        self._discovery_pages: dict[Kind, int] = dict.fromkeys(KINDS, 1)
        self._announced: dict[tuple[str, str], int] = {}
        self._books: dict[tuple[str, str], MeetingBook] = {}
        self._last_good: dict[tuple[str, str], MeetingReading] = {}
        self._last_success: float | None = None
        self._last_errors: frozenset[str] = frozenset()
        self._state: str | None = None
        self._credit = 0.0
        self._started = False  # a cycle has reached Zoom: until then, poll all the budget allows
        self._cycles = 0
        self._process = ProcessCollector(registry=None)
        self._wake = asyncio.Event()
        self.config_reload: tuple[bool, float | None] | None = None
        self._privacy = privacy
        self.configure(
            client,
            interval=interval,
            configured=configured,
            discovery=discovery,
            concurrency=concurrency,
            max_staleness=max_staleness,
            max_interval=max_interval,
            privacy=privacy,
        )

    def configure(
        self,
        client: ZoomClient,
        *,
        interval: float,
        configured: list[MeetingTarget],
        discovery: bool = True,
        concurrency: int = 4,
        max_staleness: float = 600.0,
        max_interval: float | None = None,
        privacy: ParticipantPrivacy = DEFAULT_PRIVACY,
    ) -> None:
        """Set (or, between cycles, replace) the client and the polling settings."""
        self._client = client
        self.interval = interval
        self.effective_interval = interval
        self.max_interval = max(interval, max_interval if max_interval is not None else interval)
        self._configured = configured
        self._discovery = discovery
        self._semaphore = asyncio.Semaphore(concurrency)
        self._max_staleness = max_staleness
        if privacy != self._privacy:  # a reading made under other privacy settings: not again
            self._last_good.clear()
        self._privacy = privacy

    async def reconfigure(self, client: ZoomClient, **settings: Any) -> None:
        """Apply new settings between cycles (never during one); the data so far is kept,
        unless the privacy settings changed."""
        async with self._cycle_lock:
            self.configure(client, **settings)
        self._wake.set()

    async def republish(self) -> None:
        """Publish the current snapshot again with the latest config-reload status."""
        async with self._cycle_lock:
            current = self._store.snapshot
            if current.complete_cycles:
                await self._store.publish(replace(current, config_reload=self.config_reload))

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run cycles every effective interval (start to start) until `stop` is set.

        A successful config reload wakes the loop for an immediate cycle.
        """
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            self._wake.clear()
            try:
                await self.run_cycle()
            except Exception:  # a bug must not kill the loop; the next cycle tries again
                log.exception("poll cycle failed unexpectedly")
            delay = max(0.0, started + self.effective_interval - loop.time())
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self._wake)]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def run_cycle(self) -> Snapshot:
        async with self._cycle_lock:
            return await self._cycle()

    async def _cycle(self) -> Snapshot:
        began = self._clock.monotonic()
        calls_before = self._calls()
        outcome = CycleOutcome()
        now = self._clock.time()
        budget = self._client.budget
        remaining = budget.remaining(now) if budget is not None else UNLIMITED
        outcome.paused = self._client.paused()
        readings: list[MeetingReading]
        planned: int | None = None
        deferred: tuple[tuple[str, str], ...] = ()
        if outcome.paused is not None:
            readings = list(self._last_good.values())  # served as they are until the reset
            self.effective_interval = self.interval
        else:
            discovered = await self._discover(outcome, now, remaining)
            merged = merge_targets(self._configured, discovered)
            targets: dict[tuple[str, str], MeetingTarget] = {
                (t.kind, t.meeting_id): t for t in merged
            }
            plan = plan_cycle(
                (self._candidate(t) for t in targets.values()),
                now=now,
                remaining=remaining,
                base_interval=self.interval,
                max_interval=self.max_interval,
                discovery_calls=self._calls() - calls_before,
                discovery_pages=sum(self._discovery_pages.values()) if self._discovery else 0,
                credit=self._credit,
                bootstrap=not self._started,
            )
            self._credit, self.effective_interval = plan.credit, plan.interval
            planned, deferred = plan.planned_calls, plan.deferred
            polled = await asyncio.gather(*(self._poll(targets[k], outcome) for k in plan.selected))
            kept = (self._kept(key, outcome) for key in plan.deferred)
            readings = [r for r in (*polled, *kept) if r is not None]
            self._forget(set(targets), set(plan.deferred))
        self._started = self._started or outcome.successes > 0
        state = outcome.state() or self._state or "ok"
        self._state = state
        end = self._clock.time()
        if state in UP_STATES and outcome.successes:
            self._last_success = end
        self._cycles += 1
        snapshot = Snapshot(
            meetings=tuple(sorted(readings, key=lambda r: (r.target.kind, r.target.meeting_id))),
            up=state in UP_STATES,
            last_success_timestamp=self._last_success,
            poll_duration_seconds=self._clock.monotonic() - began,
            api_requests=self._client.requests.snapshot(),
            created_at=end,
            complete_cycles=self._cycles,
            errors=tuple(outcome.errors),
            process=tuple(self._process.collect()),
            state=state,
            poll_interval_seconds=self.effective_interval,
            budget=self._budget_reading(end),
            paused_until=self._paused_until(outcome),
            cycle_requests=self._calls() - calls_before,
            planned_requests=planned,
            meetings_deferred=len(deferred),
            rate_limited=self._client.rate_limited.snapshot(),
            retries=self._client.retries.snapshot(),
            config_reload=self.config_reload,
            asyncio_tasks=len(asyncio.all_tasks()),
        )
        await self._store.publish(snapshot)
        self._log(snapshot, outcome)
        return snapshot

    def _calls(self) -> int:
        return self._client.requests.total(excluding=OAUTH_ENDPOINT)

    def _budget_reading(self, now: float) -> BudgetReading | None:
        budget = self._client.budget
        if budget is None:
            return None
        return BudgetReading(budget.budget, budget.remaining(now), now + seconds_until_reset(now))

    def _paused_until(self, outcome: CycleOutcome) -> float | None:
        paused = outcome.paused or self._client.paused()
        return paused.until if paused is not None else None

    def _log(self, snapshot: Snapshot, outcome: CycleOutcome) -> None:
        """Errors are logged when they change; the same ones every cycle go to debug."""
        errors = frozenset(outcome.errors)
        for error in outcome.errors:
            repeated = error in self._last_errors or error in outcome.logged
            level = logging.DEBUG if repeated else logging.WARNING
            log.log(level, "poll: %s", error)
        self._last_errors = errors
        if outcome.paused is not None:
            log.debug("poll: %s", outcome.paused)
        log.info(
            "cycle %d: %s, %d meetings, %d participants, %d calls, %d deferred, next in %.0f s",
            self._cycles,
            snapshot.state,
            len(snapshot.meetings),
            sum(len(m.participants) for m in snapshot.meetings),
            snapshot.cycle_requests or 0,
            snapshot.meetings_deferred,
            self.effective_interval,
        )

    def _candidate(self, target: MeetingTarget) -> Candidate:
        key = (target.kind, target.meeting_id)
        book = self._books.get(key) or MeetingBook()
        records = book.records
        if records is None:  # never listed: as many as discovery announced, or one page
            records = self._announced.get(key, 0)
        return Candidate(
            key=key,
            cost=pages_for(records),
            configured=target.source == "configured",
            last_polled=book.last_polled,
            deferred=book.deferred,
        )

    def _forget(self, wanted: set[tuple[str, str]], deferred: set[tuple[str, str]]) -> None:
        """Drop what the poller remembers of meetings that are gone; count deferrals."""
        self._last_good = {k: v for k, v in self._last_good.items() if k in wanted}
        self._books = {k: v for k, v in self._books.items() if k in wanted}
        self._announced = {k: v for k, v in self._announced.items() if k in wanted}
        for key in deferred:
            self._books.setdefault(key, MeetingBook()).deferred += 1

    async def _discover(
        self, outcome: CycleOutcome, now: float, remaining: int
    ) -> list[MeetingTarget]:
        """The discovered meetings: listed afresh when the rate limit and budget allow it,
        otherwise the previous lists."""
        if self._discovery and self._discovery_due(now, remaining):
            for kind in KINDS:
                if outcome.halted:
                    break
                try:
                    live = await self._client.live_meetings(kind)
                except ZoomError as error:
                    outcome.failed(error, f"{kind} discovery")  # keep that kind's last list
                except Exception as error:
                    log.exception("%s discovery: unexpected failure", kind)
                    outcome.failed(error, f"{kind} discovery")
                else:
                    outcome.successes += 1
                    targets = [discovered_target(kind, m) for m in live]
                    self._discovered[kind] = [t for t in targets if t is not None]
                    for target, meeting in zip(targets, live, strict=True):
                        if target is not None:
                            count = _count(meeting.participants)
                            self._announced[(kind, target.meeting_id)] = count
                    self._discovery_pages[kind] = pages_for(len(live), DISCOVERY_PAGE_SIZE)
        if not self._discovery:
            return []
        return [t for kind in KINDS for t in self._discovered[kind]]

    def _discovery_due(self, now: float, remaining: int) -> bool:
        pages = sum(self._discovery_pages.values())
        limiter = self._client.limiter
        if limiter is not None and not limiter.can_afford(RESOURCE_INTENSIVE, pages):
            return False  # Resource-intensive: reuse the last lists until the limit allows
        if not self._started:
            return remaining >= pages  # the first discovery is never put off
        interval, credit = self.effective_interval, self._credit
        return can_discover(pages, now=now, remaining=remaining, interval=interval, credit=credit)

    async def _poll(self, target: MeetingTarget, outcome: CycleOutcome) -> MeetingReading | None:
        key = (target.kind, target.meeting_id)
        where = f"{target.kind} {target.meeting_id}"
        book = self._books.setdefault(key, MeetingBook())
        book.deferred = 0
        async with self._semaphore:
            if outcome.halted:  # no token, or calls are paused: spare Zoom the calls
                return self._kept(key, outcome)
            try:
                participants = await self._client.participants_qos(target.kind, target.api_id)
            except ZoomAPIError as error:
                if error.gone:
                    log.info("%s is not live any more", where)
                    outcome.successes += 1
                    self._last_good.pop(key, None)
                    self._books.pop(key, None)
                    # Not again until a discovery lists it: the old list may be reused a while.
                    self._discovered[target.kind] = [
                        t for t in self._discovered[target.kind] if t.meeting_id != key[1]
                    ]
                    return None
                outcome.failed(error, where)
                return self._stale(key)
            except ZoomError as error:
                outcome.failed(error, where)
                return self._stale(key)
            except Exception as error:  # a bug or an unforeseen answer: the others go on
                log.exception("%s: unexpected failure", where)
                outcome.failed(error, where)
                return self._stale(key)
        outcome.successes += 1
        now = self._clock.time()
        reading = meeting_reading(target, participants, now, self._privacy)
        book.records, book.last_polled = reading.listed, now
        self._last_good[key] = reading
        return reading

    def _kept(self, key: tuple[str, str], outcome: CycleOutcome) -> MeetingReading | None:
        """The last reading of a meeting not polled now: all of it while calls are paused
        (until the reset), otherwise while it is fresh enough."""
        if outcome.paused is not None:
            return self._last_good.get(key)
        return self._stale(key)

    def _stale(self, key: tuple[str, str]) -> MeetingReading | None:
        """The last good reading of a meeting not polled now, while it is fresh enough."""
        reading = self._last_good.get(key)
        if reading is None:
            return None
        if self._clock.time() - reading.polled_at > self._max_staleness:
            del self._last_good[key]
            return None
        return reading


def _count(value: float | str | None) -> int:
    """A participant count from discovery; anything unusable counts as 0."""
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0
