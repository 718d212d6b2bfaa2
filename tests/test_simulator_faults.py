"""The simulator's fault injection, schedules and rate-limit enforcement, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from conftest import FakeClock, simulator
from exporter.simulator import SEED_MEETING_ID, RateLimits, ScaledClock, Scenario, Simulator
from exporter.simulator.app import app_state
from exporter.simulator.faults import QPS_MESSAGE

Json = dict[str, Any]


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    async with simulator(Scenario(seed=1, clock=clock)) as server:
        yield server


def limited_sim(clock: FakeClock, **options: Any) -> Simulator:
    """A simulator like `simulator()`, with extra options (rate_limits, daily_limit)."""
    scenario = Scenario(seed=1, clock=clock)
    return Simulator(scenario, client_id="c", client_secret="s", account_id="a", **options)


def basic(secret: str = "s") -> dict[str, str]:
    encoded = base64.b64encode(f"c:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def post_token(
    sim: Simulator, http: aiohttp.ClientSession, secret: str = "s"
) -> tuple[int, Json]:
    form = {"grant_type": "account_credentials", "account_id": "a"}
    async with http.post(sim.oauth_url, headers=basic(secret), data=form) as response:
        return response.status, await response.json()


async def fetch_token(sim: Simulator, http: aiohttp.ClientSession, secret: str = "s") -> str:
    status, body = await post_token(sim, http, secret)
    assert status == 200, body
    return str(body["access_token"])


async def call(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Json, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(), response.headers


def qos_url(sim: Simulator) -> str:
    return f"{sim.api_url}/metrics/meetings/{SEED_MEETING_ID}/participants/qos"


def meetings_url(sim: Simulator) -> str:
    return f"{sim.api_url}/metrics/meetings"


async def post_fault(http: aiohttp.ClientSession, sim: Simulator, spec: Json) -> tuple[int, Json]:
    async with http.post(f"{sim.base_url}/_sim/faults", json=spec) as response:
        return response.status, await response.json()


async def sim_json(http: aiohttp.ClientSession, sim: Simulator, path: str) -> Json:
    async with http.get(f"{sim.base_url}{path}") as response:
        assert response.status == 200
        body: Json = await response.json()
        return body


# ----- timeout -----


async def test_timeout_outlasts_a_short_client_timeout_without_blocking_others(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    token = await fetch_token(sim, http)
    sim.faults.timeout(seconds=30, endpoint="meeting_participants_qos")
    short = aiohttp.ClientTimeout(total=0.3)

    async def impatient() -> int:
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(qos_url(sim), headers=auth, timeout=short) as response:
            return response.status

    held = asyncio.create_task(impatient())
    state = app_state(sim.app)
    for _ in range(200):  # wait until the server holds the request
        if state.held:
            break
        await asyncio.sleep(0.005)
    assert len(state.held) == 1
    assert (await call(http, meetings_url(sim), token))[0] == 200  # served meanwhile
    with pytest.raises(asyncio.TimeoutError):
        await held
    assert len(state.held) == 1  # still sleeping server-side after the client gave up
    assert (await call(http, qos_url(sim), token))[0] == 200  # the fault is used up

    started = time.monotonic()
    await sim.stop()  # cancels the 30 s sleep instead of waiting for it
    assert time.monotonic() - started < 5
    assert not state.held


async def test_timeout_then_answers_normally_also_on_the_token_endpoint(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    status, reply = await post_fault(
        http, sim, {"fault": "timeout", "seconds": 0.2, "endpoint": "oauth_token"}
    )
    assert status == 200 and reply["faults"][0]["seconds"] == 0.2
    started = time.monotonic()
    token = await fetch_token(sim, http)
    assert time.monotonic() - started >= 0.2
    sim.faults.timeout(seconds=0.2)
    started = time.monotonic()
    status, body, headers = await call(http, qos_url(sim), token)
    assert time.monotonic() - started >= 0.2
    assert status == 200 and body["participants"] and headers["X-RateLimit-Category"] == "Heavy"


# ----- reset -----


def tracing() -> tuple[aiohttp.TraceConfig, list[str]]:
    """A TraceConfig recording each attempt's outcome: its HTTP status, or "error"."""
    events: list[str] = []

    async def on_end(_: Any, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        events.append(str(params.response.status))

    async def on_error(_: Any, __: SimpleNamespace, ___: Any) -> None:
        events.append("error")

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_error)
    return trace, events


