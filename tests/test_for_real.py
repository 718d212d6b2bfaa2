"""Running for weeks: state that survives reloads, one token at a time, Zoom's answers read
exactly, series that do not flap, no call wasted.

Each test here failed on the code before "Run for real" (issue 8); the docstring says how.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import SEED, FakeClock, Rig, make_rig, participants, simulator, zoom_client
from exporter.daemon import Daemon, ZoomAccount
from exporter.polling.poller import PollSettings
from exporter.polling.targets import configured_targets
from exporter.settings import Settings, SettingsError, load_settings
from exporter.simulator import Scenario, Simulator
from exporter.simulator.faults import DAILY_MESSAGE, QPS_MESSAGE
from exporter.zoom.limits import DailyBudget, Holds, StateFile
from exporter.zoom.transport import Action, classify, daily_remaining

IDLE_ID = "99999999999"  # a configured meeting that is not live
BUDGET = 700  # a day's budget so small that the planner defers meetings for long


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    async with simulator(Scenario(seed=11, clock=clock)) as server:
        yield server


# -- Zoom's answers, read exactly (pure) -------------------------------------------------------

PAID = "Only available for paid account and enabled Dashboard feature."
SCOPE = "Invalid access token, does not contain scopes:[dashboard_webinars:read:admin]."


@pytest.mark.parametrize(
    ("status", "code", "headers", "message", "action"),
    [
        (200, None, {}, "", Action.OK),
        (401, 124, {}, "Invalid access token.", Action.RENEW_TOKEN),
        (401, None, {}, "", Action.AUTH_FAILED),
        (401, 4700, {}, "", Action.AUTH_FAILED),
        (403, None, {}, "Forbidden", Action.FORBIDDEN),
        (400, 4711, {}, SCOPE, Action.FORBIDDEN),
        (400, 4700, {}, SCOPE, Action.FORBIDDEN),
        (400, 200, {}, PAID, Action.FORBIDDEN),
        (200, 200, {}, PAID, Action.FORBIDDEN),
        (200, 200, {}, "something else", Action.OK),
        (429, 429, {"X-RateLimit-Type": "QPS"}, QPS_MESSAGE, Action.QPS_LIMIT),
        (429, 429, {"X-RateLimit-Type": "Daily-limit"}, "", Action.DAILY_LIMIT),
        (429, None, {}, DAILY_MESSAGE, Action.DAILY_LIMIT),  # no type, the message says daily
        (429, None, {}, "slow down", Action.QPS_LIMIT),
        (429, None, {"X-RateLimit-Type": "QPS"}, "daily rate limit", Action.QPS_LIMIT),
        (500, None, {}, "", Action.RETRY),
        (503, None, {}, "", Action.RETRY),
        (404, 3001, {}, "Meeting does not exist", Action.FAIL),
        (400, 300, {}, "The next page token is invalid or expired.", Action.FAIL),
    ],
)
def test_classify(
    status: int, code: int | None, headers: dict[str, str], message: str, action: Action
) -> None:
    assert classify(status, code, headers, message) is action


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Limit": "30000", "X-RateLimit-Remaining": "29412"}, 29412),
        ({"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "3"}, None),  # a per-second figure
        ({"X-RateLimit-Remaining": "0"}, None),  # no limit: which bucket is it?
        (
            {"X-RateLimit-Type": "QPS", "X-RateLimit-Limit": "30000", "X-RateLimit-Remaining": "0"},
            None,
        ),
        ({"X-RateLimit-Type": "Daily-limit", "X-RateLimit-Remaining": "0"}, 0),
        ({"X-RateLimit-Limit": "30000", "X-RateLimit-Remaining": "-1"}, None),
        ({"X-RateLimit-Limit": "30000", "X-RateLimit-Remaining": "9" * 400}, None),
        ({"X-RateLimit-Limit": "30000", "X-RateLimit-Remaining": "40000"}, 30000),
        ({}, None),
    ],
)
def test_only_a_daily_figure_feeds_the_budget(
    headers: dict[str, str], expected: int | None
) -> None:
    assert daily_remaining(headers) == expected


# -- one token at a time -----------------------------------------------------------------------


async def test_concurrent_124s_renew_the_token_once(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Before: each of the 4 calls that got 124 cleared whatever token was current, so 4 token
    requests; with Zoom revoking older tokens on issue, the retried calls failed again."""
    async with simulator(Scenario(seed=3)) as sim:
        sim.faults.revoke_on_issue(True)
        client = zoom_client(session, sim.api_url, sim.oauth_url)
        live = await client.live_meetings("meeting")
        assert sim.stats["oauth_token"] == 1
        sim.faults.revoke_tokens()
        sim.faults.timeout(count=4, seconds=0.35)  # 350 ms latency: the 124s arrive together
        results = await asyncio.gather(
            *(client.participants_qos("meeting", m.uuid or "") for m in live[:4] * 2)
        )
        assert all(results)
        assert sim.stats["oauth_token"] == 2  # one renewal for every concurrent 124
        assert ("meeting_participants_qos", "401") in {
            (e, c) for e, c, _ in client.requests.snapshot()
        }


