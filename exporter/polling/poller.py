"""The background poll loop: discover, fetch every meeting's participant QoS, publish a snapshot.

Cycles never overlap (one lock), meetings are fetched with bounded concurrency, and each cycle
ends by handing one new immutable Snapshot (QoS) and Health (the exporter's own state) to the
publisher. The poller keeps one record per meeting between cycles.

What a meeting's series do when it is not polled this cycle:
- deferred by the planner, while discovery (or the configured list) still has it: kept, however
  long; the planner's order guarantees it a turn;
- its poll failed, or every call is paused: kept while younger than `max_staleness`;
- Zoom says it is not live (404/3001): dropped at once.

What bounds a cycle, whatever Zoom answers:
- pages: a meeting's listing stops at `client.page_cap` of the pages the planner granted it
  (a margin of 2 pages and a quarter), at a repeated page token or at an empty page; the
  cycle then says so (state `degraded`, the reason in its errors), and a listing cut at the
  cap is granted next time the size Zoom's `total_records` gave (when sane), or a page more;
- time: the cycle's deadline is `CYCLE_DEADLINE_FACTOR` times the effective interval, at least
  `CYCLE_DEADLINE_FLOOR` seconds, on the event loop's clock; past it the meetings not yet done
  keep their last data, the cycle publishes, and the state is `degraded` with the reason;
- a participant count from discovery above `MAX_PARTICIPANTS` is unknown, not a cost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.logfmt import kv
from exporter.metrics.snapshot import MeetingReading, Snapshot, meeting_reading
from exporter.polling.health import UP_STATES, BudgetReading, Health
from exporter.polling.planner import Candidate, can_discover, pages_for, plan_cycle
from exporter.polling.targets import MeetingTarget, discovered_target, merge_targets
from exporter.privacy import DEFAULT_PRIVACY, ParticipantPrivacy
from exporter.series import SeriesOptions
from exporter.zoom.auth import OAUTH_ENDPOINT
from exporter.zoom.client import (
    DISCOVERY_PAGE_SIZE,
    EMPTY_PAGE,
    MAX_PAGES,
    PAGE_CAP,
    QOS_PAGE_SIZE,
    REPEATED_TOKEN,
    ZoomClient,
    page_cap,
)
from exporter.zoom.errors import (
    ZoomAPIError,
    ZoomAuthError,
    ZoomError,
    ZoomForbiddenError,
    ZoomPausedError,
    ZoomTokenError,
)
from exporter.zoom.limits import RESOURCE_INTENSIVE, seconds_until_reset
from exporter.zoom.models import KINDS, Kind, Participant, valid_utf8

log = logging.getLogger(__name__)

UNLIMITED = 10**12  # the remaining budget when no daily budget is set
DEFAULT_SERIES = SeriesOptions()  # every participant; the input and output streams
LARGE_MEETING = 200  # participants: a reading this large is built in a worker thread
YOUNG_LIMIT = 20_000  # objects made since the last young GC pass that start another one
SWEEP_PERIOD = 0.05  # seconds between checks for a young pass while a cycle runs
BUILD_SLICE = 500  # participants of a large reading between two checks for a young pass
Key = tuple[str, str]  # (kind, meeting_id)
MAX_PARTICIPANTS = 50_000  # a discovery count above this is nonsense: the size is unknown
CYCLE_DEADLINE_FACTOR = 1.0  # a cycle's deadline, in effective intervals...
CYCLE_DEADLINE_FLOOR = 30.0  # ...but at least this many seconds (pacing needs time)


def cycle_deadline(interval: float) -> float:
    """Seconds a cycle may run before it publishes what it has."""
    return max(CYCLE_DEADLINE_FLOOR, CYCLE_DEADLINE_FACTOR * interval)


class Publisher(Protocol):
    """Where each cycle's snapshot and health go (the metrics layer's SnapshotStore)."""

    async def publish(self, snapshot: Snapshot, health: Health) -> None: ...


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle published."""

    snapshot: Snapshot
    health: Health