async def test_reset_drops_the_connection_without_a_response(sim: Simulator) -> None:
    trace, events = tracing()
    async with aiohttp.ClientSession(trace_configs=[trace]) as http:
        token = await fetch_token(sim, http)
        auth = {"Authorization": f"Bearer {token}"}
        before = sim.stats["meeting_participants_qos"]
        sim.faults.reset(count=2)  # aiohttp retries a GET once, so two resets reach the caller
        with pytest.raises(aiohttp.ClientOSError, match="reset by peer"):
            async with http.get(qos_url(sim), headers=auth):
                pass
        assert sim.stats["meeting_participants_qos"] == before + 2
        assert events == ["200", "error"]  # the token, then no status for the GET

        sim.faults.reset(count=1)  # one reset is absorbed by aiohttp's retry
        assert (await call(http, qos_url(sim), token))[0] == 200
        assert sim.stats["meeting_participants_qos"] == before + 4

        sim.faults.reset(count=2, rst=False)  # an orderly close instead of an RST
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(http, qos_url(sim), token)

        assert (await post_fault(http, sim, {"fault": "reset", "endpoint": "oauth_token"}))[
            0
        ] == 200
        with pytest.raises(aiohttp.ClientOSError):  # a POST is not retried
            await post_token(sim, http)
        assert events[-1] == "error" and (await post_token(sim, http))[0] == 200


# ----- malformed -----


