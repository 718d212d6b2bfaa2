"""The background poll loop: discover, fetch every meeting's participant QoS, publish a snapshot.

Cycles never overlap (one lock), meetings are fetched with bounded concurrency, and each cycle
ends by swapping one new immutable Snapshot (pre-rendered) into the `SnapshotStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import ProcessCollector

from exporter.client import Kind, ZoomAPIError, ZoomAuthError, ZoomClient, ZoomError
from exporter.exposition import Exposition
from exporter.models import LiveMeeting
from exporter.snapshot import MeetingReading, MeetingTarget, Snapshot, meeting_reading

log = logging.getLogger(__name__)

KINDS: tuple[Kind, ...] = ("meeting", "webinar")


class SnapshotStore:
    """Holds the current rendered snapshot. Replacing it is one reference assignment."""

    def __init__(self) -> None:
        self.exposition = Exposition(Snapshot()).prerender()
        self.ready = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        return self.exposition.snapshot

    async def publish(self, snapshot: Snapshot) -> None:
        exposition = await asyncio.to_thread(Exposition(snapshot).prerender)
        self.exposition = exposition
        if snapshot.complete_cycles > 0:
            self.ready.set()


def configured_targets(
    meeting_ids: Iterable[str], webinar_ids: Iterable[str]
) -> list[MeetingTarget]:
    targets = [MeetingTarget("meeting", mid, mid) for mid in meeting_ids]
    targets += [MeetingTarget("webinar", wid, wid) for wid in webinar_ids]
    return targets


def discovered_target(kind: Kind, live: LiveMeeting) -> MeetingTarget | None:
    """A discovered meeting is labelled by its numeric id and polled by its UUID (this instance)."""
    label = live.id or live.uuid
    if not label:
        return None
    return MeetingTarget(
        kind=kind,
        meeting_id=label,
        api_id=live.uuid or label,
        topic=live.topic or "",
        uuid=live.uuid or "",
        host=live.host or "",
        source="discovered",
    )


def merge_targets(
    configured: list[MeetingTarget], discovered: Iterable[MeetingTarget]
) -> list[MeetingTarget]:
    """Configured ids first; a discovered meeting with the same id lends its details."""
    by_key: dict[tuple[str, str], MeetingTarget] = {}
    for target in configured:
        by_key.setdefault((target.kind, target.meeting_id), target)
    for found in discovered:
        keys = [(found.kind, found.meeting_id), (found.kind, found.uuid)]
        match = next((k for k in keys if k in by_key), None)
        if match is None:
            by_key[(found.kind, found.meeting_id)] = found
        elif by_key[match].source == "configured":
            mine = by_key[match]
            by_key[match] = MeetingTarget(
                mine.kind, mine.meeting_id, mine.api_id, found.topic, found.uuid, found.host
            )
    return list(by_key.values())


@dataclass
class CycleOutcome:
    readings: list[MeetingReading] = field(default_factory=list)
    successes: int = 0
    failures: int = 0
    auth_failed: bool = False
    errors: list[str] = field(default_factory=list)

    def failed(self, error: Exception, where: str = "") -> None:
        self.failures += 1
        detail = str(error) if isinstance(error, ZoomError) else f"unexpected {error!r}"
        self.errors.append(f"{where}: {detail}" if where else detail)
        if isinstance(error, ZoomAuthError):
            self.auth_failed = True


class Poller:
    def __init__(
        self,
        client: ZoomClient,
        store: SnapshotStore,
        *,
        interval: float,
        configured: list[MeetingTarget],
        discovery: bool = True,
        concurrency: int = 4,
        max_staleness: float = 600.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._store = store
        self.interval = interval
        self._configured = configured
        self._discovery = discovery
        self._semaphore = asyncio.Semaphore(concurrency)
        self._max_staleness = max_staleness
        self._clock = wall_clock
        self._cycle_lock = asyncio.Lock()
        self._discovered: dict[Kind, list[MeetingTarget]] = {k: [] for k in KINDS}
        self._last_good: dict[tuple[str, str], MeetingReading] = {}
        self._last_success: float | None = None
        self._cycles = 0
        self._process = ProcessCollector(registry=None)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run cycles every `interval` seconds (start to start) until `stop` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.run_cycle()
            except Exception:  # a bug must not kill the loop; the next cycle tries again
                log.exception("poll cycle failed unexpectedly")
            delay = max(0.0, started + self.interval - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def run_cycle(self) -> Snapshot:
        async with self._cycle_lock:
            began = time.monotonic()
            outcome = CycleOutcome()
            targets = merge_targets(self._configured, await self._discover(outcome))
            polled = await asyncio.gather(*(self._poll(t, outcome) for t in targets))
            now = self._clock()
            readings = [r for r in polled if r is not None]
            wanted = {(t.kind, t.meeting_id) for t in targets}
            self._last_good = {k: v for k, v in self._last_good.items() if k in wanted}
            up = not outcome.auth_failed and (outcome.failures == 0 or outcome.successes > 0)
            if up:
                self._last_success = now
            self._cycles += 1
            snapshot = Snapshot(
                meetings=tuple(readings),
                up=up,
                last_success_timestamp=self._last_success,
                poll_duration_seconds=time.monotonic() - began,
                api_requests=self._client.requests.snapshot(),
                created_at=now,
                complete_cycles=self._cycles,
                errors=tuple(outcome.errors),
                process=tuple(self._process.collect()),
            )
            await self._store.publish(snapshot)
            for error in outcome.errors:
                log.warning("poll: %s", error)
            log.info(
                "cycle %d: %d meetings, %d participants, %d errors, %.2f s",
                self._cycles,
                len(readings),
                sum(len(r.participants) for r in readings),
                len(outcome.errors),
                snapshot.poll_duration_seconds or 0.0,
            )
            return snapshot

    async def _discover(self, outcome: CycleOutcome) -> list[MeetingTarget]:
        if not self._discovery:
            return []
        found: list[MeetingTarget] = []
        for kind in KINDS:
            try:
                live = await self._client.live_meetings(kind)
            except ZoomError as error:
                outcome.failed(error)  # keep the previous list of that kind
            except Exception as error:
                log.exception("%s discovery: unexpected failure", kind)
                outcome.failed(error, f"{kind} discovery")
            else:
                outcome.successes += 1
                targets = (discovered_target(kind, m) for m in live)
                self._discovered[kind] = [t for t in targets if t is not None]
            found.extend(self._discovered[kind])
        return found

    async def _poll(self, target: MeetingTarget, outcome: CycleOutcome) -> MeetingReading | None:
        key = (target.kind, target.meeting_id)
        where = f"{target.kind} {target.meeting_id}"
        async with self._semaphore:
            if outcome.auth_failed:  # no token this cycle: spare Zoom the calls
                return self._stale(key)
            try:
                participants = await self._client.participants_qos(target.kind, target.api_id)
            except ZoomAPIError as error:
                if error.gone:
                    log.info("%s is not live any more", where)
                    outcome.successes += 1
                    self._last_good.pop(key, None)
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
        reading = meeting_reading(target, participants, self._clock())
        self._last_good[key] = reading
        return reading

    def _stale(self, key: tuple[str, str]) -> MeetingReading | None:
        """The last good reading of a meeting that failed now, while it is fresh enough."""
        reading = self._last_good.get(key)
        if reading is None:
            return None
        if self._clock() - reading.polled_at > self._max_staleness:
            del self._last_good[key]
            return None
        return reading
