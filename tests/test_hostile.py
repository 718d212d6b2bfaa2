"""One test per class of hostile answer from Zoom, against a small hostile Zoom served here.

Two meetings are configured: `VICTIM` gets the hostile answers, `BYSTANDER` normal ones. Each
test checks that polling goes on (the cycle publishes), that the bystander stays fresh, that the
state and the errors say what happened, and, for bodies, that memory stays under a stated bound.
The poller runs on a FakeClock (waits are instant); the HTTP is real.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from conftest import FakeClock, poller
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import CycleReport, Poller
from exporter.polling.targets import configured_targets
from exporter.zoom.client import ZoomClient, page_cap
from exporter.zoom.limits import HEAVY, DailyBudget, RateLimiter
from exporter.zoom.transport import MAX_BODY_BYTES, MAX_QPS_RETRY_AFTER

VICTIM, BYSTANDER = "111", "222"
MEMORY_BOUND = 32 * 2**20  # bytes of Python allocations a hostile body may cost, at peak

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def person(pid: str, **fields: Any) -> dict[str, Any]:
    return {
        "user_id": pid,
        "user_name": f"user {pid}",
        "join_time": "2026-11-18T10:00:00Z",
        "user_qos": [
            {
                "date_time": "2026-11-18T11:06:00Z",
                "audio_input": {"bitrate": "23 kbps", "latency": "20 ms", "jitter": "3 ms"},
            }
        ],
        **fields,
    }


def page(*people: dict[str, Any], token: str = "") -> web.Response:
    return web.json_response({"participants": list(people), "next_page_token": token})


async def normal(request: web.Request) -> web.StreamResponse:
    meeting = request.match_info["id"]
    return page(person(f"{meeting}-1"), person(f"{meeting}-2"))


@dataclass
class HostileZoom:
    """Zoom's token and QoS endpoints; `routes` maps a meeting id to its handler."""

    url: str = ""
    routes: dict[str, Handler] = field(default_factory=dict)
    token: Handler | None = None
    discovery: Handler | None = None
    calls: Counter[str] = field(default_factory=Counter)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/v2/metrics/meetings", self._discovery)
        app.router.add_get("/v2/metrics/webinars", self._discovery)
        app.router.add_get("/v2/metrics/meetings/{id}/participants/qos", self._qos)
        return app

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.calls["token"] += 1
        if self.token is not None:
            return await self.token(request)
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        self.calls["discovery"] += 1
        if self.discovery is not None and request.path.endswith("meetings"):
            return await self.discovery(request)
        return web.json_response({"meetings": [], "webinars": [], "next_page_token": ""})

    async def _qos(self, request: web.Request) -> web.StreamResponse:
        meeting = request.match_info["id"]
        self.calls[meeting] += 1
        return await self.routes.get(meeting, normal)(request)


@pytest.fixture
async def zoom() -> AsyncIterator[HostileZoom]:
    server = HostileZoom()
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@dataclass
class Rig:
    zoom: HostileZoom
    client: ZoomClient
    poller: Poller
    store: SnapshotStore
    clock: FakeClock

    started: float = 0.0

    async def cycle(self, after: float = 60.0) -> CycleReport:
        self.clock.advance(after)
        self.started = self.clock.now
        return await self.poller.run_cycle()


def rig(
    zoom: HostileZoom,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    *,
    client_id: str = "c",
    secret: str = "s",
    **poller_options: Any,
) -> Rig:
    client = ZoomClient(
        session,
        api_url=zoom.url + "/v2",
        oauth_url=zoom.url + "/oauth/token",
        account_id="a",
        client_id=client_id,
        client_secret=SecretStr(secret),
        clock=clock,
        limiter=RateLimiter(10, 10 / 60, clock),
        budget=DailyBudget(15_000),
        timeout=10.0,
        max_retries=2,
    )
    store = SnapshotStore(client.telemetry.dropped)
    options: dict[str, Any] = {
        "interval": 60.0,
        "configured": configured_targets([VICTIM, BYSTANDER], []),
        "discovery": False,
        "clock": clock,
    }
    options.update(poller_options)
    return Rig(zoom, client, poller(client, store, **options), store, clock)


def people(snapshot: Snapshot) -> dict[str, set[str]]:
    return {m.target.meeting_id: {p.participant_id for p in m.participants}
            for m in snapshot.meetings}  # fmt: skip


def exposition(store: SnapshotStore) -> str:
    text = store.exposition.text.plain.decode("utf-8")
    assert list(text_string_to_metric_families(text))  # it parses
    return text