async def test_malformed_answers_invalid_json(sim: Simulator, http: aiohttp.ClientSession) -> None:
    token = await fetch_token(sim, http)
    sim.faults.malformed()
    async with http.get(qos_url(sim), headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200 and response.content_type == "application/json"
        text = await response.text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

    status, _ = await post_fault(
        http, sim, {"fault": "malformed", "endpoint": "list_meetings", "status": 502}
    )
    assert status == 200
    assert (await call(http, qos_url(sim), token))[0] == 200  # only the listing is affected
    async with http.get(meetings_url(sim), headers={"Authorization": f"Bearer {token}"}) as reply:
        assert reply.status == 502
        with pytest.raises(json.JSONDecodeError):
            await reply.json()


# ----- the token endpoint -----


async def test_token_endpoint_down(sim: Simulator, http: aiohttp.ClientSession) -> None:
    token = await fetch_token(sim, http)
    sim.faults.token_endpoint_down(count=2)
    assert (await call(http, qos_url(sim), token))[0] == 200  # the API itself is up
    for _ in range(2):
        status, body = await post_token(sim, http)
        assert status == 503 and body["code"] == 503
    assert (await post_token(sim, http))[0] == 200

    sim.faults.server_error(endpoint="oauth_token")
    assert (await post_token(sim, http))[0] == 500
    sim.faults.server_error()  # without an endpoint: never the token endpoint
    assert (await post_token(sim, http))[0] == 200
    assert (await call(http, qos_url(sim), token))[0] == 500


async def test_change_credentials(sim: Simulator, http: aiohttp.ClientSession) -> None:
    old = await fetch_token(sim, http)
    status, _ = await post_fault(http, sim, {"fault": "change_credentials", "client_secret": "s2"})
    assert status == 200 and sim.client_secret == "s2"
    status, body = await post_token(sim, http)
    assert (status, body["error"]) == (400, "invalid_client")
    assert (await call(http, qos_url(sim), old))[0] == 200  # issued tokens stay valid
    sim.faults.revoke_tokens()
    assert (await call(http, qos_url(sim), old))[:2] == (
        401,
        {"code": 124, "message": "Invalid access token."},
    )
    fresh = await fetch_token(sim, http, secret="s2")
    assert (await call(http, qos_url(sim), fresh))[0] == 200


# ----- injected rate limits and headers -----


async def test_rate_limit_retry_after_as_http_date(
    sim: Simulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    token = await fetch_token(sim, http)
    clock.now += 0.25
    sim.faults.rate_limit(retry_after=7, retry_after_format="date")
    status, body, headers = await call(http, qos_url(sim), token)
    assert status == 429 and body["message"] == QPS_MESSAGE
    assert headers["Retry-After"].endswith(" GMT")
    when = parsedate_to_datetime(headers["Retry-After"])
    assert when.tzinfo is not None and when.timestamp() == math.ceil(clock.now + 7)

    status, _ = await post_fault(
        http, sim, {"fault": "rate_limit", "retry_after": 3, "retry_after_format": "epoch"}
    )
    assert status == 400
    sim.faults.rate_limit(retry_after=3)
    assert (await call(http, qos_url(sim), token))[2]["Retry-After"] == "3"


async def test_rate_limit_headers_can_be_omitted(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    token = await fetch_token(sim, http)
    assert "X-RateLimit-Remaining" in (await call(http, qos_url(sim), token))[2]
    assert (await post_fault(http, sim, {"fault": "rate_limit_headers", "enabled": False}))[
        0
    ] == 200
    sim.faults.rate_limit(type="Daily-limit", retry_after=60)
    for expected in (429, 200):
        status, _, headers = await call(http, qos_url(sim), token)
        assert status == expected
        assert not [name for name in headers if name.lower().startswith("x-ratelimit")]
    assert headers.get("Content-Type", "").startswith("application/json")
    assert (await post_fault(http, sim, {"fault": "rate_limit_headers", "enabled": "no"}))[0] == 400
    sim.faults.rate_limit_headers(True)
    assert (await call(http, qos_url(sim), token))[2]["X-RateLimit-Category"] == "Heavy"


# ----- schedules -----


async def test_after_lets_the_first_requests_through(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    token = await fetch_token(sim, http)
    status, reply = await post_fault(http, sim, {"fault": "server_error", "after": 2, "count": 2})
    assert status == 200 and reply["faults"][0]["after"] == 2
    statuses = [(await call(http, qos_url(sim), token))[0]]
    assert (await sim_json(http, sim, "/_sim/faults"))["faults"][0]["after"] == 1
    statuses += [(await call(http, qos_url(sim), token))[0] for _ in range(4)]
    assert statuses == [200, 200, 500, 500, 200]
    assert sim.faults.pending() == []


async def test_at_waits_for_the_scenario_clock(
    sim: Simulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    token = await fetch_token(sim, http)
    sim.faults.reset(count=2, at=clock.now + 60)
    sim.faults.rate_limit(at=clock.now + 60, after=1, retry_after=5)
    assert sim.faults.pending()[0]["at"] == clock.now + 60
    assert (await call(http, qos_url(sim), token))[0] == 200
    clock.now += 59.5
    assert (await call(http, qos_url(sim), token))[0] == 200
    clock.now += 0.5
    with pytest.raises(aiohttp.ClientOSError):
        await call(http, qos_url(sim), token)
    # the rate limit let the first request at `at` through (after=1); now it answers
    status, _, headers = await call(http, qos_url(sim), token)
    assert status == 429 and headers["Retry-After"] == "5"
    assert (await call(http, qos_url(sim), token))[0] == 200


# ----- enforced rate limits -----


def test_rate_limit_plans(clock: FakeClock) -> None:
    assert RateLimits(10, 10, 30_000) == RateLimits.PRO
    assert RateLimits.for_plan("Business") == RateLimits(40, 20, 60_000)
    assert RateLimits.for_plan("business+") == RateLimits.for_plan("enterprise")
    assert RateLimits.for_plan("pro") is RateLimits.PRO
    assert limited_sim(clock, rate_limits=RateLimits.BUSINESS).daily_limit == 60_000
    assert limited_sim(clock, rate_limits=RateLimits.BUSINESS, daily_limit=5).daily_limit == 5
    assert limited_sim(clock).rate_limits == RateLimits()
    with pytest.raises(ValueError):
        RateLimits(heavy_per_second=0)
    with pytest.raises(ValueError):
        RateLimits.for_plan("free")


async def test_qps_limits_like_zoom(http: aiohttp.ClientSession, clock: FakeClock) -> None:
    async with limited_sim(clock, rate_limits=RateLimits.PRO) as sim:
        token = await fetch_token(sim, http)
        replies = await asyncio.gather(*(call(http, qos_url(sim), token) for _ in range(11)))
        limited = [r for r in replies if r[0] == 429]
        assert len(limited) == 1 and sum(r[0] == 200 for r in replies) == 10
        _, body, headers = limited[0]
        assert body == {"code": 429, "message": QPS_MESSAGE}
        assert headers["X-RateLimit-Type"] == "QPS" and headers["Retry-After"] == "1"
        assert headers["X-RateLimit-Category"] == "Heavy"
        assert sim.limit_hits == {"QPS": 1, "Daily-limit": 0}
        assert sim.quota_used == 10  # the rejected call did not count

        clock.now += 1
        assert [(await call(http, qos_url(sim), token))[0] for _ in range(10)] == [200] * 10

        for _ in range(5):
            assert (await call(http, meetings_url(sim), token))[0] == 200
        clock.now += 20
        for _ in range(5):
            assert (await call(http, f"{sim.api_url}/metrics/webinars", token))[0] == 200
        status, _, headers = await call(http, meetings_url(sim), token)
        assert (status, headers["X-RateLimit-Type"], headers["Retry-After"]) == (429, "QPS", "40")
        assert headers["X-RateLimit-Category"] == "Resource-intensive"
        clock.now += 40  # the first five leave the minute's window
        assert (await call(http, meetings_url(sim), token))[0] == 200
        assert sim.limit_hits["QPS"] == 2 and sim.quota_used == 31


async def test_daily_cap_retry_after_reaches_midnight_utc(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with limited_sim(clock, daily_limit=2, rate_limits=RateLimits.PRO) as sim:
        token = await fetch_token(sim, http)
        assert [(await call(http, qos_url(sim), token))[0] for _ in range(2)] == [200, 200]
        status, body, headers = await call(http, qos_url(sim), token)
        assert status == 429 and headers["X-RateLimit-Type"] == "Daily-limit"
        assert body["message"].startswith("You have reached the maximum daily rate limit")
        today = datetime.fromtimestamp(clock.now, UTC).date()
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
        assert clock.now + int(headers["Retry-After"]) == midnight.timestamp()
        assert sim.limit_hits == {"QPS": 0, "Daily-limit": 1}
        assert (sim.quota_used, sim.quota_remaining) == (2, 0)
        clock.now = midnight.timestamp()
        token = await fetch_token(sim, http)
        assert (await call(http, qos_url(sim), token))[0] == 200
        assert (sim.quota_used, sim.quota_remaining) == (1, 1)


async def test_peak_rate_is_tracked_without_enforcement(
    sim: Simulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    token = await fetch_token(sim, http)
    for _ in range(15):
        assert (await call(http, qos_url(sim), token))[0] == 200  # no limit enforced
    await call(http, qos_url(sim), "bad-token")  # rejected: not counted
    clock.now += 1
    for _ in range(3):
        await call(http, qos_url(sim), token)
    assert sim.peak_rate("Heavy") == 15

    for _ in range(2):
        await call(http, meetings_url(sim), token)
    clock.now += 59
    await call(http, meetings_url(sim), token)
    assert sim.peak_rate("Resource-intensive") == 3
    clock.now += 1  # the first two are now out of the 60 s window
    await call(http, meetings_url(sim), token)
    assert sim.peak_rate("Resource-intensive") == 3
    with pytest.raises(ValueError):
        sim.peak_rate("Light")


# ----- /_sim observability -----


async def test_sim_scenario_and_limits_json(
    sim: Simulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    token = await fetch_token(sim, http)
    await call(http, meetings_url(sim), token)
    await call(http, qos_url(sim), token)
    world = await sim_json(http, sim, "/_sim/scenario")
    assert world["time"] == clock.now
    expected = [
        {k: m[k] for k in ("id", "uuid", "topic", "participants")} | {"kind": kind}
        for kind in ("meeting", "webinar")
        for m in sim.scenario.live_meetings(kind)
    ]
    assert world["meetings"] == expected and len(expected) == 4
    assert world["participants"] == sim.scenario.participant_count() > 0

    limits = await sim_json(http, sim, "/_sim/limits")
    assert limits == {
        "limit_hits": {"QPS": 0, "Daily-limit": 0},
        "quota_used": 2,
        "quota_remaining": 30_000 - 2,
        "peak": {"Heavy": 1, "Resource-intensive": 1},
    }


async def test_new_faults_are_listed_and_validated(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    specs: list[Json] = [
        {"fault": "timeout", "seconds": 5, "at": 2e9},
        {"fault": "reset", "endpoint": "list_meetings", "after": 3},
        {"fault": "malformed", "status": 500},
        {"fault": "token_endpoint_down", "count": 2},
        {"fault": "rate_limit", "retry_after_format": "date"},
    ]
    for spec in specs:
        assert (await post_fault(http, sim, spec))[0] == 200
    pending = (await sim_json(http, sim, "/_sim/faults"))["faults"]
    assert [f["fault"] for f in pending] == [
        "timeout",
        "reset",
        "malformed",
        "server_error",
        "rate_limit",
    ]
    assert (pending[0]["at"], pending[1]["after"]) == (2e9, 3)
    assert (pending[3]["endpoint"], pending[3]["status"], pending[3]["remaining"]) == (
        "oauth_token",
        503,
        2,
    )
    for bad in (
        {"fault": "timeout", "seconds": -1},
        {"fault": "reset", "after": -1},
        {"fault": "malformed", "status": 99},
        {"fault": "change_credentials", "client_secret": ""},
        {"fault": "timeout", "bogus": 1},
    ):
        assert (await post_fault(http, sim, bad))[0] == 400, bad
    assert len(sim.faults.pending()) == 5


# ----- ScaledClock -----


def test_scaled_clock_runs_speed_times_faster() -> None:
    ticks = iter([100.0, 100.5, 103.0])
    clock = ScaledClock(60, start=1_000.0, monotonic=lambda: next(ticks))
    assert clock() == 1_030.0 and clock() == 1_180.0

    before = time.monotonic()
    real = ScaledClock(1_000.0, start=5_000.0)
    after = time.monotonic()
    time.sleep(0.02)  # real time has to pass: that is what is measured
    low = time.monotonic()
    reading = real()
    high = time.monotonic()
    assert 5_000 + 1_000 * (low - after) <= reading <= 5_000 + 1_000 * (high - before)

    assert abs(ScaledClock(1.0)() - time.time()) < 1
    with pytest.raises(ValueError):
        ScaledClock(0)