async def test_a_probe_beside_the_daemon_costs_the_daemon_one_renewal(
    session: aiohttp.ClientSession,
) -> None:
    """Zoom's strictest behaviour: a new token revokes the old ones. The daemon's token is
    knocked out by a `probe` run beside it; the daemon renews once and goes on."""
    async with simulator(Scenario(seed=3)) as sim:
        sim.faults.revoke_on_issue(True)
        daemon = zoom_client(session, sim.api_url, sim.oauth_url)
        probe = zoom_client(session, sim.api_url, sim.oauth_url)
        meeting = (await daemon.live_meetings("meeting"))[0].uuid or ""
        await probe.participants_qos("meeting", meeting)  # issues a token: the daemon's dies
        assert await daemon.participants_qos("meeting", meeting)
        assert daemon.token.issued == 2 and probe.token.issued == 1
        assert ("meeting_participants_qos", "token_renewed", 1) in daemon.retries.snapshot()


# -- reloads keep the daemon's state -----------------------------------------------------------


def settings_for(sim: Simulator, **overrides: Any) -> Settings:
    return load_settings(
        {
            "api_url": sim.api_url,
            "oauth_url": sim.oauth_url,
            "account_id": "a",
            "client_id": "c",
            "client_secret": "s",
            "poll_interval": 60,
            **overrides,
        }
    )


def account_of(settings: Settings) -> ZoomAccount:
    assert settings.client_secret is not None
    return ZoomAccount(
        settings.api_url,
        settings.oauth_url,
        settings.account_id or "",
        settings.client_id or "",
        settings.client_secret,
    )


async def test_a_reload_keeps_counters_the_pause_the_token_and_the_spend(
    session: aiohttp.ClientSession,
) -> None:
    """Before: a reload built a new client, so zoom_api_requests_total went back (10 -> 8), a
    Daily-limit pause was forgotten (daily_limit -> ok) and Zoom was called during it."""
    async with simulator(Scenario(seed=3)) as sim:
        settings = settings_for(sim)
        current = {"settings": settings}
        daemon = Daemon(lambda: current["settings"], settings, session)
        first = await daemon.account().poller.run_cycle()
        assert first.health.state == "ok"
        sim.faults.rate_limit(count=1, type="Daily-limit", retry_after=3600)
        hit = await daemon.account().poller.run_cycle()
        assert hit.health.state == "daily_limit"
        telemetry, requests = (
            daemon.account().telemetry,
            daemon.account().telemetry.requests.total(),
        )
        used = daemon.account().budget.used(hit.health.created_at)
        calls, tokens = sim.stats["total"], sim.stats["oauth_token"]

        current["settings"] = settings_for(sim, concurrency=2)  # a good file, same credentials
        assert await daemon.reload() is None
        assert daemon.config_reload[0] is True
        after = await daemon.account().poller.run_cycle()
        assert after.health.state == "daily_limit" and not after.health.up  # the pause is kept
        assert sim.stats["total"] == calls  # and Zoom was not called during it
        assert daemon.account().telemetry is telemetry and telemetry.requests.total() == requests
        assert daemon.account().budget.used(after.health.created_at) == used

        daemon.account().holds = Holds()  # (the pause over,) the token is reused across the reload
        daemon.account().poller.configure(daemon.account().client(), PollSettings(interval=60.0))
        assert (await daemon.account().poller.run_cycle()).health.state == "ok"
        assert sim.stats["oauth_token"] == tokens

        current["settings"] = settings_for(sim, client_secret="other")
        token = daemon.account().token
        assert await daemon.reload() is None
        assert daemon.account().token is not token  # new credentials: a new token


