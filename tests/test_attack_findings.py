"""Regression tests from an outside attack on the "Run for real" work; each failed before its fix.

- A header-less per-second 429 whose limit headers read 0 of a daily-size limit must not
  stop polling until 00:00 UTC (issue 8: "a 0 on a QPS 429 ... is not trusted").
- A Daily-limit 429 with a Retry-After in the past must still hold the calls (it did not:
  the exporter called Zoom every cycle).
- One cycle's concurrent 401s/403s must count as one refusal for the backoff, not one each.
- A starving meeting that the remaining budget can never pay for must not block every other
  meeting until the reset.
- A state-file write that blocks must not stop the poll loop; two exporters must not share one.
- The credentials backoff must start again from its first step after Zoom accepts a call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from conftest import FakeClock
from exporter.polling.planner import Candidate, plan_cycle
from exporter.zoom.auth import TokenProvider
from exporter.zoom.errors import ZoomError
from exporter.zoom.limits import DailyBudget, Holds
from exporter.zoom.transport import Transport


async def _zoom(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    app = web.Application()

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _transport(session: aiohttp.ClientSession, base: str, **kw: Any) -> Transport:
    token = TokenProvider(
        oauth_url=base + "/oauth/token",
        account_id="a",
        client_id="c",
        client_secret=SecretStr("s"),
    )
    return Transport(session, token, api_url=base + "/v2", max_retries=0, **kw)


async def test_headerless_qps_429_with_zero_remaining_does_not_stop_the_day() -> None:
    async def qps(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": "You have reached the maximum per-second rate limit for this API."},
            status=429,
            headers={"X-RateLimit-Limit": "30000", "X-RateLimit-Remaining": "0"},
        )

    runner, base = await _zoom(qps)
    try:
        budget = DailyBudget(15000)
        async with aiohttp.ClientSession() as session:
            transport = _transport(session, base, budget=budget)
            with pytest.raises(ZoomError):
                await transport.get(
                    "meeting_participants_qos", "/metrics/meetings/1/participants/qos", {}
                )
            assert transport.paused() is None, "a per-second 429 paused the exporter for the day"
            assert budget.remaining(time.time()) > 0
    finally:
        await runner.cleanup()


async def test_daily_limit_with_past_retry_after_still_holds() -> None:
    async def daily(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": "You have exceeded the daily rate limit"},
            status=429,
            headers={"X-RateLimit-Type": "Daily-limit", "Retry-After": "2020-05-31T00:00:00Z"},
        )

    runner, base = await _zoom(daily)
    try:
        async with aiohttp.ClientSession() as session:
            transport = _transport(session, base)
            with pytest.raises(ZoomError):
                await transport.get("list_meetings", "/metrics/meetings", {})
            await asyncio.sleep(0.01)
            assert transport.paused() is not None, (
                "a daily limit with a past Retry-After held nothing"
            )
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status, body", [(401, {"code": 401, "message": "Invalid"}), (403, {})])
async def test_concurrent_refusals_are_one_backoff_step(status: int, body: dict[str, Any]) -> None:
    async def refuse(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)  # all four in flight together, as with concurrency 4
        return web.json_response(body, status=status)

    runner, base = await _zoom(refuse)
    try:
        holds = Holds()
        async with aiohttp.ClientSession() as session:
            transport = _transport(session, base, holds=holds, rng=lambda: 1.0)
            path = "/metrics/meetings/{}/participants/qos"
            results = await asyncio.gather(
                *(transport.get("meeting_participants_qos", path.format(i), {}) for i in range(4)),
                return_exceptions=True,
            )
            assert all(isinstance(r, ZoomError) for r in results)
            held = holds.current(time.time())
            longest = max(h.until for h in held.values()) - time.time()
            # The first step of CREDENTIALS_BACKOFF is at most 60 s; four concurrent refusals
            # made it 480 s.
            assert longest <= 61, f"one cycle's refusals held calls back for {longest:.0f} s"
    finally:
        await runner.cleanup()


def test_unaffordable_starving_meeting_does_not_block_the_others() -> None:
    now = time.time()
    big = Candidate(("meeting", "big"), cost=300, deferred=5)
    small = [
        Candidate(("meeting", f"m{i}"), cost=1, deferred=5, last_polled=now - 3600)
        for i in range(3)
    ]
    plan = plan_cycle(
        [big, *small],
        now=now,
        remaining=150,  # less than the big meeting costs: it cannot be polled today
        base_interval=60,
        max_interval=300,
        credit=140.0,
    )
    assert plan.selected, f"nothing polled with {plan.credit:.0f} calls of credit: {plan}"


async def test_a_state_file_write_that_blocks_does_not_stop_polling(tmp_path: Path) -> None:
    """The poll loop awaited the state-file write: a write that blocks (a hung NFS mount or a
    stalled disk) stopped every later cycle while zoom_exporter_state still said ok, and
    SIGTERM waited for it too."""
    from conftest import simulator
    from exporter.daemon import Daemon
    from exporter.settings import load_settings
    from exporter.simulator import Scenario

    released = threading.Event()
    async with simulator(Scenario(seed=3)) as sim, aiohttp.ClientSession() as session:
        settings = load_settings(
            {
                "api_url": sim.api_url,
                "oauth_url": sim.oauth_url,
                "account_id": "a",
                "client_id": "c",
                "client_secret": "s",
                "storage_path": str(tmp_path),
            }
        )
        daemon = Daemon(lambda: settings, settings, session)
        assert daemon.state_file is not None
        writes: list[int] = []

        def hung_disk(state: dict[str, Any]) -> bool:
            writes.append(1)
            return released.wait(30)

        daemon.state_file.save = hung_disk  # type: ignore[method-assign]
        try:
            for _ in range(4):
                report = await asyncio.wait_for(daemon.account().poller.run_cycle(), timeout=10)
                assert report.health.state == "ok"
            assert len(writes) == 1  # the write in flight is not joined by another
            started = time.monotonic()
            await daemon.flush()  # SIGTERM's last write gives up after a bound
            assert time.monotonic() - started < 5
        finally:
            released.set()


def test_two_exporters_on_one_storage_path_do_not_both_write(tmp_path: Path) -> None:
    """Both used one temporary name, so writes interleaved and readers saw corrupt files; now
    the second exporter claims nothing and writes nothing (an advisory lock), and says so."""
    import subprocess
    import sys

    from exporter.zoom.limits import StateFile

    first = StateFile(tmp_path)
    assert first.claim()
    other = subprocess.run(
        [sys.executable, "-c", "import sys, pathlib; from exporter.zoom.limits import StateFile;"
         f" sys.exit(0 if StateFile(pathlib.Path({str(tmp_path)!r})).claim() else 3)"],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert other.returncode == 3, other.stderr
    assert b"another exporter uses this storage path" in other.stderr
    assert first.save({"budget": {"day": 1, "used": 2}})
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


async def test_the_credentials_backoff_starts_again_after_a_success(clock: FakeClock) -> None:
    """A success releases only the meeting/webinar scope; the "all" hold of a past 401 (or
    of yesterday's daily limit) is never released, so every later incident starts further up
    the backoff (the RUNBOOK: first 30 to 60 s)."""
    refuse = True

    async def answer(request: web.Request) -> web.Response:
        if refuse:
            return web.json_response({"code": 401, "message": "Invalid"}, status=401)
        return web.json_response({"participants": []})

    runner, base = await _zoom(answer)
    try:
        async with aiohttp.ClientSession() as session:
            transport = _transport(session, base, clock=clock, rng=lambda: 1.0)
            path = "/metrics/meetings/1/participants/qos"
            for _incident in range(3):
                refuse = True
                with pytest.raises(ZoomError):
                    await transport.get("meeting_participants_qos", path, {})
                held = transport.holds.current(clock.time())["all"]
                wait = held.until - clock.time()
                assert wait <= 60, f"incident {_incident + 1} held calls back for {wait:.0f} s"
                clock.advance(wait + 1)
                refuse = False
                await transport.get("meeting_participants_qos", path, {})  # Zoom is fine again
    finally:
        await runner.cleanup()
