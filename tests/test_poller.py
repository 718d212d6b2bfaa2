"""The poll cycle against the simulator: discovery, snapshots, gone meetings, partial failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from conftest import FakeClock, simulator, zoom_client
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.targets import configured_targets
from exporter.simulator import Scenario, Simulator
from exporter.simulator.scenario import SEED_MEETING_ID as _SEED_MEETING
from exporter.simulator.scenario import SEED_PARTICIPANT_ID
from exporter.zoom.client import ZoomClient

SEED_MEETING_ID = str(_SEED_MEETING)


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    async with simulator(Scenario(seed=3, clock=clock)) as sim:
        yield sim


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[ZoomClient]:
    async with aiohttp.ClientSession() as session:
        yield zoom_client(session, sim.api_url, sim.oauth_url)


def make_poller(
    client: ZoomClient, clock: FakeClock, **options: object
) -> tuple[Poller, SnapshotStore]:
    store = SnapshotStore()
    settings: dict[str, Any] = {"interval": 60.0, **options}
    return Poller(client, store, PollSettings(**settings), clock=clock), store


def participants_of(snapshot: Snapshot) -> dict[tuple[str, str], set[str]]:
    return {
        (m.target.kind, m.target.meeting_id): {p.participant_id for p in m.participants}
        for m in snapshot.meetings
    }


async def test_cycle_exports_every_live_participant(
    sim: Simulator, client: ZoomClient, clock: FakeClock
) -> None:
    poller, store = make_poller(client, clock)
    assert not store.ready.is_set()
    report = await poller.run_cycle()
    assert store.ready.is_set()
    assert store.snapshot is report.snapshot and store.health is report.health
    assert report.health.up
    exported = participants_of(report.snapshot)
    kinds = {kind for kind, _ in exported}
    assert kinds == {"meeting", "webinar"}
    for (kind, meeting_id), ids in exported.items():
        meeting = next(m for m in report.snapshot.meetings if m.target.meeting_id == meeting_id)
        listed = sim.scenario.participants(kind, meeting.target.api_id)
        present = {p["user_id"] for p in listed if not p.get("leave_time")}
        assert ids == present
    assert SEED_PARTICIPANT_ID in exported[("meeting", SEED_MEETING_ID)]
    text = store.exposition.text.plain.decode()
    assert 'participant_id="16778240",stream="input"} 2875.0' in text


async def test_ended_meeting_vanishes_after_next_cycle(
    sim: Simulator, client: ZoomClient, clock: FakeClock
) -> None:
    poller, store = make_poller(client, clock)
    first = await poller.run_cycle()
    victim = next(m for m in first.snapshot.meetings if m.target.meeting_id != SEED_MEETING_ID)
    sim.scenario.end_meeting(victim.target.meeting_id)
    clock.now += 60
    second = await poller.run_cycle()
    assert (victim.target.kind, victim.target.meeting_id) not in participants_of(second.snapshot)
    assert ("meeting", SEED_MEETING_ID) in participants_of(second.snapshot)
    assert second.health.up
    text = store.exposition.text.plain.decode()
    assert f'meeting_id="{victim.target.meeting_id}"' not in text


async def test_unknown_configured_meeting_does_not_stop_others(
    sim: Simulator, client: ZoomClient, clock: FakeClock
) -> None:
    configured = configured_targets(["99999999999", SEED_MEETING_ID], [])
    poller, _ = make_poller(client, clock, configured=configured, discovery=False)
    report = await poller.run_cycle()
    assert report.health.up
    assert list(participants_of(report.snapshot)) == [("meeting", SEED_MEETING_ID)]
    assert sim.stats.get("list_meetings", 0) == 0  # discovery off: no discovery calls


async def test_failed_meeting_keeps_last_good_data_until_stale(
    sim: Simulator, client: ZoomClient, clock: FakeClock
) -> None:
    configured = configured_targets([SEED_MEETING_ID], [])
    poller, _ = make_poller(
        client, clock, configured=configured, discovery=False, max_staleness=120
    )
    good = await poller.run_cycle()
    sim.faults.server_error(count=4, status=500)  # the first try and every retry fail
    clock.now += 60
    kept = await poller.run_cycle()
    assert participants_of(kept.snapshot) == participants_of(good.snapshot)
    assert (
        kept.snapshot.meetings[0].polled_at == good.snapshot.meetings[0].polled_at
    )  # its age shows
    assert kept.health.errors and "HTTP 500" in kept.health.errors[0]
    assert not kept.health.up  # the only call of the cycle failed
    assert kept.health.state == "unreachable"
    assert ("meeting_participants_qos", "server_error", 3) in poller._client.retries.snapshot()
    sim.faults.server_error(count=4, status=500)
    clock.now += 120
    dropped = await poller.run_cycle()
    assert participants_of(dropped.snapshot) == {}


async def test_wrong_credentials_mean_down_not_crash(sim: Simulator, clock: FakeClock) -> None:
    async with aiohttp.ClientSession() as session:
        bad = zoom_client(session, sim.api_url, sim.oauth_url, secret="wrong")
        poller, store = make_poller(bad, clock)
        report = await poller.run_cycle()
    assert not report.health.up
    assert report.snapshot.meetings == ()
    assert store.ready.is_set()
    assert any("oauth_token" in e for e in report.health.errors)
    assert all("wrong" not in e for e in report.health.errors)


async def test_refused_credentials_are_not_retried_for_every_meeting(
    sim: Simulator, clock: FakeClock
) -> None:
    ids = [str(90000000000 + i) for i in range(12)]
    async with aiohttp.ClientSession() as session:
        bad = zoom_client(session, sim.api_url, sim.oauth_url, secret="wrong")
        poller, _ = make_poller(
            bad, clock, configured=configured_targets(ids, []), discovery=False, concurrency=2
        )
        report = await poller.run_cycle()
    assert not report.health.up
    assert sim.stats["oauth_token"] <= 2  # at most one try per concurrent slot, not 12
    assert sim.stats["total"] == sim.stats["oauth_token"]


async def test_cycles_never_overlap(sim: Simulator, client: ZoomClient, clock: FakeClock) -> None:
    poller, _ = make_poller(client, clock)
    single = await poller.run_cycle()
    calls_one = sim.stats["total"]
    a, b = await asyncio.gather(poller.run_cycle(), poller.run_cycle())
    assert sorted([a.health.complete_cycles, b.health.complete_cycles]) == [2, 3]
    assert sim.stats["total"] - calls_one == 2 * (calls_one - 1)  # the token is reused
    assert (
        participants_of(a.snapshot)
        == participants_of(b.snapshot)
        == participants_of(single.snapshot)
    )


async def test_run_forever_stops_promptly(client: ZoomClient, clock: FakeClock) -> None:
    poller, store = make_poller(client, clock, interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run_forever(stop))
    await asyncio.wait_for(store.ready.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert store.health.complete_cycles == 1


async def test_unexpected_failure_of_one_meeting_spares_the_others(
    sim: Simulator, client: ZoomClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poller, _ = make_poller(client, clock)
    first = await poller.run_cycle()
    victim = next(
        m.target for m in first.snapshot.meetings if m.target.meeting_id != SEED_MEETING_ID
    )
    original = client.participants_qos

    async def flaky(kind, meeting_id, max_pages=5000):  # type: ignore[no-untyped-def]
        if meeting_id == victim.api_id:
            raise RuntimeError("a bug in parsing")
        return await original(kind, meeting_id, max_pages)

    monkeypatch.setattr(client, "participants_qos", flaky)
    clock.now += 60
    second = await poller.run_cycle()
    assert participants_of(second.snapshot) == participants_of(
        first.snapshot
    )  # the victim keeps its last data
    assert second.health.up
    assert second.health.errors == (
        f"{victim.kind} {victim.meeting_id}: unexpected RuntimeError('a bug in parsing')",
    )


class _Node:
    """An object that can be part of a reference cycle and be watched with a weak reference."""

    other: _Node | None = None


async def test_a_cycle_frees_its_cyclic_garbage_in_bounded_passes(
    sim: Simulator, client: ZoomClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the collector off during a cycle, young passes still run once YOUNG_LIMIT objects
    wait, each freeing the cyclic garbage made so far and freezing only what it found alive;
    the collector is on again afterwards."""
    import gc
    import weakref

    from exporter.polling import poller as module

    monkeypatch.setattr(module, "YOUNG_LIMIT", 50)  # the simulator's few meetings pass it
    poller, store = make_poller(client, clock)
    await poller.run_cycle()
    passes: list[int] = []
    watched: list[weakref.ref[_Node]] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    publish = store.publish

    async def publish_with_garbage(snapshot: Snapshot, health: Any) -> None:
        first, second = _Node(), _Node()
        first.other, second.other = second, first  # garbage only a cyclic pass frees
        watched.append(weakref.ref(first))
        del first, second
        await publish(snapshot, health)

    monkeypatch.setattr(store, "publish", publish_with_garbage)
    gc.callbacks.append(on_gc)
    frozen = gc.get_freeze_count()
    try:
        assert gc.isenabled()
        await poller.run_cycle()
    finally:
        gc.callbacks.remove(on_gc)
    assert gc.isenabled()
    assert len(passes) > 1 and set(passes) == {0}  # bounded young passes, never a full one
    assert watched and watched[0]() is None  # the cycle's cyclic garbage was not frozen
    assert gc.get_freeze_count() > frozen  # what the cycle keeps is out of later passes