async def test_every_reload_failure_is_reported_as_one(session: aiohttp.ClientSession) -> None:
    """Before: an exception other than a settings error was lost ("Task exception was never
    retrieved") and the reload gauge kept saying 1."""
    async with simulator(Scenario(seed=3)) as sim:
        settings = settings_for(sim)
        outcomes: list[Exception | Settings] = [RuntimeError("boom"), SettingsError("bad")]

        def load() -> Settings:
            outcome = outcomes.pop(0) if outcomes else settings
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        daemon = Daemon(load, settings, session)
        assert await daemon.reload() == "unexpected RuntimeError"
        assert daemon.config_reload[0] is False
        assert await daemon.reload() == "bad"
        assert daemon.config_reload[0] is False
        assert await daemon.reload() is None
        assert daemon.config_reload[0] is True


async def test_overlapping_reloads_run_in_order(session: aiohttp.ClientSession) -> None:
    """Before: two SIGHUPs ran concurrently, and a slower good reload could overwrite a later
    failed one, so the gauge said 1 while the file was broken."""
    async with simulator(Scenario(seed=3)) as sim:
        settings = settings_for(sim)
        gate = asyncio.Event()
        calls: list[str] = []

        class SlowGood:
            """The first load is good but slow; the second is a broken file."""

            def __call__(self) -> Settings:
                calls.append("load")
                if len(calls) == 2:
                    raise SettingsError("broken YAML at line 3")
                return settings

        daemon = Daemon(SlowGood(), settings, session)
        original = daemon.account().poller.reconfigure

        async def slow_reconfigure(*args: Any, **kwargs: Any) -> None:
            await gate.wait()
            await original(*args, **kwargs)

        daemon.account().poller.reconfigure = slow_reconfigure  # type: ignore[method-assign]
        first = asyncio.create_task(daemon.reload())
        second = asyncio.create_task(daemon.reload())
        await asyncio.sleep(0)
        gate.set()
        assert await first is None
        assert await second == "broken YAML at line 3"
        assert daemon.config_reload[0] is False  # the later, failed reload has the last word


# -- freshness without flapping ----------------------------------------------------------------


