"""What every scrape reads: the current QoS, rendered, and the health of the cycle that made it.
Publishing swaps both in whole.

Rendering never loses a cycle: if a snapshot does not render, each meeting (and within it each
participant) that does not is left out and counted (`zoom_exporter_items_dropped_total`
{reason="render"}), and the rest is published. A store that has published nothing for longer
than `stale_after` of the interval says so: `zoom_up` 0 and `/-/ready` 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import MeetingReading, Snapshot
from exporter.polling.health import Health
from exporter.zoom.telemetry import Drops

# No publish for longer than STALE_INTERVALS effective intervals plus STALE_SLACK seconds means
# polling is stuck: a cycle publishes within its deadline (at most max(30 s, one interval)) of
# its start, and cycles start every interval.
STALE_INTERVALS = 3.0
STALE_SLACK = 30.0
DEFAULT_INTERVAL = 60.0
T = TypeVar("T")


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """Run `work` on a daemon thread of its own. Unlike asyncio.to_thread, a render still
    running when SIGTERM ends the loop never holds the process's exit (the default executor's
    threads are joined at exit: seconds for a big snapshot)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as failure:  # handed to the awaiting task
            error = failure
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="render", daemon=True).start()
    return await done


FREE_SLICE = 200  # participants freed by one C call: about 4,000 objects, well under 1 ms


def release(held: list[Exposition]) -> None:
    """Free the exposition in `held` (its only holder) a slice of participants at a time.

    Dropping it whole is one deallocation cascade through every reading, tuple and string of
    the snapshot: a single C call that never lets the GIL go, which held the event loop for
    30-50 ms at 15,000 participants. Here every step frees at most FREE_SLICE participants;
    between steps the interpreter may switch threads.
    """
    exposition = held.pop()
    meetings = list(exposition.snapshot.meetings)
    del exposition  # its bytes and the snapshot's tuple: the readings are still held here
    while meetings:
        meeting = meetings.pop()
        people = list(meeting.participants)
        del meeting  # the reading and its tuples: its participants are still held here
        while people:
            del people[-FREE_SLICE:]
    trim_heap()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Give the memory freed inside the C heap back to the system (glibc's malloc_trim; a
    no-op elsewhere). A cycle frees a whole snapshot and its 70 MB of text in small and large
    blocks among blocks still in use; without this, the freed holes stay resident and the
    process grew about 20 MiB a cycle at 15,000 participants. ctypes lets the GIL go for it."""
    if _TRIM is not None:
        _TRIM(0)


def stale_after(interval: float | None) -> float:
    """Seconds without a publish after which the exporter reports itself down."""
    return STALE_INTERVALS * (interval or DEFAULT_INTERVAL) + STALE_SLACK


def _renders(snapshot: Snapshot) -> bool:
    try:
        Exposition.render(snapshot)
    except Exception:
        return False
    return True


def render_safely(snapshot: Snapshot, dropped: Drops) -> Exposition:
    """The snapshot's exposition; what cannot be rendered is left out and counted."""
    try:
        return Exposition.render(snapshot)
    except Exception:
        pass
    kept: list[MeetingReading] = []
    for meeting in snapshot.meetings:
        where = f"{meeting.target.kind} {meeting.target.meeting_id}"
        if _renders(replace(snapshot, meetings=(meeting,))):
            kept.append(meeting)
            continue
        participants = tuple(
            p
            for p in meeting.participants
            if _renders(replace(snapshot, meetings=(replace(meeting, participants=(p,)),)))
        )
        bare = replace(meeting, participants=participants)
        if _renders(replace(snapshot, meetings=(bare,))):
            kept.append(bare)
            lost = len(meeting.participants) - len(participants)
            dropped.add("render", f"{where}: a participant", lost)
        else:
            dropped.add("render", f"{where}: the meeting")
    try:
        return Exposition.render(replace(snapshot, meetings=tuple(kept)))
    except Exception:  # together they still fail: publish no QoS rather than nothing
        dropped.add("render", "the snapshot")
        return Exposition.render(Snapshot())


class SnapshotStore:
    """Holds the current rendered snapshot. Replacing it is one reference assignment."""

    def __init__(self, dropped: Drops | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.exposition = Exposition.render(Snapshot())
        self.health = Health()
        self.ready = asyncio.Event()
        self.dropped = dropped if dropped is not None else Drops()
        self._clock = clock
        self.published_at: float | None = None  # monotonic time of the last publish
        self.generation = 0  # one more at each publish: what caches of the page compare

    @property
    def snapshot(self) -> Snapshot:
        return self.exposition.snapshot

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        exposition = await in_daemon_thread(lambda: render_safely(snapshot, self.dropped))
        previous = [self.exposition]
        self.exposition, self.health = exposition, health
        self.published_at = self._clock.monotonic()
        self.generation += 1
        if health.complete_cycles > 0:
            self.ready.set()
        # The previous snapshot is freed in a worker thread, not on the event loop (a scrape
        # still writing its bytes holds only those), and a slice at a time. Its readings
        # outlive it in the poller when they were kept, and are freed with the next one
        # otherwise.
        await in_daemon_thread(lambda: release(previous))

    def overdue(self) -> float | None:
        """Seconds since the last publish, when that is longer than `stale_after` the interval
        (polling is stuck); None otherwise, and before the first publish."""
        if self.published_at is None:
            return None
        age = self._clock.monotonic() - self.published_at
        return age if age > stale_after(self.health.poll_interval_seconds) else None
