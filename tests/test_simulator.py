"""The Zoom API simulator, exercised over real loopback HTTP with a fake clock."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from exporter.simulator import (
    SEED_MEETING_ID,
    SEED_MEETING_TOPIC,
    SEED_PARTICIPANT_ID,
    SLASH_MEETING_UUID,
    Scenario,
    Simulator,
    is_poor,
)
from exporter.simulator.qos import SEED_SAMPLE
from exporter.zoom.models import LiveMeeting, Participant
from exporter.zoom.units import parse_bitrate, parse_duration, parse_percent

START = 1_795_820_400.0  # 2026-11-27T23:00:00Z, an hour before a UTC midnight
CREDS = {"client_id": "cid", "client_secret": "secret", "account_id": "acct"}


Json = dict[str, Any]


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_sim(clock: FakeClock | None = None, daily_limit: int = 30000) -> Simulator:
    scenario = Scenario(seed=1, clock=clock or FakeClock())
    return Simulator(
        scenario,
        client_id="cid",
        client_secret="secret",
        account_id="acct",
        daily_limit=daily_limit,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    async with make_sim(clock) as server:
        yield server


def basic(login: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{login}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def fetch_token(sim: Simulator, http: aiohttp.ClientSession) -> str:
    auth = basic(CREDS["client_id"], CREDS["client_secret"])
    form = {"grant_type": "account_credentials", "account_id": CREDS["account_id"]}
    async with http.post(sim.oauth_url, headers=auth, data=form) as response:
        assert response.status == 200
        body: Json = await response.json()
    return str(body["access_token"])


@pytest.fixture
async def token(sim: Simulator, http: aiohttp.ClientSession) -> str:
    return await fetch_token(sim, http)


async def call(
    http: aiohttp.ClientSession, url: str | URL, token: str | None, **params: Any
) -> tuple[int, Json, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers, params=params or None) as response:
        return response.status, await response.json(), response.headers


def qos_url(sim: Simulator, ref: object, kind: str = "meetings") -> str:
    return f"{sim.api_url}/metrics/{kind}/{ref}/participants/qos"


async def all_pages(http: aiohttp.ClientSession, url: str, token: str, size: int) -> list[Json]:
    pages, next_token = [], ""
    while True:
        params: Json = {"type": "live", "page_size": size}
        if next_token:
            params["next_page_token"] = next_token
        status, body, _ = await call(http, url, token, **params)
        assert status == 200, body
        pages.append(body)
        next_token = body["next_page_token"]
        if not next_token:
            return pages


def newest(participant: Json) -> Json:
    samples: list[Json] = participant["user_qos"]
    return max(samples, key=lambda s: str(s["date_time"]))


def check_participant(raw: Json) -> Participant:
    """Validates with the exporter's model, and the values parse with its unit parsers."""
    model = Participant.model_validate(raw)
    assert model.user_id and model.join_time is not None
    for sample in model.user_qos:
        assert sample.date_time is not None and sample.audio_input is not None
        assert parse_bitrate(sample.audio_input.bitrate) is not None
        assert parse_duration(sample.audio_input.latency) is not None
        assert parse_percent(sample.audio_input.avg_loss) is not None
    return model


# ----- OAuth and bearer tokens -----


async def test_oauth_issues_bearer_tokens(sim: Simulator, http: aiohttp.ClientSession) -> None:
    query = {"grant_type": "account_credentials", "account_id": "acct"}
    async with http.post(sim.oauth_url, headers=basic("cid", "secret"), params=query) as response:
        body = await response.json()
    assert response.status == 200
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["scope"] == "dashboard_meetings:read:admin dashboard_webinars:read:admin"
    assert body["access_token"] and body["api_url"] == sim.base_url


@pytest.mark.parametrize(
    ("auth", "account", "status", "error"),
    [
        (basic("cid", "wrong"), "acct", 400, "invalid_client"),
        (basic("other", "secret"), "acct", 400, "invalid_client"),
        (basic("cid", "secret"), "elsewhere", 400, "invalid_request"),
        ({}, "acct", 401, None),
    ],
)
async def test_oauth_rejects_bad_credentials(
    sim: Simulator,
    http: aiohttp.ClientSession,
    auth: dict[str, str],
    account: str,
    status: int,
    error: str | None,
) -> None:
    form = {"grant_type": "account_credentials", "account_id": account}
    async with http.post(sim.oauth_url, headers=auth, data=form) as response:
        body = await response.json()
    assert response.status == status
    if error:
        assert body["error"] == error
    if error == "invalid_request":
        assert body["reason"] == "Invalid account_id"