async def test_deferred_meetings_keep_their_series_with_the_default_staleness(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Before: with a budget of 1,500 a day, live meetings vanished from /metrics for a cycle
    while deferred longer than max_staleness (600 s), then came back: `for:` clauses broke."""
    rig = make_rig(
        sim,
        session,
        clock,
        discovery=True,
        configured=[],
        client_options={"budget": DailyBudget(BUDGET)},
        interval=60.0,
        max_interval=300.0,
        max_staleness=600.0,
    )
    previous: set[tuple[str, str]] = set()
    deferred = vanished = 0
    for _ in range(60):
        report = await rig.poller.run_cycle()
        exported = set(participants(report.snapshot))
        live = {
            (kind, str(m.id))
            for kind in ("meeting", "webinar")
            for m in sim.scenario.meetings(kind, clock.now)
        }
        vanished += len((previous & live) - exported)
        deferred += report.health.meetings_deferred
        previous = exported
        clock.now += report.health.poll_interval_seconds or 60.0
    assert deferred > 20  # the budget really defers meetings
    assert vanished == 0


# -- no call wasted ----------------------------------------------------------------------------


def qos_404s(rig: Rig) -> int:
    return sum(
        n for e, code, n in rig.client.requests.snapshot() if e.endswith("qos") and code == "404"
    )


async def test_an_idle_configured_id_costs_nothing_after_discovery(
    sim: Simulator,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a configured id that was not live cost one Heavy call (404) and one INFO line
    every cycle, ~1,440 calls a day, although discovery showed it was not live."""
    caplog.set_level(logging.INFO, logger="exporter")
    configured = configured_targets([str(SEED[1]), IDLE_ID], [])
    rig = make_rig(sim, session, clock, discovery=True, configured=configured)
    for _ in range(5):
        report = await rig.poller.run_cycle()
        assert report.health.state == "ok" and report.health.meetings_not_live == 1
        assert SEED in participants(report.snapshot)
        clock.now += 60
    assert qos_404s(rig) == 0
    not_live = [r for r in caplog.records if r.getMessage() == "not live"]
    assert len(not_live) == 1 and getattr(not_live[0], "kv", {})["meeting_id"] == IDLE_ID


async def test_without_discovery_an_idle_id_is_tried_at_most_every_max_interval(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    configured = configured_targets([IDLE_ID], [])
    rig = make_rig(sim, session, clock, configured=configured, max_interval=300.0)
    for _ in range(5):  # 5 cycles within 300 s: one call
        await rig.poller.run_cycle()
        clock.now += 60
    assert qos_404s(rig) == 1
    clock.now += 300
    await rig.poller.run_cycle()
    assert qos_404s(rig) == 2


# -- errors classified exactly -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "headers", "state"),
    [
        (401, None, "Unauthorized", {}, "auth_failed"),
        (403, None, "Forbidden", {}, "forbidden"),
        (400, 4711, SCOPE, {}, "forbidden"),
        (400, 200, PAID, {}, "forbidden"),
        (200, 200, PAID, {}, "forbidden"),
        (429, None, DAILY_MESSAGE, {"X-RateLimit-Type": ""}, "daily_limit"),
    ],
)
async def test_each_error_class_has_its_state_and_is_not_paid_for_again(
    sim: Simulator,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    status: int,
    code: int | None,
    message: str,
    headers: dict[str, str],
    state: str,
) -> None:
    """Before: 401 (not 124), 403, a missing scope and "only available for paid account" were
    `unreachable` and paid for again every cycle; a 429 without a type was not a daily limit."""
    rig = make_rig(sim, session, clock)
    assert (await rig.poller.run_cycle()).health.state == "ok"
    clock.now += 60
    sim.faults.error(status, code, message, headers=headers)
    report = await rig.poller.run_cycle()
    assert report.health.state == state and not report.health.up
    assert participants(report.snapshot) == {SEED: participants(report.snapshot)[SEED]}
    if state == "forbidden":
        assert any(message in e for e in report.health.errors)  # Zoom's own words
    calls = rig.calls()
    clock.now += 20  # within the first backoff step (30-60 s, doubling up to 10 min)
    again = await rig.poller.run_cycle()
    assert again.health.state == state
    assert rig.calls() == calls  # held back: not paid for again next cycle
    if state != "daily_limit":
        clock.now += 60  # the hold is over; Zoom answers normally again
        assert (await rig.poller.run_cycle()).health.state == "ok"


async def test_a_qps_429_with_remaining_zero_does_not_stop_the_day(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Before: X-RateLimit-Remaining: 0 on a QPS 429 made the exporter believe the day's cap
    was spent, and it stopped until midnight."""
    rig = make_rig(sim, session, clock)
    headers = {
        "X-RateLimit-Type": "QPS",
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "Retry-After": "1",
    }
    sim.faults.error(429, 429, QPS_MESSAGE, headers=headers)
    report = await rig.poller.run_cycle()
    assert report.health.state == "ok" and SEED in participants(report.snapshot)
    assert report.health.budget is not None and report.health.budget.remaining > 14_000
    clock.now += 60
    assert (await rig.poller.run_cycle()).health.state == "ok"


# -- the state file: nothing on disk can stop a start ------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        b'{"version": 2, "budget": {"day": 1, "used": 5}}',
        b'{"version": 1, "budget": {"day": "today", "used": "many"}}',
        b'{"version": 1, "budget": {"day": 20775, "used": "many"}}',  # 20775: the test's day
        b'{"version": 1, "budget": {"day": 20775, "used": 1e400}}',
        b'{"version": 1, "budget": {"day": 20775, "used": -5}}',
        b'{"version": 1, "budget": {"day": 20775, "used": true}}',
        b'{"version": 1, "budget": {"day": true, "used": 7}}',
        b'{"version": 1, "budget": [], "daily_limit_until": "soon"}',
        b'{"version": 1, "daily_limit_until": NaN}',
        b"\xff\xfe not utf-8",
        b"[" * 100_000,
        b'{"version": 1, "pad": "' + b"x" * 200_000 + b'"}',
    ],
)
def test_a_corrupt_state_file_starts_the_day_afresh(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / StateFile.NAME).write_bytes(content)
    state = StateFile(tmp_path).load()
    budget = DailyBudget(1000)
    now = 1_795_000_000.0
    saved = state.get("budget") if state is not None else None
    assert not budget.resume(now, saved if isinstance(saved, dict) else {})
    assert budget.remaining(now) == 1000


def test_the_state_file_round_trip_and_an_unwritable_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = 1_795_000_000.0
    budget = DailyBudget(1000)
    budget.spend(now, 42)
    budget.observe(now, 900)
    store = StateFile(tmp_path / "new")
    assert store.save({"budget": budget.state(now)})
    again = DailyBudget(1000)
    saved = store.load()
    assert saved is not None and again.resume(now + 60, saved["budget"])
    assert again.used(now + 60) == 42 and again.remaining(now + 60) == 900
    assert not DailyBudget(1000).resume(now + 86_400, saved["budget"])  # another day

    blocked = tmp_path / "file"
    blocked.write_text("")
    broken = StateFile(blocked)  # a file where the directory should be
    caplog.set_level(logging.WARNING)
    assert not broken.save({"budget": budget.state(now)})
    assert not broken.save({"budget": budget.state(now)})
    assert sum("cannot write the state file" in r.getMessage() for r in caplog.records) == 1


async def test_new_credentials_lift_a_401_hold_at_once(session: aiohttp.ClientSession) -> None:
    """A 401 from the API holds every call for up to 10 minutes; a reload with other
    credentials must not wait for it."""
    async with simulator(Scenario(seed=3)) as sim:
        settings = settings_for(sim)
        current = {"settings": settings}
        daemon = Daemon(lambda: current["settings"], settings, session)
        assert (await daemon.account().poller.run_cycle()).health.state == "ok"
        sim.faults.error(401, None, "Unauthorized")
        assert (await daemon.account().poller.run_cycle()).health.state == "auth_failed"
        assert (await daemon.account().poller.run_cycle()).health.state == "auth_failed"  # held
        sim.faults.change_credentials("rotated")
        current["settings"] = settings_for(sim, client_secret="rotated")
        assert await daemon.reload() is None
        assert (await daemon.account().poller.run_cycle()).health.state == "ok"


# -- found by an outside attack ------------------------------------------------------------------


async def test_a_missing_webinar_scope_does_not_flap_the_state(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Webinars refused (400/4711) while meetings poll fine: the state said `forbidden` in
    cycles that ran discovery and `ok` in the others, and zoom_up flapped with it."""
    rig = make_rig(sim, session, clock, discovery=True, configured=[])
    sim.faults.error(400, 4711, SCOPE, endpoint="list_webinars", count=1000)
    states, ups = set(), set()
    for _ in range(12):
        report = await rig.poller.run_cycle()
        states.add(report.health.state)
        ups.add(report.health.up)
        assert any(kind == "meeting" for kind, _ in participants(report.snapshot))
        clock.now += 20
    assert states == {"forbidden"} and ups == {True}  # meetings polled: Zoom was reached


async def test_a_reload_storm_is_coalesced(session: aiohttp.ClientSession) -> None:
    """50 SIGHUPs in a second queued 50 reloads, each waking a cycle: 18 extra cycles and 54
    extra Zoom calls in 8 s. Reloads asked for while one waits are answered by it."""
    async with simulator(Scenario(seed=3)) as sim:
        settings = settings_for(sim)
        loads: list[int] = []

        def load() -> Settings:
            loads.append(1)
            return settings

        daemon = Daemon(load, settings, session)
        gate = asyncio.Event()
        original = daemon.account().poller.reconfigure

        async def slow(*args: Any, **kwargs: Any) -> None:
            await gate.wait()
            await original(*args, **kwargs)

        daemon.account().poller.reconfigure = slow  # type: ignore[method-assign]
        storm = [asyncio.create_task(daemon.reload()) for _ in range(50)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*storm) == [None] * 50
        assert len(loads) == 2  # the one under way, and one for everything asked meanwhile


async def test_a_reload_does_not_wait_for_a_cycle_in_flight(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """POST /-/reload waited for the cycle lock: 150 s and more while Zoom was slow."""
    rig = make_rig(sim, session, clock)
    await rig.poller.run_cycle()
    sim.faults.timeout(count=1, seconds=2.0)  # the next call hangs for 2 s (real time)
    cycle = asyncio.create_task(rig.poller.run_cycle())
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await rig.poller.reconfigure(rig.client, PollSettings(interval=120.0))
    assert asyncio.get_running_loop().time() - started < 0.5
    assert rig.poller.interval == 60.0  # not during the cycle...
    await cycle
    await rig.poller.run_cycle()
    assert rig.poller.interval == 120.0  # ...but from the next one