@dataclass
class CycleOutcome:
    successes: int = 0
    failures: int = 0
    token_error: ZoomTokenError | None = None
    paused: ZoomPausedError | None = None
    forbidden: ZoomForbiddenError | None = None
    errors: list[str] = field(default_factory=list)
    logged: set[str] = field(default_factory=set)  # errors the client has logged already
    fields: dict[str, dict[str, object]] = field(default_factory=dict)  # an error's log fields
    cut_short: bool = False  # a listing stopped early or the deadline passed: degraded

    def short(self, message: str) -> None:
        """The cycle published less than Zoom had: say so (state degraded, the reason)."""
        self.cut_short = True
        self.errors.append(message)

    @property
    def halted(self) -> bool:
        """No call can succeed for the rest of this cycle: no token, or calls are paused."""
        return self.token_error is not None or self.paused is not None

    def failed(self, error: Exception, where: str = "", **context: object) -> None:
        """Record a failure; `where` prefixes the message on the status page, `context`
        (kind, meeting_id) goes to the log line's fields."""
        if isinstance(error, ZoomPausedError):
            self.paused = error
            return
        self.failures += 1
        detail = str(error) if isinstance(error, ZoomError) else f"unexpected {error!r}"
        message = f"{where}: {detail}" if where else detail
        self.errors.append(message)
        self.fields[message] = {
            **context,
            "endpoint": getattr(error, "endpoint", None),
            "status": getattr(error, "status", None),
            "code": getattr(error, "code", None),
            "error": detail,
        }
        if isinstance(error, ZoomTokenError | ZoomForbiddenError):
            self.logged.add(message)  # the client logged it, with its backoff
        if isinstance(error, ZoomTokenError):
            self.token_error = error
        elif isinstance(error, ZoomForbiddenError):
            self.forbidden = error

    def state(self) -> str | None:
        """The cycle's zoom_exporter_state, or None if it made no attempt (keep the last)."""
        if self.paused is not None:
            return self.paused.reason
        if isinstance(self.token_error, ZoomAuthError):
            return "auth_failed"
        if self.token_error is not None:
            return "token_unavailable"
        if self.forbidden is not None:
            return "forbidden"
        if (self.failures or self.cut_short) and self.successes:
            return "degraded"
        if self.failures:
            return "unreachable"
        return "ok" if self.successes else None


@dataclass
class MeetingRecord:
    """Everything the poller remembers of one meeting between cycles."""

    target: MeetingTarget
    reading: MeetingReading | None = None  # the last good reading, while it is served
    records: int | None = None  # entries its last listing held (participants who left count)
    announced: int = 0  # the participant count discovery reported
    last_polled: float | None = None  # wall time of the last successful poll
    last_attempt: float | None = None  # wall time of the last call for it
    deferred: int = 0  # cycles in a row the planner left it out
    live: bool | None = None  # None: not known yet; False: Zoom said it is not live

    def candidate(self) -> Candidate:
        records = self.records if self.records is not None else self.announced
        return Candidate(
            key=(self.target.kind, self.target.meeting_id),
            cost=pages_for(records),
            configured=self.target.source == "configured",
            last_polled=self.last_polled,
            deferred=self.deferred,
        )


@dataclass(frozen=True)
class PollSettings:
    """What the settings say about polling; a reload replaces it whole."""

    interval: float  # seconds between cycles, before the planner stretches it
    configured: list[MeetingTarget] = field(default_factory=list)
    discovery: bool = True
    concurrency: int = 4
    max_staleness: float = 600.0
    max_interval: float | None = None  # how far the planner may stretch (None: the interval)
    privacy: ParticipantPrivacy = DEFAULT_PRIVACY
    series: SeriesOptions = DEFAULT_SERIES


class Collector:
    """The cyclic GC is the process's, and several accounts' cycles overlap: the first cycle
    to start turns the collector off, the last to end makes the closing young pass, freezes
    what it found alive and turns it back on (when it was on before; tests may turn it off)."""

    def __init__(self) -> None:
        self.holders = 0  # cycles running
        self.restore = False  # whether the collector was on when the first of them started

    @property
    def sweeping(self) -> bool:
        """Whether young passes are ours to make now (any thread may ask)."""
        return self.holders > 0 and self.restore

    def acquire(self) -> None:
        if self.holders == 0:
            self.restore = gc.isenabled()
            gc.disable()
        self.holders += 1

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0 and self.restore:
            gc.collect(0)
            gc.freeze()
            gc.enable()