def bystander_fresh(report: CycleReport, r: Rig) -> None:
    reading = next(m for m in report.snapshot.meetings if m.target.meeting_id == BYSTANDER)
    assert reading.polled_at >= r.started, "the bystander was not polled this cycle"
    assert len(reading.participants) == 2


# -- 1. invalid Unicode and odd numbers ---------------------------------------------------------


async def test_invalid_unicode_in_any_string_is_replaced_and_published(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    raw = (
        '{"participants": [{"user_id": "1\\ud800", "user_name": "Zo\\udfff", "device": "\\udc00",'
        ' "user_qos": [{"date_time": "2026-11-18T11:06:00Z", "audio_input": '
        '{"bitrate": "23 kbps\\ud800"}}]}]}'
    )

    async def hostile(request: web.Request) -> web.StreamResponse:
        return web.Response(text=raw, content_type="application/json")

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    for _ in range(2):  # polling goes on: every cycle publishes
        report = await r.cycle()
        assert report.health.state == "ok"
        bystander_fresh(report, r)
        assert people(report.snapshot)[VICTIM] == {"1\ufffd"}
        text = exposition(r.store)
        assert 'user_name="Zo\ufffd"' in text
    assert r.store.health.complete_cycles == 2


async def test_invalid_unicode_in_an_error_message_leaves_the_status_page_up(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    from exporter.web import status_page

    async def hostile(request: web.Request) -> web.StreamResponse:
        raw = '{"code": 1234, "message": "bad \\ud800 request"}'
        return web.Response(text=raw, status=400, content_type="application/json")

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    report = await r.cycle()
    assert report.health.state == "degraded"
    html = status_page.render(r.store.snapshot, r.store.health, "/metrics")
    assert "bad \ufffd request" in html
    html.encode("utf-8")  # what aiohttp does with it: a lone surrogate would raise here


async def test_numbers_beyond_a_float_and_endless_digits_are_no_reading(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    digits = "9" * 5000
    raw = (
        '{"participants": [{"user_id": "1", "user_qos": [{"date_time": "2026-11-18T11:06:00Z",'
        f' "audio_input": {{"bitrate": 1e400, "latency": {digits}, "jitter": "3 ms"}},'
        f' "wifi_rssi": {{"avg_rssi": -{digits}, "max_rssi": -50}}}}]}}],'
        f' "total_records": {digits}}}'
    )

    async def hostile(request: web.Request) -> web.StreamResponse:
        return web.Response(text=raw, content_type="application/json")

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    report = await r.cycle()
    assert report.health.state == "ok"
    bystander_fresh(report, r)
    victim = next(m for m in report.snapshot.meetings if m.target.meeting_id == VICTIM)
    (stream,) = victim.participants[0].streams
    assert stream.bitrate_bytes is None and stream.latency_seconds is None
    assert stream.jitter_seconds == 0.003  # the sane values of the same sample stay
    assert victim.participants[0].wifi_rssi == (("max", -50.0),)
    exposition(r.store)


async def test_a_participant_that_fails_to_build_is_dropped_counted_and_logged_once(
    zoom: HostileZoom,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last line of defence: a bug on one participant costs that participant only."""
    from exporter.metrics import snapshot

    original = snapshot.participant_reading

    def buggy(participant: Any, *args: Any) -> Any:
        if participant.user_id == f"{VICTIM}-1":
            raise OverflowError("a bug")
        return original(participant, *args)

    monkeypatch.setattr(snapshot, "participant_reading", buggy)
    r = rig(zoom, session, clock)
    for _ in range(2):
        report = await r.cycle()
        assert report.health.state == "ok"
        assert people(report.snapshot)[VICTIM] == {f"{VICTIM}-2"}
        bystander_fresh(report, r)
    assert dict(r.client.telemetry.dropped.snapshot())["build"] == 2
    warnings = [x for x in caplog.records if x.getMessage() == "left an item out of the snapshot"]
    assert len([x for x in warnings if x.levelname == "WARNING"]) == 1  # logged once


async def test_a_meeting_that_fails_to_render_is_dropped_not_the_snapshot(
    zoom: HostileZoom,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter.metrics import exposition as renderer

    original = renderer._q

    def buggy(value: str) -> str:  # a bug on the victim's participants, wherever it shows
        if value.startswith(f"{VICTIM}-"):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "a bug")
        return original(value)

    monkeypatch.setattr(renderer, "_q", buggy)
    r = rig(zoom, session, clock)
    report = await r.cycle()
    assert report.health.state == "ok"
    text = exposition(r.store)
    assert f'meeting_id="{BYSTANDER}",participant_id="{BYSTANDER}-1"' in text
    assert f'meeting_id="{VICTIM}",participant_id' not in text
    assert dict(r.client.telemetry.dropped.snapshot())["render"] == 2  # its two participants


# -- 2. the plan holds ---------------------------------------------------------------------------


async def test_an_absurd_discovery_count_is_unknown_not_the_next_cycle(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def discovery(request: web.Request) -> web.StreamResponse:
        meetings = [
            {"id": VICTIM, "uuid": VICTIM, "participants": 10**9},
            {"id": BYSTANDER, "uuid": BYSTANDER, "participants": "9" * 5000},
        ]
        return web.json_response({"meetings": meetings, "next_page_token": ""})

    zoom.discovery = discovery
    r = rig(zoom, session, clock, discovery=True, configured=[], max_interval=300.0)
    for _ in range(2):
        report = await r.cycle()
        assert report.health.state == "ok"
        assert report.health.poll_interval_seconds == 60.0  # not stretched to the maximum
        assert report.health.meetings_deferred == 0
        bystander_fresh(report, r)
    assert zoom.calls[VICTIM] == 2  # one page a cycle, as the listing says


@pytest.mark.parametrize("endless", ["fresh_tokens", "repeated_token", "empty_pages"])
async def test_pagination_that_never_ends_stops_at_the_cap_and_says_so(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock, endless: str
) -> None:
    served = Counter[str]()

    async def hostile(request: web.Request) -> web.StreamResponse:
        served["pages"] += 1
        n = served["pages"]
        token = "same" if endless == "repeated_token" else f"token-{n}"
        if endless == "empty_pages" and n > 1:
            return page(token=token)
        return page(*(person(f"p{n}-{i}") for i in range(10)), token=token)

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    tracemalloc.start()
    try:
        report = await r.cycle()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"
    cap = page_cap(1)
    expected = {"fresh_tokens": cap, "repeated_token": 2, "empty_pages": 2}[endless]
    assert zoom.calls[VICTIM] == expected  # 10,003 before
    assert report.health.state == "degraded"
    assert any(f"meeting {VICTIM}: listing stopped" in e for e in report.health.errors)
    bystander_fresh(report, r)
    if endless == "fresh_tokens":  # the next cycle grants a page more, never the world
        before = zoom.calls[VICTIM]
        await r.cycle()
        assert zoom.calls[VICTIM] - before <= page_cap(cap + 1)


async def test_a_big_meeting_of_unknown_size_is_complete_from_the_second_cycle(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Configured, never listed: the first cycle is cut at the cap and says so; Zoom's
    total_records then sets what the next cycle grants."""

    async def big(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("next_page_token") or 0)
        response = page(
            *(person(f"p{n}-{i}") for i in range(10)), token=str(n + 1) if n < 9 else ""
        )
        body = json.loads(response.text or "{}")
        return web.json_response({**body, "total_records": 100})

    zoom.routes[VICTIM] = big
    r = rig(zoom, session, clock)
    first = await r.cycle()
    assert first.health.state == "degraded" and zoom.calls[VICTIM] == page_cap(1)
    second = await r.cycle()
    assert second.health.state == "ok"
    assert len(people(second.snapshot)[VICTIM]) == 100
    assert zoom.calls[VICTIM] == page_cap(1) + 10


# -- 3. waits are bounded ------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["90", "1000000000", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_long_qps_retry_after_fails_at_once_and_holds_only_that_category_briefly(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock, retry_after: str
) -> None:
    hostile_on = True

    async def hostile(request: web.Request) -> web.StreamResponse:
        if not hostile_on:
            return await normal(request)
        return web.json_response(
            {"code": 429, "message": "Too many requests"},
            status=429,
            headers={"Retry-After": retry_after, "X-RateLimit-Type": "QPS"},
        )

    r = rig(zoom, session, clock, concurrency=1)
    await r.cycle()  # one good cycle first: data to keep
    zoom.routes[VICTIM] = zoom.routes[BYSTANDER] = hostile
    report = await r.cycle()
    assert clock.now - r.started < 5  # did not wait 90 s (or forever)
    assert report.health.state == "unreachable"
    assert any("429" in e for e in report.health.errors)
    assert set(people(report.snapshot)) == {VICTIM, BYSTANDER}  # kept their last data
    held = r.client.holds.active_only(HEAVY, clock.now)
    assert held is not None and held.until <= clock.now + MAX_QPS_RETRY_AFTER + 1
    assert r.client.holds.active_only("Resource-intensive", clock.now) is None
    calls = zoom.calls[VICTIM] + zoom.calls[BYSTANDER]
    report = await r.cycle(after=10)  # still held: no call at all
    assert zoom.calls[VICTIM] + zoom.calls[BYSTANDER] == calls
    hostile_on = False
    report = await r.cycle(after=MAX_QPS_RETRY_AFTER)  # recovered once the hold ends
    assert report.health.state == "ok"
    bystander_fresh(report, r)


async def test_a_daily_limit_retry_after_never_holds_beyond_midnight_utc(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def hostile(request: web.Request) -> web.StreamResponse:
        headers = {
            "Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT",
            "X-RateLimit-Type": "Daily-limit",
        }
        return web.json_response({"code": 429}, status=429, headers=headers)

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock, concurrency=1)
    report = await r.cycle()
    assert report.health.state == "daily_limit"
    midnight = (clock.now // 86_400 + 1) * 86_400
    assert report.health.paused_until is not None and report.health.paused_until <= midnight


async def test_a_slow_meeting_cannot_hold_the_cycle_past_its_deadline(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    slow = False

    async def sluggish(request: web.Request) -> web.StreamResponse:
        if slow:
            await asyncio.sleep(8)  # each page takes 8 s
        return await normal(request)

    zoom.routes[VICTIM] = sluggish
    r = rig(zoom, session, clock, deadline=0.5)
    first = await r.cycle()
    slow = True
    began = time.monotonic()
    report = await r.cycle()
    assert time.monotonic() - began < 3  # published at the deadline, not after 8 s
    assert report.health.state == "degraded"
    assert any("the cycle's deadline of 0 s passed with 1 meeting(s) not done" in e
               for e in report.health.errors)  # fmt: skip
    bystander_fresh(report, r)
    kept = next(m for m in report.snapshot.meetings if m.target.meeting_id == VICTIM)
    assert kept.polled_at == first.snapshot.meetings[0].polled_at  # its last data, kept


async def test_no_publish_for_too_long_turns_zoom_up_and_ready_down(aiohttp_client: Any) -> None:
    from exporter.metrics.selfmetrics import SelfMetrics, StoreView
    from exporter.polling.health import Health
    from exporter.web.app import create_app
    from exporter.zoom.telemetry import ApiTelemetry

    clock = FakeClock()
    store = SnapshotStore(clock=clock)
    telemetry = ApiTelemetry()

    view = StoreView(store, telemetry)
    http = await aiohttp_client(create_app(store, self_metrics=SelfMetrics(view)))
    health = Health(state="ok", up=True, complete_cycles=1, poll_interval_seconds=60.0)
    await store.publish(Snapshot(), health)
    assert (await http.get("/-/ready")).status == 200
    assert 'zoom_up{account="default"} 1.0' in await (await http.get("/metrics")).text()
    clock.advance(3 * 60 + 31)  # a stuck cycle: nothing published for 3 intervals + 30 s
    response = await http.get("/-/ready")
    assert response.status == 503 and "no poll cycle has published" in await response.text()
    text = await (await http.get("/metrics")).text()
    assert (
        'zoom_up{account="default"} 0.0' in text
        and 'zoom_exporter_publish_overdue_seconds{account="default"} 211.0' in text
    )
    await store.publish(Snapshot(), health)  # a cycle publishes again: up again
    assert (await http.get("/-/ready")).status == 200


# -- 4. bounded bodies ---------------------------------------------------------------------------

BOMB = gzip.compress(b" " * (200 * 2**20), compresslevel=9)  # 200 MiB of spaces, ~200 KiB


@pytest.mark.parametrize("kind", ["huge", "huge_chunked", "gzip_bomb"])
async def test_a_huge_or_compressed_body_is_refused_under_a_memory_bound(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock, kind: str
) -> None:
    async def hostile(request: web.Request) -> web.StreamResponse:
        if kind == "gzip_bomb":
            return web.Response(
                body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if kind == "huge":
            response.content_length = 200 * 2**20
        await response.prepare(request)
        chunk = b" " * 2**20
        try:
            for _ in range(200):  # 200 MiB, unless the client hangs up first
                await response.write(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        return response

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    await r.cycle()  # warm up: the token, the session's connections
    tracemalloc.start()
    try:
        report = await r.cycle()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"
    assert report.health.state == "degraded"
    assert any(f"larger than {MAX_BODY_BYTES // 2**20} MiB" in e for e in report.health.errors)
    assert zoom.calls[VICTIM] == 2  # refused once a cycle, never retried
    assert ("meeting_participants_qos", "error", 2) in r.client.requests.snapshot()  # both
    bystander_fresh(report, r)


# -- 5. the token answer -------------------------------------------------------------------------


@pytest.mark.parametrize("expires_in", ["0", "-5", "NaN", "1e400", "1" + "0" * 400, '"soon"'])
async def test_an_odd_expires_in_means_an_hour_not_a_token_per_call(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock, expires_in: str
) -> None:
    async def token(request: web.Request) -> web.StreamResponse:
        body = f'{{"access_token": "t", "expires_in": {expires_in}}}'
        return web.Response(text=body, content_type="application/json")

    zoom.token = token
    r = rig(zoom, session, clock)
    for _ in range(5):
        report = await r.cycle()
        assert report.health.state == "ok"
    assert zoom.calls["token"] == 1
    assert r.client.token.expires_at is not None
    assert r.client.token.expires_at - clock.now > 0


async def test_a_deeply_nested_token_answer_goes_through_the_token_backoff(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def token(request: web.Request) -> web.StreamResponse:
        return web.Response(text="[" * 100_000, content_type="application/json")

    zoom.token = token
    r = rig(zoom, session, clock)
    report = await r.cycle()
    assert report.health.state == "token_unavailable"
    assert zoom.calls["token"] == 1
    await r.cycle(after=0.5)  # within the backoff: no new token request
    assert zoom.calls["token"] == 1


@pytest.mark.parametrize("secret", ["s", "a-long-client-secret-of-32-chars!"])
async def test_a_token_endpoint_that_echoes_the_credentials_is_redacted(
    zoom: HostileZoom,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    secret: str,
) -> None:
    async def token(request: web.Request) -> web.StreamResponse:
        header = request.headers["Authorization"]
        encoded = header.split()[1]
        text = f"bad credentials {header} ({encoded}, {base64.b64decode(encoded).decode()})"
        return web.json_response({"reason": text}, status=401)

    zoom.token = token
    r = rig(zoom, session, clock, secret=secret)
    report = await r.cycle()
    assert report.health.state == "auth_failed"
    encoded = base64.b64encode(f"c:{secret}".encode()).decode()
    shown = " ".join(report.health.errors) + caplog.text
    assert "bad credentials" in shown
    assert encoded not in shown and f"c:{secret}" not in shown


# -- 6. labels only from known values ------------------------------------------------------------


async def test_rate_limit_headers_become_labels_only_when_known(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    served = Counter[str]()

    async def hostile(request: web.Request) -> web.StreamResponse:
        served["n"] += 1
        if served["n"] % 2:
            headers = {"X-RateLimit-Category": f"evil-{served['n']}", "Retry-After": "1"}
            return web.json_response({"code": 429}, status=429, headers=headers)
        return await normal(request)

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    for _ in range(3):
        await r.cycle()
    categories = {c for c, _, _ in r.client.rate_limited.snapshot()}
    assert categories == {"Heavy"}


async def test_long_label_values_are_cut_and_counted(
    zoom: HostileZoom, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async def hostile(request: web.Request) -> web.StreamResponse:
        return page(person("1", user_name="x" * 100_000, device="y" * 300))

    zoom.routes[VICTIM] = hostile
    r = rig(zoom, session, clock)
    await r.cycle()
    text = exposition(r.store)
    assert f'user_name="{"x" * 256}"' in text and "x" * 257 not in text
    assert r.client.telemetry.truncated == 2


# -- 7. SIGTERM while a big snapshot renders -----------------------------------------------------

SLOW_RENDER = """
import asyncio, time
from exporter.metrics import store
from exporter.metrics.snapshot import Snapshot
from exporter.polling.health import Health

store.render_safely = lambda snapshot, dropped: time.sleep(30)  # a render of a huge snapshot

async def main():
    publishing = asyncio.create_task(store.SnapshotStore().publish(Snapshot(), Health()))
    await asyncio.sleep(0.2)
    publishing.cancel()  # what SIGTERM does to the poll loop

asyncio.run(main())
"""


def test_exit_never_waits_for_a_render_in_flight() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    began = time.monotonic()
    subprocess.run([sys.executable, "-c", SLOW_RENDER], cwd=ROOT, check=True, timeout=60)
    assert time.monotonic() - began < 5  # not the render's 30 s