async def test_bearer_token_checks(
    sim: Simulator, http: aiohttp.ClientSession, token: str, clock: FakeClock
) -> None:
    url = f"{sim.api_url}/metrics/meetings"
    invalid = {"code": 124, "message": "Invalid access token."}
    assert (await call(http, url, None))[:2] == (401, invalid)
    assert (await call(http, url, "not-a-token"))[:2] == (401, invalid)
    assert (await call(http, url, token))[0] == 200
    clock.advance(3599)
    assert (await call(http, url, token))[0] == 200
    clock.advance(1)
    assert (await call(http, url, token))[:2] == (401, invalid)

    fresh = await fetch_token(sim, http)
    assert (await call(http, url, fresh))[0] == 200
    sim.faults.revoke_tokens()
    assert (await call(http, url, fresh))[:2] == (401, invalid)
    assert (await call(http, url, await fetch_token(sim, http)))[0] == 200


# ----- discovery -----


async def test_discovery_lists_live_meetings_and_webinars(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    status, body, headers = await call(http, f"{sim.api_url}/metrics/meetings", token, type="live")
    assert status == 200
    assert body["from"] == body["to"] == "2026-11-27"
    assert (body["page_count"], body["page_size"], body["total_records"]) == (1, 30, 3)
    assert body["next_page_token"] == ""
    first = body["meetings"][0]
    assert first["id"] == SEED_MEETING_ID and isinstance(first["id"], int)
    assert first["topic"] == SEED_MEETING_TOPIC and first["end_time"] == ""
    assert any(m["uuid"] == SLASH_MEETING_UUID for m in body["meetings"])
    for entry in body["meetings"]:
        model = LiveMeeting.model_validate(entry)
        assert model.start_time is not None and model.start_time.timestamp() < START
        assert 4 <= entry["participants"] <= 15
    assert headers["X-RateLimit-Category"] == "Resource-intensive"

    status, body, _ = await call(http, f"{sim.api_url}/metrics/webinars", token)
    assert status == 200 and len(body["webinars"]) == 1
    assert body["webinars"][0]["participants"] >= 20


# ----- participants QoS and pagination -----


async def test_webinar_pagination_caps_at_ten_and_reaches_everyone_once(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    webinar = sim.scenario.live_meetings("webinar")[0]
    pages = await all_pages(http, qos_url(sim, webinar["id"], "webinars"), token, size=50)
    assert [len(p["participants"]) for p in pages] == [10, 10, 5]
    assert all(p["page_size"] == 10 and p["page_count"] == 3 for p in pages)
    assert all(p["total_records"] == 25 for p in pages)
    seen = [(p["user_id"], p["join_time"]) for page in pages for p in page["participants"]]
    assert len(seen) == len(set(seen)) == 25
    expected = sim.scenario.participants("webinar", webinar["id"])
    assert seen == [(p["user_id"], p["join_time"]) for p in expected]
    for page in pages:
        for participant in page["participants"]:
            check_participant(participant)


async def test_default_page_size_is_one(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    status, body, headers = await call(http, qos_url(sim, SEED_MEETING_ID), token)
    assert status == 200 and body["page_size"] == 1 and len(body["participants"]) == 1
    assert body["next_page_token"] and body["total_records"] == 8
    assert headers["X-RateLimit-Category"] == "Heavy"


async def test_page_tokens_expire_after_fifteen_minutes(
    sim: Simulator, http: aiohttp.ClientSession, token: str, clock: FakeClock
) -> None:
    url = qos_url(sim, SEED_MEETING_ID)
    expired = {"code": 300, "message": "The next page token is invalid or expired."}
    _, first, _ = await call(http, url, token, page_size=3)
    clock.advance(15 * 60 - 1)
    status, _, _ = await call(
        http, url, token, page_size=3, next_page_token=first["next_page_token"]
    )
    assert status == 200
    clock.advance(1)
    reply = await call(http, url, token, page_size=3, next_page_token=first["next_page_token"])
    assert reply[:2] == (400, expired)
    assert (await call(http, url, token, next_page_token="bogus"))[:2] == (400, expired)

    _, first, _ = await call(http, url, token, page_size=3)
    sim.faults.expire_page_tokens()
    reply = await call(http, url, token, page_size=3, next_page_token=first["next_page_token"])
    assert reply[:2] == (400, expired)


async def test_double_encoded_uuid_resolves(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    double = quote(quote(SLASH_MEETING_UUID, safe=""), safe="")
    assert double.startswith("%252F") and "%252F%252F" in double
    status, body, _ = await call(http, qos_url(sim, double), token, page_size=10)
    assert status == 200 and body["total_records"] == 13
    encoded = URL(qos_url(sim, double), encoded=True)
    assert (await call(http, encoded, token))[0] == 200
    single = URL(qos_url(sim, quote(SLASH_MEETING_UUID, safe="")), encoded=True)
    assert (await call(http, single, token))[0] == 404  # Zoom requires double-encoding here

    plain = sim.scenario.add_meeting(uuid="Ab/cD+eF0123456789xyzQ==")["uuid"]
    single = URL(qos_url(sim, quote(plain, safe="")), encoded=True)
    assert (await call(http, single, token))[0] == 200


async def test_unknown_and_ended_meetings_are_404_3001(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    missing = {"code": 3001, "message": "This meeting's detail info is not available."}
    assert (await call(http, qos_url(sim, 12345678901), token))[:2] == (404, missing)
    meeting = sim.scenario.live_meetings("meeting")[2]
    assert (await call(http, qos_url(sim, meeting["id"]), token))[0] == 200
    sim.scenario.end_meeting(meeting["id"])
    assert (await call(http, qos_url(sim, meeting["id"]), token))[:2] == (404, missing)
    one = f"{sim.api_url}/metrics/meetings/{meeting['id']}/participants/16778240/qos"
    assert (await call(http, one, token))[:2] == (404, missing)
    _, listing, _ = await call(http, f"{sim.api_url}/metrics/meetings", token)
    assert meeting["id"] not in [m["id"] for m in listing["meetings"]]

    nobody = f"{sim.api_url}/metrics/meetings/{SEED_MEETING_ID}/participants/999/qos"
    status, body, _ = await call(http, nobody, token)
    assert (status, body["code"]) == (404, 3001)


async def test_seed_participant_carries_the_documented_sample(
    sim: Simulator, http: aiohttp.ClientSession, token: str, clock: FakeClock
) -> None:
    url = f"{sim.api_url}/metrics/meetings/{SEED_MEETING_ID}/participants/{SEED_PARTICIPANT_ID}/qos"
    for _ in range(3):
        status, body, _ = await call(http, url, token, type="live")
        assert status == 200
        assert (body["user_name"], body["device"]) == ("Seed Sample", "Android")
        assert body["version"] == "4.4.55383.0726" and "id" in body
        latest = newest(body)
        assert {k: v for k, v in latest.items() if k != "date_time"} == SEED_SAMPLE
        assert latest["audio_input"]["avg_loss"] == "0.3%"
        assert latest["video_input"]["resolution"] == "1280*720"
        assert latest["as_input"]["frame_rate"] == ""
        assert latest["cpu_usage"]["system_max_cpu_usage"] == "40%"
        check_participant(body)
        clock.advance(17 * 60)


# ----- fault injection and rate limits -----


async def test_injected_rate_limit_answers_429(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    url = qos_url(sim, SEED_MEETING_ID)
    sim.faults.rate_limit(count=2, retry_after=3)
    for _ in range(2):
        status, body, headers = await call(http, url, token)
        assert status == 429 and body["code"] == 429
        assert body["message"].startswith("You have reached the maximum per-second rate limit")
        assert headers["Retry-After"] == "3" and headers["X-RateLimit-Type"] == "QPS"
    assert (await call(http, url, token))[0] == 200

    async with http.post(f"{sim.base_url}/_sim/faults", json={"fault": "server_error"}) as reply:
        assert reply.status == 200
    assert (await call(http, url, token))[0] == 500
    assert (await call(http, url, token))[0] == 200


async def test_rate_limit_headers_and_daily_cap(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with make_sim(clock, daily_limit=3) as sim:
        token = await fetch_token(sim, http)
        url = f"{sim.api_url}/metrics/webinars"
        remaining = [(await call(http, url, token))[2]["X-RateLimit-Remaining"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        status, body, headers = await call(http, url, token)
        assert status == 429 and body["code"] == 429
        assert headers["X-RateLimit-Type"] == "Daily-limit"
        assert headers["X-RateLimit-Limit"] == "3" and headers["Retry-After"] == "3600"
        clock.advance(3600)  # 00:00 UTC: the count resets
        token = await fetch_token(sim, http)
        status, _, headers = await call(http, url, token)
        assert status == 200 and headers["X-RateLimit-Remaining"] == "2"


async def test_stats_count_requests_per_endpoint(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    await call(http, f"{sim.api_url}/metrics/meetings", token)
    await call(http, qos_url(sim, SEED_MEETING_ID), token)
    await call(http, qos_url(sim, SEED_MEETING_ID), None)
    stats = sim.stats
    assert stats["oauth_token"] == 1 and stats["list_meetings"] == 1
    assert stats["meeting_participants_qos"] == 2 and stats["webinar_participant_qos"] == 0
    assert stats["total"] == 4
    async with http.get(f"{sim.base_url}/_sim/stats") as reply:
        assert await reply.json() == stats
    sim.reset_stats()
    assert sim.stats["total"] == 0


# ----- the scenario -----


def snapshot(scenario: Scenario) -> list[Any]:
    kinds = ("meeting", "webinar")
    return [
        (m, scenario.participants(kind, m["id"]))
        for kind in kinds
        for m in scenario.live_meetings(kind)
    ]


def test_same_seed_and_time_give_the_same_data() -> None:
    one, two = FakeClock(), FakeClock()
    first, second = Scenario(seed=7, clock=one), Scenario(seed=7, clock=two)
    for step in (0, 90, 25 * 60):
        one.advance(step)
        two.advance(step)
        assert snapshot(first) == snapshot(second) == snapshot(first)
    assert snapshot(Scenario(seed=8, clock=FakeClock())) != snapshot(Scenario(clock=FakeClock()))


def test_values_drift_over_time() -> None:
    clock = FakeClock()
    scenario = Scenario(seed=1, clock=clock)
    meeting = scenario.live_meetings()[1]["id"]
    before = [newest(p)["audio_input"] for p in scenario.participants("meeting", meeting)]
    clock.advance(5 * 60)
    after = [newest(p)["audio_input"] for p in scenario.participants("meeting", meeting)]
    assert before != after


def test_poor_participants_are_flagged_and_look_poor() -> None:
    scenario = Scenario(seed=1, clock=FakeClock())
    flagged = scenario.poor_participants()
    assert 2 <= len(flagged) <= 4
    for kind, meeting_id, user_id in flagged:
        person = scenario.participant(kind, meeting_id, user_id)
        assert person is not None and is_poor(person)
        audio, video = newest(person)["audio_input"], newest(person)["video_input"]
        assert parse_percent(audio["avg_loss"]) > 0.02  # type: ignore[operator]
        assert parse_bitrate(audio["bitrate"]) < 72_000 / 8  # type: ignore[operator]
        if video["bitrate"]:
            assert parse_bitrate(video["bitrate"]) < 128_000 / 8  # type: ignore[operator]
    poor = {(k, m, u) for k, m, u in flagged}
    for kind in ("meeting", "webinar"):
        for meeting in scenario.live_meetings(kind):
            for person in scenario.participants(kind, meeting["id"]):
                expected = (kind, meeting["id"], person["user_id"]) in poor
                assert is_poor(person) == expected or not person["user_qos"]


def test_listing_looks_like_zoom() -> None:
    scenario = Scenario(seed=1, clock=FakeClock())
    people = [
        person
        for kind in ("meeting", "webinar")
        for meeting in scenario.live_meetings(kind)
        for person in scenario.participants(kind, meeting["id"])
    ]
    assert any(p["user_name"] == "" and p["ip_address"] == "" for p in people)
    assert any("wifi_rssi" in s and isinstance(s["wifi_rssi"]["avg_rssi"], int)
               for p in people for s in p["user_qos"])  # fmt: skip
    assert any("audio_device_from_rwg" in s for p in people for s in p["user_qos"])
    assert any("video_device_to_crc" in s for p in people for s in p["user_qos"])
    assert any(p["leave_time"] for p in people)
    unordered = [
        p for p in people if [s["date_time"] for s in p["user_qos"]] != sorted(
            s["date_time"] for s in p["user_qos"])
    ]  # fmt: skip
    assert unordered
    review = scenario.participants("meeting", SLASH_MEETING_UUID)
    ids = [p["user_id"] for p in review]
    twice = {i for i in ids if ids.count(i) == 2}
    assert len(twice) == 1
    entries = [p for p in review if p["user_id"] in twice]
    assert entries[0]["leave_time"] and entries[1]["leave_time"] == ""


def test_churn_keeps_the_demo_light_and_meetings_rotate() -> None:
    clock = FakeClock()
    scenario = Scenario(seed=1, clock=clock)
    initial = {m["id"] for m in scenario.live_meetings()}
    counts = []
    for _ in range(90):
        clock.advance(60)
        counts.append(scenario.participant_count())
        assert len(scenario.live_meetings()) == 3
        assert 2 <= len(scenario.poor_participants()) <= 4
    assert min(counts) >= 40 and max(counts) <= 70 and len(set(counts)) > 3
    now = {m["id"] for m in scenario.live_meetings()}
    assert SEED_MEETING_ID in now and now != initial
    seed = scenario.participant("meeting", SEED_MEETING_ID, SEED_PARTICIPANT_ID)
    assert seed is not None and seed.get("leave_time", "") == ""


def test_added_meetings_and_participants() -> None:
    clock = FakeClock()
    scenario = Scenario(seed=1, clock=clock)
    entry = scenario.add_meeting(topic="Extra", participants=4, poor=1)
    assert len(scenario.participants("meeting", entry["id"])) == 4
    assert len(scenario.poor_participants()) == 4
    user = scenario.add_participant("meeting", entry["id"])
    scenario.remove_participant("meeting", entry["id"], user)
    person = scenario.participant("meeting", entry["id"], user)
    assert person is not None and person["leave_time"]
    clock.advance(301)
    assert scenario.participant("meeting", entry["id"], user) is None