COLLECTOR: Final = Collector()


class Poller:
    def __init__(
        self,
        client: ZoomClient,
        store: Publisher,
        settings: PollSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        resumed: bool = False,
        deadline: float | None = None,
    ) -> None:
        self._store = store
        self._deadline = deadline  # seconds; None: cycle_deadline(effective interval)
        self._clock = clock
        self._cycle_lock = asyncio.Lock()
        self._discovered: dict[Kind, list[MeetingTarget]] = {k: [] for k in KINDS}
        self._discovered_at: dict[Kind, float | None] = dict.fromkeys(KINDS)
        self._discovery_pages: dict[Kind, int] = dict.fromkeys(KINDS, 1)
        self._records: dict[Key, MeetingRecord] = {}
        self._last_success: float | None = None
        self._last_errors: frozenset[str] = frozenset()
        self._state: str | None = None
        self._credit = 0.0
        # Until a cycle reaches Zoom, poll all the budget allows; not after a restart that
        # resumed today's spend (a crash loop must not poll everything on every start).
        self._started = resumed
        self._cycles = 0
        self._wake = asyncio.Event()
        self.health = Health()
        self._privacy = settings.privacy
        self._series = settings.series
        self._pending: tuple[ZoomClient, PollSettings] | None = None  # a reload's, not applied
        self.configure(client, settings)

    def configure(self, client: ZoomClient, settings: PollSettings) -> None:
        """Set (or, between cycles, replace) the client and the polling settings."""
        self._client = client
        self.interval = interval = settings.interval
        self.effective_interval = interval
        longest = settings.max_interval
        self.max_interval = max(interval, longest if longest is not None else interval)
        self._configured = settings.configured
        self._discovery = settings.discovery
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._max_staleness = settings.max_staleness
        if settings.privacy != self._privacy or settings.series != self._series:
            for record in self._records.values():  # made under other settings: not again
                record.reading = None
        self._privacy, self._series = settings.privacy, settings.series

    async def reconfigure(
        self, client: ZoomClient, settings: PollSettings, *, wake: bool = True
    ) -> None:
        """Apply new settings between cycles (never during one), without waiting for a cycle
        in flight: they are applied now if no cycle runs, else when the next one starts. The
        data so far is kept, unless the privacy settings changed. `wake`: a cycle at once."""
        self._pending = (client, settings)
        if not self._cycle_lock.locked():
            async with self._cycle_lock:
                self._apply_pending()
        if wake:
            self._wake.set()

    def _apply_pending(self) -> None:
        if self._pending is not None:
            client, settings = self._pending
            self._pending = None
            self.configure(client, settings)

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

    async def run_cycle(self) -> CycleReport:
        """One cycle, with no full cyclic GC pass during it and none over what it keeps
        afterwards.

        A cycle allocates hundreds of thousands of objects (pages, models, readings), and the
        collections they trigger walk older objects too: a full pass over a large account's
        snapshot holds the GIL for half a second, and the event loop stalls. So the automatic
        collector is off while a cycle runs. Young garbage is still freed, in bounded passes:
        whenever more than YOUNG_LIMIT objects were made since the last pass (checked every
        SWEEP_PERIOD, after each meeting's reading, and every BUILD_SLICE participants while
        a large one is built), one young-generation pass frees the cyclic garbage among them,
        and gc.freeze() moves what is left out of every later pass (reference counting still
        frees it when the next snapshot replaces it); the cycle ends with one more. A single
        pass over a whole cycle's readings held the GIL for 75-110 ms at 15,000 participants
        (21 objects each); a pass over YOUNG_LIMIT objects takes a few ms. Freezing without
        the pass leaks (measured: the demo grew 1.5 MiB every 10 s): only what a pass has just
        found reachable is frozen.
        """
        async with self._cycle_lock:
            self._apply_pending()
            COLLECTOR.acquire()
            sweeper = asyncio.ensure_future(self._sweeper()) if COLLECTOR.sweeping else None
            try:
                return await self._cycle()
            finally:
                if sweeper is not None:
                    sweeper.cancel()
                COLLECTOR.release()

    async def _sweeper(self) -> None:
        """Checks for a young pass every SWEEP_PERIOD while the cycle fetches: the pages of a
        large meeting stay alive until its reading is built, tens of thousands of objects."""
        while True:
            await asyncio.sleep(SWEEP_PERIOD)
            self._sweep()

    def _sweep(self) -> None:
        """The bounded young pass of run_cycle: only while a cycle owns the collector, and
        only once YOUNG_LIMIT objects are waiting (any thread may call it)."""
        if COLLECTOR.sweeping and gc.get_count()[0] > YOUNG_LIMIT:
            gc.collect(0)
            gc.freeze()

    async def _cycle(self) -> CycleReport:
        began = self._clock.monotonic()
        calls_before = self._calls()
        outcome = CycleOutcome()
        now = self._clock.time()
        budget = self._client.budget
        remaining = budget.remaining(now) if budget is not None else UNLIMITED
        blocked = self._client.paused()
        planned: int | None = None
        deferred: tuple[Key, ...] = ()
        not_live = 0
        if blocked is not None:
            outcome.failed(blocked)
            if isinstance(blocked, ZoomAuthError):
                outcome.failures -= 1  # no call was made; the state says why
            readings = [r for r in map(self._fresh, list(self._records)) if r is not None]
            self.effective_interval = self.interval
        else:
            deadline = self._deadline or cycle_deadline(self.effective_interval)
            loop = asyncio.get_running_loop()
            deadline_at = loop.time() + deadline
            discovered = await self._within(
                self._discover(outcome, now, remaining), deadline_at, outcome, deadline
            )
            targets, not_live = self._targets(discovered or self._last_discovered(), now)
            plan = plan_cycle(
                (self._records[k].candidate() for k in targets),
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
            polled = await self._poll_all(plan.selected, outcome, deadline_at, deadline)
            kept = (self._deferred(key, outcome) for key in plan.deferred)
            readings = [r for r in (*polled, *kept) if r is not None]
            self._forget(targets)
        self._started = self._started or outcome.successes > 0
        state = outcome.state() or self._state or "ok"
        end = self._clock.time()
        if state in UP_STATES and self._client.holds.any_active("forbidden", end):
            state = "forbidden"  # a kind is held back, whether or not this cycle tried it
        self._state = state
        # Zoom was reached if anything was polled: a refused kind beside polled ones is up.
        up = state in UP_STATES or (state == "forbidden" and outcome.successes > 0)
        if up and outcome.successes:
            self._last_success = end
        self._cycles += 1
        snapshot = Snapshot(
            meetings=tuple(sorted(readings, key=lambda r: (r.target.kind, r.target.meeting_id))),
        )
        health = Health(
            state=state,
            up=up,
            last_success_timestamp=self._last_success,
            poll_duration_seconds=self._clock.monotonic() - began,
            created_at=end,
            complete_cycles=self._cycles,
            errors=tuple(valid_utf8(error) for error in outcome.errors),
            poll_interval_seconds=self.effective_interval,
            budget=self._budget_reading(end),
            paused_until=self._paused_until(outcome),
            cycle_requests=self._calls() - calls_before,
            planned_requests=planned,
            meetings_deferred=len(deferred),
            meetings_not_live=not_live,
        )
        self.health = health
        await self._store.publish(snapshot, health)
        self._log(snapshot, health, outcome)
        return CycleReport(snapshot, health)

    def _calls(self) -> int:
        return self._client.requests.total(excluding=OAUTH_ENDPOINT)

    async def _within(
        self,
        work: Coroutine[Any, Any, list[MeetingTarget]],
        deadline_at: float,
        outcome: CycleOutcome,
        deadline: float,
    ) -> list[MeetingTarget] | None:
        """Discovery, cut at the cycle's deadline (None: it did not finish)."""
        timeout = max(0.0, deadline_at - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            outcome.failures += 1
            outcome.short(f"discovery: the cycle's deadline of {deadline:.0f} s passed")
            return None

    def _last_discovered(self) -> list[MeetingTarget]:
        if not self._discovery:
            return []
        return [t for kind in KINDS for t in self._discovered[kind]]

    async def _poll_all(
        self, keys: tuple[Key, ...], outcome: CycleOutcome, deadline_at: float, deadline: float
    ) -> list[MeetingReading | None]:
        """Poll `keys` concurrently until the deadline; a meeting not done by then keeps its
        last data (while younger than max_staleness), and the cycle says so."""
        tasks = [asyncio.ensure_future(self._poll(key, outcome)) for key in keys]
        if not tasks:
            return []
        timeout = max(0.0, deadline_at - asyncio.get_running_loop().time())
        try:
            await asyncio.wait(tasks, timeout=timeout)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        late = [key for key, task in zip(keys, tasks, strict=True) if not task.done()]
        for task in tasks:
            if not task.done():
                task.cancel()
        if late:
            await asyncio.gather(*tasks, return_exceptions=True)
            outcome.failures += len(late)
            outcome.short(
                f"the cycle's deadline of {deadline:.0f} s passed with {len(late)} meeting(s) "
                f"not done (kept with their last data): {', '.join(k[1] for k in late[:5])}"
            )
        out: list[MeetingReading | None] = []
        for key, task in zip(keys, tasks, strict=True):
            if task.cancelled() or task.exception() is not None:
                out.append(self._fresh(key))
            else:
                out.append(task.result())
        return out

    def _budget_reading(self, now: float) -> BudgetReading | None:
        budget = self._client.budget
        if budget is None:
            return None
        return BudgetReading(budget.budget, budget.remaining(now), now + seconds_until_reset(now))

    def _paused_until(self, outcome: CycleOutcome) -> float | None:
        paused = outcome.paused or self._client.paused()
        return paused.until if isinstance(paused, ZoomPausedError) else None

    def _log(self, snapshot: Snapshot, health: Health, outcome: CycleOutcome) -> None:
        """Errors are logged when they change; the same ones every cycle go to debug."""
        for error in outcome.errors:
            repeated = error in self._last_errors or error in outcome.logged
            level = logging.DEBUG if repeated else logging.WARNING
            log.log(level, "poll failed", extra=kv(**outcome.fields.get(error, {"error": error})))
        self._last_errors = frozenset(outcome.errors)
        if outcome.paused is not None:
            log.debug("calls paused", extra=kv(state=health.state, error=str(outcome.paused)))
        log.info(
            "cycle done",
            extra=kv(
                cycle=self._cycles,
                state=health.state,
                meetings=len(snapshot.meetings),
                participants=sum(len(m.participants) for m in snapshot.meetings),
                calls=health.cycle_requests or 0,
                deferred=health.meetings_deferred,
                next_in_seconds=round(self.effective_interval),
            ),
        )

    # -- targets ------------------------------------------------------------------------------

    def _record(self, target: MeetingTarget) -> MeetingRecord:
        key = (target.kind, target.meeting_id)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = MeetingRecord(target)
        else:
            record.target = target  # discovery may bring a newer topic, uuid or host
        return record

    def _targets(self, discovered: list[MeetingTarget], now: float) -> tuple[list[Key], int]:
        """The meetings this cycle may poll, and how many configured ids it leaves out because
        they are not live: one that a fresh discovery does not list costs no call; without a
        fresh discovery, one known not to be live is tried at most every `max_interval`."""
        listed = {(t.kind, t.meeting_id) for t in discovered}
        listed |= {(t.kind, t.uuid) for t in discovered if t.uuid}
        keys: list[Key] = []
        skipped = 0
        for target in merge_targets(self._configured, discovered):
            record = self._record(target)
            key = (target.kind, target.meeting_id)
            if target.source == "configured" and key not in listed and self._idle(record, now):
                skipped += 1
                continue
            keys.append(key)
        return keys, skipped

    def _idle(self, record: MeetingRecord, now: float) -> bool:
        """Whether a configured meeting that discovery does not list is left out this cycle."""
        if self._discovery_fresh(record.target.kind, now):
            self._not_live(record, "discovery does not list it")
            return True
        tried = record.last_attempt
        return record.live is False and tried is not None and now - tried < self.max_interval

    def _discovery_fresh(self, kind: Kind, now: float) -> bool:
        """Whether this kind's discovery list is recent enough to say what is live."""
        at = self._discovered_at[kind]
        return self._discovery and at is not None and now - at <= self.max_interval

    def _not_live(self, record: MeetingRecord, why: str) -> None:
        record.reading = None
        if record.live is not False:
            target = record.target
            log.info(
                "not live",
                extra=kv(kind=target.kind, meeting_id=target.meeting_id, reason=why),
            )
        record.live = False

    def _forget(self, wanted: Iterable[Key]) -> None:
        """Drop the records of meetings that are neither configured nor discovered any more."""
        keep = set(wanted) | {(t.kind, t.meeting_id) for t in self._configured}
        self._records = {k: v for k, v in self._records.items() if k in keep}

    # -- discovery ----------------------------------------------------------------------------

    async def _discover(
        self, outcome: CycleOutcome, now: float, remaining: int
    ) -> list[MeetingTarget]:
        """The discovered meetings: listed afresh when the rate limit and budget allow it,
        otherwise the previous lists."""
        if self._discovery and self._discovery_due(now, remaining):
            for kind in KINDS:
                if outcome.halted:
                    break
                granted = self._discovery_pages[kind]
                try:
                    live = await self._client.live_meetings(kind, page_cap(granted))
                except ZoomError as error:
                    outcome.failed(error, f"{kind} discovery", kind=kind)  # keep the last list
                except Exception as error:
                    log.exception("discovery: unexpected failure", extra=kv(kind=kind))
                    outcome.failed(error, f"{kind} discovery", kind=kind)
                else:
                    outcome.successes += 1
                    self._discovered_at[kind] = self._clock.time()
                    found: list[MeetingTarget] = []
                    for meeting in live:
                        target = discovered_target(kind, meeting)
                        if target is not None:
                            found.append(target)
                            self._record(target).announced = _count(meeting.participants)
                    self._discovered[kind] = found
                    pages = pages_for(len(live), DISCOVERY_PAGE_SIZE)
                    if live.stopped is not None:
                        self._stopped(outcome, f"{kind} discovery", live.stopped, live.pages)
                        if live.stopped == PAGE_CAP:  # longer: what Zoom says, or a page more
                            pages = max(pages + 1, pages_for(live.total or 0, DISCOVERY_PAGE_SIZE))
                    self._discovery_pages[kind] = min(MAX_PAGES, pages)
        return self._last_discovered()

    def _stopped(self, outcome: CycleOutcome, where: str, stopped: str, pages: int) -> None:
        why = {
            PAGE_CAP: "the pages granted this cycle are spent",
            REPEATED_TOKEN: "Zoom repeated a next_page_token",
            EMPTY_PAGE: "Zoom sent an empty page with a next_page_token",
        }.get(stopped, stopped)
        outcome.short(f"{where}: listing stopped after {pages} page(s): {why}")

    def _discovery_due(self, now: float, remaining: int) -> bool:
        pages = sum(self._discovery_pages.values())
        limiter = self._client.limiter
        if limiter is not None and not limiter.can_afford(RESOURCE_INTENSIVE, pages):
            return False  # Resource-intensive: reuse the last lists until the limit allows
        if not self._started:
            return remaining >= pages  # the first discovery is never put off
        interval, credit = self.effective_interval, self._credit
        return can_discover(pages, now=now, remaining=remaining, interval=interval, credit=credit)

    # -- polling ------------------------------------------------------------------------------

    async def _poll(self, key: Key, outcome: CycleOutcome) -> MeetingReading | None:
        record = self._records[key]
        target = record.target
        where = f"{target.kind} {target.meeting_id}"
        record.deferred = 0
        async with self._semaphore:
            if outcome.halted:  # no token, or calls are paused: spare Zoom the calls
                return self._fresh(key)
            record.last_attempt = self._clock.time()
            cap = page_cap(record.candidate().cost)
            try:
                participants = await self._client.participants_qos(target.kind, target.api_id, cap)
            except ZoomAPIError as error:
                if error.gone:
                    outcome.successes += 1
                    self._gone(record)
                    return None
                outcome.failed(error, where, kind=key[0], meeting_id=key[1])
                return self._fresh(key)
            except ZoomError as error:
                outcome.failed(error, where, kind=key[0], meeting_id=key[1])
                return self._fresh(key)
            except Exception as error:  # a bug or an unforeseen answer: the others go on
                log.exception("poll: unexpected failure", extra=kv(kind=key[0], meeting_id=key[1]))
                outcome.failed(error, where, kind=key[0], meeting_id=key[1])
                return self._fresh(key)
        outcome.successes += 1
        now = self._clock.time()
        stopped, total, calls = participants.stopped, participants.total, participants.pages
        try:
            if len(participants) > LARGE_MEETING:  # pure and long: off the event loop
                # The thread also drops the parsed pages: freeing 10,000 participants' models
                # is tens of milliseconds that the event loop would otherwise spend.
                pages: list[list[Participant]] = [participants]
                del participants
                reading = await asyncio.to_thread(
                    _build_and_drop, pages, target, now, self._privacy, self._series, self._sweep
                )
            else:
                reading = meeting_reading(target, participants, now, self._privacy, self._series)
            self._sweep()
        except Exception as error:  # the last line of defence: this meeting only
            self._client.telemetry.dropped.add("build", f"{where}: {type(error).__name__}")
            return self._fresh(key)
        self._client.telemetry.dropped.add("build", f"{where}: a participant", reading.dropped)
        listed = reading.listed
        if stopped is not None:
            self._stopped(outcome, where, stopped, calls)
            if stopped == PAGE_CAP:  # longer: what Zoom says, or a page more
                listed = max(listed + QOS_PAGE_SIZE, total or 0)
        if record.live is False:
            log.info("live again", extra=kv(kind=key[0], meeting_id=key[1]))
        record.records, record.last_polled, record.live = listed, now, True
        record.reading = reading
        return reading

    def _gone(self, record: MeetingRecord) -> None:
        """Zoom answered 404/3001: the meeting is not live. A discovered one is forgotten (and
        taken off the reused discovery list); a configured one waits to be listed again."""
        target = record.target
        self._not_live(record, "Zoom answered 404, code 3001")
        record.records = None
        if target.source == "discovered":
            del self._records[(target.kind, target.meeting_id)]
            self._discovered[target.kind] = [
                t for t in self._discovered[target.kind] if t.meeting_id != target.meeting_id
            ]

    def _deferred(self, key: Key, outcome: CycleOutcome) -> MeetingReading | None:
        """A meeting the planner left out: still listed, so its last reading stays, however
        old; while every call is halted it ages like a failure."""
        record = self._records[key]
        record.deferred += 1
        return self._fresh(key) if outcome.halted else record.reading

    def _fresh(self, key: Key) -> MeetingReading | None:
        """The last good reading of a meeting not polled now, while younger than
        `max_staleness`."""
        record = self._records.get(key)
        if record is None or record.reading is None:
            return None
        if self._clock.time() - record.reading.polled_at > self._max_staleness:
            record.reading = None
            return None
        return record.reading


def _build_and_drop(
    pages: list[list[Participant]],
    target: MeetingTarget,
    now: float,
    privacy: ParticipantPrivacy,
    series: SeriesOptions,
    sweep: Callable[[], None] = lambda: None,
) -> MeetingReading:
    """meeting_reading() of the one list in `pages`, which it takes out and frees here, a
    slice at a time: freeing it whole is one C call that holds the GIL for tens of ms. Every
    BUILD_SLICE participants `sweep` may run a bounded young GC pass (Poller.run_cycle)."""
    participants = pages.pop()

    def sliced() -> Iterator[Participant]:
        for start in range(0, len(participants), BUILD_SLICE):
            yield from participants[start : start + BUILD_SLICE]
            sweep()

    try:
        return meeting_reading(target, sliced(), now, privacy, series)
    finally:
        while participants:
            del participants[-200:]


def _count(value: float | str | None) -> int:
    """A participant count from discovery; anything unusable or above MAX_PARTICIPANTS counts
    as 0 (unknown: the first poll's listing tells)."""
    count = 0
    if isinstance(value, int | float) and value >= 0:
        try:
            count = int(value)
        except (OverflowError, ValueError):
            return 0
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
        count = int(value.strip())
    return count if count <= MAX_PARTICIPANTS else 0
