"""Every fault Zoom can throw, injected into the simulator, against the real poller and client.

One FakeClock drives the simulated world, the client's rate limiter, its backoff sleeps and the
poller, so waits are exact and instant. Each test checks the daemon keeps serving what it
knows, says what happened (zoom_up, zoom_exporter_state) and spends no call it need not.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import SECRET, SEED, FakeClock, make_rig, participants, simulator
from exporter.simulator import Fault, Scenario, Simulator
from exporter.simulator.app import app_state, zoom_error
from exporter.zoom.limits import DailyBudget, seconds_until_reset


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    async with simulator(Scenario(seed=11, clock=clock)) as server:
        yield server


async def test_qps_429_waits_its_retry_after_then_the_cycle_succeeds(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock)
    sim.faults.rate_limit(count=1, retry_after=5, type="QPS")
    start = clock.now
    report = await rig.poller.run_cycle()
    assert report.health.state == "ok" and report.health.up
    assert SEED in participants(report.snapshot)
    assert clock.now - start >= 5  # Retry-After honoured, on the limiter: nobody jumps it
    assert clock.now - start < 5 + 0.5 + 1  # plus at most one jitter step and the pacing
    assert ("Heavy", "QPS", 1) in rig.client.rate_limited.snapshot()
    assert ("meeting_participants_qos", "rate_limited", 1) in rig.client.retries.snapshot()
    assert rig.calls() == report.health.cycle_requests == 2  # the 429 and the retry


async def test_qps_429_with_an_http_date_retry_after(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock)
    sim.faults.rate_limit(count=1, retry_after=20, type="QPS", retry_after_format="date")
    start = clock.now
    report = await rig.poller.run_cycle()
    assert report.health.state == "ok"
    assert 19 <= clock.now - start <= 22


async def test_daily_limit_pauses_every_call_until_midnight_and_data_ages_out(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """While paused, the last data is served only while younger than max_staleness: a
    participant who left hours ago must not keep firing quality alerts on frozen values."""
    rig = make_rig(sim, session, clock, discovery=True, max_staleness=600)
    good = await rig.poller.run_cycle()
    assert good.health.state == "ok" and len(good.snapshot.meetings) >= 3
    clock.now += 60
    reset = clock.now + seconds_until_reset(clock.now)
    sim.faults.rate_limit(count=1, type="Daily-limit", retry_after=round(reset - clock.now))
    hit = await rig.poller.run_cycle()
    assert hit.health.state == "daily_limit" and not hit.health.up
    assert hit.health.paused_until == pytest.approx(reset, abs=1)
    assert participants(hit.snapshot) == participants(good.snapshot)  # still fresh: served
    assert ("Resource-intensive", "Daily-limit", 1) in rig.client.rate_limited.snapshot()

    before = rig.calls()
    clock.now += 300  # 6 minutes after the last poll: still within max_staleness
    paused = await rig.poller.run_cycle()
    assert paused.health.state == "daily_limit"
    assert participants(paused.snapshot) == participants(good.snapshot)
    for _ in range(3):  # hours pass: not one call, and the data is dropped as stale
        clock.now += 3600
        paused = await rig.poller.run_cycle()
        assert paused.health.state == "daily_limit" and participants(paused.snapshot) == {}
    assert rig.calls() == before

    clock.now = reset + 1
    sim.scenario.now()  # the world catches up
    back = await rig.poller.run_cycle()
    assert back.health.state == "ok" and back.health.up and back.health.paused_until is None
    assert rig.calls() > before
    assert participants(back.snapshot)


async def test_server_errors_are_retried_with_growing_backoff(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock)
    sim.faults.server_error(count=2, status=503)
    start = clock.now
    report = await rig.poller.run_cycle()
    assert report.health.state == "ok" and SEED in participants(report.snapshot)
    assert ("meeting_participants_qos", "server_error", 2) in rig.client.retries.snapshot()
    assert rig.calls() == 3
    assert clock.now - start <= 0.5 + 1.0 + 1  # full jitter within 0.5 s, then 1 s, + pacing


async def test_retries_are_bounded_and_the_last_data_is_kept_until_stale(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock, max_staleness=300)
    good = await rig.poller.run_cycle()
    sim.faults.server_error(count=100, status=500)
    clock.now += 60
    before = rig.calls()
    failed = await rig.poller.run_cycle()
    assert rig.calls() - before == 4  # one try and max_retries (3) retries, no more
    assert failed.health.state == "unreachable" and not failed.health.up
    assert participants(failed.snapshot) == participants(good.snapshot)
    assert (
        failed.snapshot.meetings[0].polled_at == good.snapshot.meetings[0].polled_at
    )  # its age shows
    clock.now += 300
    dropped = await rig.poller.run_cycle()
    assert participants(dropped.snapshot) == {}  # older than max_staleness: gone, not frozen
    sim.faults.clear()
    clock.now += 60
    assert SEED in participants((await rig.poller.run_cycle()).snapshot)


@pytest.mark.parametrize(
    ("fault", "options", "reason", "unanswered"),
    [
        # The client gives up after 0.3 s; the simulator would answer after 5 s.
        ("timeout", {"count": 1, "seconds": 5}, "timeout", 1),
        # aiohttp itself repeats a GET once on a dropped connection: two resets reach us as one.
        ("reset", {"count": 2}, "connection", 1),
        ("malformed", {"count": 1}, "malformed", 0),
    ],
)
async def test_a_transient_failure_is_retried(
    sim: Simulator,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    fault: str,
    options: dict[str, Any],
    reason: str,
    unanswered: int,
) -> None:
    rig = make_rig(sim, session, clock, client_options={"timeout": 0.3})
    getattr(sim.faults, fault)(endpoint="meeting_participants_qos", **options)
    report = await rig.poller.run_cycle()
    assert report.health.state == "ok" and SEED in participants(report.snapshot)
    assert ("meeting_participants_qos", reason, 1) in rig.client.retries.snapshot()
    codes = {(endpoint, code): n for endpoint, code, n in rig.client.requests.snapshot()}
    assert codes.get(("meeting_participants_qos", "error"), 0) == unanswered


async def test_a_revoked_token_is_renewed_once_and_the_call_retried(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock)
    await rig.poller.run_cycle()
    tokens = rig.calls("oauth_token")
    sim.faults.revoke_tokens()
    clock.now += 60
    report = await rig.poller.run_cycle()
    assert report.health.state == "ok" and SEED in participants(report.snapshot)
    assert rig.calls("oauth_token") == tokens + 1
    assert ("meeting_participants_qos", "token_renewed", 1) in rig.client.retries.snapshot()


async def test_token_endpoint_down_backs_off_and_keeps_serving(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock)
    good = await rig.poller.run_cycle()
    sim.faults.revoke_tokens()
    sim.faults.token_endpoint_down(count=2, status=503)
    tokens = rig.calls("oauth_token")
    clock.now += 60
    down = await rig.poller.run_cycle()
    assert down.health.state == "token_unavailable" and not down.health.up
    assert participants(down.snapshot) == participants(good.snapshot)
    # The next cycle comes sooner than the backoff allows: no token request at all.
    clock.now += 0.5
    again = await rig.poller.run_cycle()
    assert again.health.state == "token_unavailable"
    assert rig.calls("oauth_token") == tokens + 1
    clock.now += 60  # past the backoff (base 2 s): one more try fails, the next one works
    await rig.poller.run_cycle()
    clock.now += 600
    back = await rig.poller.run_cycle()
    assert back.health.state == "ok" and back.health.up
    assert rig.calls("oauth_token") == tokens + 3


async def test_wrong_credentials_say_so_once_never_leak_and_never_hammer(
    sim: Simulator,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig(sim, session, clock, discovery=True)
    good = await rig.poller.run_cycle()
    sim.faults.change_credentials("rotated-by-an-admin")
    sim.faults.revoke_tokens()
    caplog.set_level(logging.DEBUG)
    cycles = []
    for _ in range(20):  # 20 minutes of cycles
        clock.now += 60
        cycles.append(await rig.poller.run_cycle())
    assert all(c.health.state == "auth_failed" and not c.health.up for c in cycles)
    assert all(
        participants(c.snapshot) == participants(good.snapshot) for c in cycles[:9]
    )  # until stale
    # Backoff: 30 s doubling up to 5 minutes, not one token request per cycle.
    assert 3 <= rig.calls("oauth_token") - 1 <= 7
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    refused = [r for r in loud if "refused the credentials" in r.getMessage()]
    assert refused and all(r.levelno == logging.ERROR for r in refused)  # said once per try
    assert "ZOOM_EXPORTER_CLIENT_SECRET" in refused[0].getMessage()
    assert len(loud) == len(refused) == rig.calls("oauth_token") - 1  # no spam in between
    basic = base64.b64encode(f"c:{SECRET}".encode()).decode()
    for record in caplog.records:  # neither secret, nor the Basic credentials, ever
        assert "rotated-by-an-admin" not in record.getMessage()
        assert basic not in record.getMessage()


class ExpiredPageToken(Fault):
    """Answers 400 / code 300, as Zoom does for a next_page_token that has expired."""

    name = "expired_page_token"

    async def respond(self, request: web.Request) -> web.StreamResponse | None:
        if "next_page_token" not in request.query:
            return None
        return zoom_error(400, 300, "The next page token is invalid or expired.")


async def test_an_expired_page_token_restarts_that_listing_once(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock, configured=[], discovery=True)
    first = await rig.poller.run_cycle()
    webinar = next(m for m in first.snapshot.meetings if m.target.kind == "webinar")
    pages = -(-webinar.listed // 10)
    assert pages >= 3
    sim.faults.add(ExpiredPageToken(1, "webinar_participants_qos", after=1))
    clock.now += 60
    before = rig.calls("webinar_participants_qos")
    second = await rig.poller.run_cycle()
    again = next(m for m in second.snapshot.meetings if m.target.kind == "webinar")
    assert again.polled_at == clock.now or again.polled_at > webinar.polled_at
    assert {p.participant_id for p in again.participants}  # a whole listing, not a half
    assert rig.calls("webinar_participants_qos") - before == 2 + -(-again.listed // 10)
    assert ("webinar_participants_qos", "page_token_expired", 1) in rig.client.retries.snapshot()
    assert second.health.state == "ok"

    # Page 1 passes (after=1); page 2 is refused; the restart's page 1 uses up one count but
    # passes (the fault only refuses requests that carry a page token); its page 2 is refused.
    sim.faults.add(ExpiredPageToken(3, "webinar_participants_qos", after=1))
    clock.now += 60
    twice = await rig.poller.run_cycle()
    assert twice.health.state == "degraded"  # restarted once, then it gives up until next cycle
    assert any("expired twice" in e for e in twice.health.errors)


async def test_a_meeting_that_ends_mid_cycle_is_dropped_quietly(
    sim: Simulator,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig(sim, session, clock, configured=[], discovery=True)
    first = await rig.poller.run_cycle()
    victim = next(m.target for m in first.snapshot.meetings if m.target.meeting_id != SEED[1])
    sim.scenario.end_meeting(victim.meeting_id, victim.kind)
    clock.now += 5  # too soon for discovery (10 a minute, two per run): the old list is used
    caplog.set_level(logging.INFO)
    before = rig.calls("list_meetings")
    second = await rig.poller.run_cycle()
    assert rig.calls("list_meetings") == before
    assert (victim.kind, victim.meeting_id) not in participants(second.snapshot)
    assert second.health.state == "ok" and not second.health.errors
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    gone = rig.calls(f"{victim.kind}_participants_qos")
    clock.now += 1  # the old discovery list is still in use, but the ended one is off it
    third = await rig.poller.run_cycle()
    assert rig.calls("list_meetings") == before
    assert rig.calls(f"{victim.kind}_participants_qos") - gone == sum(
        -(-m.listed // 10) for m in third.snapshot.meetings if m.target.kind == victim.kind
    )
    assert (victim.kind, victim.meeting_id) not in participants(third.snapshot)


async def test_rate_limit_headers_feed_the_budget_and_their_absence_is_fine(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(sim, session, clock, max_interval=300)
    first = await rig.poller.run_cycle()
    assert first.health.budget is not None
    assert first.health.budget.remaining == 15_000 - rig.calls()  # our own count is the lower
    # Other apps on the account spend most of the cap: Zoom's header becomes the lower.
    quota = app_state(sim.app).quota
    for _ in range(sim.quota_remaining - 20):
        quota.consume(clock.now)
    clock.now += 60
    second = await rig.poller.run_cycle()
    assert (
        second.health.budget is not None and second.health.budget.remaining == sim.quota_remaining
    )
    sim.faults.rate_limit_headers(False)  # from now on Zoom does not say; our count holds
    left = sim.quota_remaining
    snapshots = []
    for _ in range(8):
        clock.now += snapshots[-1].health.poll_interval_seconds if snapshots else 300
        snapshots.append(await rig.poller.run_cycle())
    assert all(s.health.poll_interval_seconds == 300 for s in snapshots)  # stretched to the cap
    assert any(s.health.meetings_deferred for s in snapshots)  # ~0.15 calls of allowance a cycle
    assert all(s.health.state == "ok" for s in snapshots)
    spent = sum(s.health.cycle_requests or 0 for s in snapshots)
    assert 0 < spent <= left and sim.quota_remaining == left - spent
    assert sim.limit_hits["Daily-limit"] == 0


async def test_a_small_budget_still_starts_with_every_meeting_then_stretches(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rig = make_rig(
        sim,
        session,
        clock,
        configured=[],
        discovery=True,
        interval=10.0,
        max_interval=300.0,
        client_options={"budget": DailyBudget(3_000)},
    )
    first = await rig.poller.run_cycle()
    assert set(participants(first.snapshot)) == sim_scenario(sim)  # discovered and polled at once
    assert first.health.cycle_requests == rig.calls() == first.health.planned_requests
    # 3,000 calls for the rest of the day at ~9 calls a cycle: far slower than every 10 s.
    assert first.health.budget is not None and first.health.poll_interval_seconds is not None
    left = first.health.budget.reset_timestamp - clock.now
    expected = (first.health.cycle_requests or 0) * left / first.health.budget.remaining
    assert first.health.poll_interval_seconds == pytest.approx(expected, rel=0.05)


def sim_scenario(sim: Simulator) -> set[tuple[str, str]]:
    """(kind, id) of what the simulator has live now."""
    return {
        (kind, str(m["id"]))
        for kind in ("meeting", "webinar")
        for m in sim.scenario.live_meetings(kind)
    }
