"""The Zoom client against the simulator over real sockets: OAuth, pagination, errors."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from conftest import FAST_BACKOFF, FakeClock, zoom_client
from exporter.simulator import Scenario, Simulator
from exporter.simulator.scenario import SEED_MEETING_ID as _SEED_MEETING
from exporter.simulator.scenario import SEED_PARTICIPANT_ID
from exporter.zoom.client import ZoomClient, encode_meeting_id
from exporter.zoom.errors import (
    ZoomAPIError,
    ZoomAuthError,
    ZoomRateLimitError,
    ZoomTokenUnavailableError,
    ZoomTransportError,
)

SEED_MEETING_ID = str(_SEED_MEETING)

SECRET = "sim-secret-value"


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    simulator = Simulator(
        Scenario(seed=7, clock=clock),
        client_id="cid",
        client_secret=SECRET,
        account_id="acct",
        host="127.0.0.1",
        port=0,
    )
    async with simulator:
        yield simulator


def make_client(session: aiohttp.ClientSession, sim: Simulator, **overrides: object) -> ZoomClient:
    options: dict[str, object] = {
        "api_url": sim.api_url,
        "oauth_url": sim.oauth_url,
        "account_id": "acct",
        "client_id": "cid",
        "client_secret": SecretStr(SECRET),
        "timeout": 5.0,
        "backoff": FAST_BACKOFF,
    }
    options.update(overrides)
    return ZoomClient(session, **options)  # type: ignore[arg-type]


def test_encode_meeting_id() -> None:
    assert encode_meeting_id("85746065432") == "85746065432"
    assert encode_meeting_id("aBc+dEf==") == "aBc%2BdEf%3D%3D"
    assert encode_meeting_id("/abc==") == "%252Fabc%253D%253D"
    assert encode_meeting_id("ab//cd") == "ab%252F%252Fcd"


async def test_discovery_and_all_pages(sim: Simulator, session: aiohttp.ClientSession) -> None:
    client = make_client(session, sim)
    meetings = await client.live_meetings("meeting")
    webinars = await client.live_meetings("webinar")
    assert len(meetings) >= 3 and len(webinars) >= 1
    assert SEED_MEETING_ID in {m.id for m in meetings}
    for kind, found in (("meeting", meetings), ("webinar", webinars)):
        for live in found:
            assert live.uuid
            before = sim.stats.get(f"{kind}_participants_qos", 0)
            participants = await client.participants_qos(kind, live.uuid)  # type: ignore[arg-type]
            listed = sim.scenario.participants(kind, live.uuid)
            assert len(participants) == len(listed)
            pages = sim.stats[f"{kind}_participants_qos"] - before
            assert pages == max(1, math.ceil(len(listed) / 10))
    assert sim.stats["oauth_token"] == 1  # one token served every call


async def test_double_encoded_uuid_reaches_its_meeting(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = make_client(session, sim)
    meetings = await client.live_meetings("meeting")
    slashed = [m for m in meetings if m.uuid and (m.uuid.startswith("/") or "//" in m.uuid)]
    assert slashed, "the scenario must hold a UUID that needs double encoding"
    participants = await client.participants_qos("meeting", slashed[0].uuid or "")
    assert participants


async def test_single_participant_endpoint(sim: Simulator, session: aiohttp.ClientSession) -> None:
    client = make_client(session, sim)
    participant = await client.participant_qos("meeting", SEED_MEETING_ID, SEED_PARTICIPANT_ID)
    assert participant.participant_id == SEED_PARTICIPANT_ID
    assert participant.user_qos


async def test_revoked_token_is_renewed_once(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = make_client(session, sim)
    await client.live_meetings("meeting")
    sim.faults.revoke_tokens()
    meetings = await client.live_meetings("meeting")
    assert meetings
    assert sim.stats["oauth_token"] == 2
    assert ("list_meetings", "401", 1) in client.requests.snapshot()


async def test_token_renewed_before_expiry(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    client = make_client(session, sim, clock=clock)
    await client.live_meetings("meeting")
    clock.now += 3400  # inside the last five minutes of the hour: renew before Zoom rejects it
    await client.live_meetings("meeting")
    assert sim.stats["oauth_token"] == 2
    assert not any(code == "401" for _, code, _ in client.requests.snapshot())


async def test_wrong_credentials(sim: Simulator, session: aiohttp.ClientSession) -> None:
    client = make_client(session, sim, client_secret=SecretStr("wrong-secret-123"))
    with pytest.raises(ZoomAuthError) as caught:
        await client.live_meetings("meeting")
    message = str(caught.value)
    assert "oauth_token" in message and "CLIENT_SECRET" in message
    assert "wrong-secret-123" not in message and SECRET not in message


async def test_gone_meeting_is_404_3001(sim: Simulator, session: aiohttp.ClientSession) -> None:
    client = make_client(session, sim)
    with pytest.raises(ZoomAPIError) as caught:
        await client.participants_qos("meeting", "99999999999")
    assert caught.value.gone
    assert caught.value.code == 3001


async def test_rate_limited_call_waits_its_retry_after_then_succeeds(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    client = make_client(session, sim, clock=clock)
    await client.live_meetings("meeting")
    sim.faults.rate_limit(count=1, retry_after=3)
    assert await client.live_meetings("meeting")
    assert clock.slept >= 3  # Retry-After honoured (plus jitter), on the injected clock
    assert client.rate_limited.snapshot() == (("Resource-intensive", "QPS", 1),)
    assert client.retries.snapshot() == (("list_meetings", "rate_limited", 1),)


async def test_rate_limited_call_without_retries_is_a_typed_error(
    sim: Simulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    client = make_client(session, sim, clock=clock, max_retries=0)
    await client.live_meetings("meeting")
    sim.faults.rate_limit(count=1, retry_after=1)
    with pytest.raises(ZoomRateLimitError) as caught:
        await client.live_meetings("meeting")
    assert caught.value.status == 429
    assert caught.value.limit_type == "QPS"
    assert not caught.value.gone


async def test_counts_every_request(sim: Simulator, session: aiohttp.ClientSession) -> None:
    client = make_client(session, sim)
    await client.live_meetings("webinar")
    counted = client.requests.total()
    assert counted == sim.stats["total"]
    assert ("oauth_token", "200", 1) in client.requests.snapshot()


async def broken_server(handler: web.RequestHandler) -> web.AppRunner:  # type: ignore[type-arg]
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def runner_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"<html>not json</html>", 200), (b"[1, 2]", 200), (b'{"participants": "nope"}', 200)],
)
async def test_malformed_answers_are_transport_errors(
    session: aiohttp.ClientSession, body: bytes, status: int
) -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/token"):
            return web.json_response({"access_token": "t", "expires_in": 3600})
        return web.Response(body=body, status=status, content_type="application/json")

    runner = await broken_server(handler)
    try:
        base = runner_url(runner)
        client = zoom_client(session, base + "/v2", base + "/oauth/token", timeout=5)
        with pytest.raises(ZoomTransportError):
            await client.participants_qos("meeting", "1")
    finally:
        await runner.cleanup()


async def test_timeout_is_a_transport_error(session: aiohttp.ClientSession) -> None:
    import asyncio

    never = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    runner = await broken_server(handler)
    try:
        base = runner_url(runner)
        client = zoom_client(session, base + "/v2", base + "/oauth/token", timeout=0.2)
        with pytest.raises(ZoomTokenUnavailableError, match="timed out"):
            await client.live_meetings("meeting")
        assert ("oauth_token", "error", 1) in client.requests.snapshot()
    finally:
        never.set()
        await runner.cleanup()


async def test_discovery_sends_a_date_range(session: aiohttp.ClientSession) -> None:
    from datetime import UTC, datetime, timedelta

    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/token"):
            return web.json_response({"access_token": "t", "expires_in": 3600})
        seen.append(dict(request.query))
        return web.json_response({"meetings": [{"id": 1, "uuid": "u"}], "next_page_token": ""})

    runner = await broken_server(handler)
    try:
        base = runner_url(runner)
        client = zoom_client(session, base + "/v2", base + "/oauth/token")
        assert [m.id for m in await client.live_meetings("meeting")] == ["1"]
    finally:
        await runner.cleanup()
    today = datetime.now(UTC).date()
    assert seen == [
        {
            "type": "live",
            "from": (today - timedelta(days=1)).isoformat(),
            "to": today.isoformat(),
            "page_size": "300",
        }
    ]
