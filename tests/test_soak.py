"""Soak: the demo exporter under a fast-churning simulated world for about two minutes.

`python -m exporter --demo --demo.speed 40 --poll.interval 1` runs as a subprocess while the test
scrapes /metrics every 0.5 s (alternating a keep-alive connection that asks, like Prometheus, for
gzipped OpenMetrics, and fresh connections asking for the classic text format), opens the other
pages, and samples the process from outside through /proc. Every 2 s it compares the exported
participants with the simulator running inside the exporter (its /_sim/scenario and its QoS
listings, which carry every join and leave time).

Speed 40: the scenario churns every 1.5 s, a meeting ends and another starts every 30 s (three
times in a run), and the 3600-scenario-second access token expires after 90 s, so the exporter
must renew it mid-run.

The checks, each of which can fail:
- the exporter never exits, zoom_up is always 1, the state "ok", every meeting freshly polled;
- the series are consistent with themselves (counts and info agree, no orphan label sets) and
  per participant within a band (no unbounded label growth);
- per meeting, the exported participants are exactly those the simulator had present when the
  exporter polled, except participants who joined or left within that poll's own uncertainty
  window; the exported total matches /_sim/scenario's within the churn the simulator recorded
  since that poll; departed participants and ended meetings vanish; new meetings appear;
- RSS is flat after warm-up; fds, sockets, threads and asyncio tasks stay in a small band;
- the access token is renewed without a failed cycle, and SIGTERM exits 0 within 5 s.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import signal
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import Exporter, http_get, start_exporter, stop_process, wait_for, wait_ready
from exporter.daemon import DEMO_ACCOUNT, DEMO_ACCOUNTS, DEMO_CLIENT, DEMO_SECRET

SPEED = 40.0  # scenario seconds per real second
WATCHED = DEMO_ACCOUNTS[0][0]  # the demo account whose world the soak compares with
POLL_INTERVAL = 1.0
SOAK_SECONDS = 110.0  # the measured run; with start-up and shutdown the test takes ~115 s
TICK = 0.5  # scrape cadence
ROUND_EVERY = 4  # compare with the simulator every 4th tick (2 s)
PAGES_EVERY = 4  # open /, /-/healthy and /-/ready every 4th tick
WARMUP = 0.25  # fraction of the run before any resource baseline is taken
BASELINE = (0.25, 0.40)  # the post-warm-up window whose medians are the baseline
FINAL = (0.80, 1.00)  # the final window

# RSS starts at ~56 MiB and creeps up ~1.5 MiB/min for the first two minutes (allocator arenas
# fill, a second to_thread worker starts, the in-process simulator accumulates the scenario's
# first hour before it prunes), then plateaus at ~60 MiB: a 7-minute run under this same load
# stayed within 59.3-60.0 MiB from 2 minutes on. Soak runs measured slopes of +0.2 to +2.3
# MiB/min and baseline-to-final growth of 0.3-2.4 MiB. One snapshot (a few thousand series as
# text, gzipped OpenMetrics and parsed families) is ~1 MiB, and the participant count swings
# between ~40 and 66. A leak of one rendered exposition (~250 KiB) per poll cycle or per scrape
# adds 15-30 MiB/min and fails both bounds; any leak over ~85 KiB/s fails the slope.
RSS_GROWTH_MAX = 8 * 2**20  # bytes, baseline median -> final median (~14% of the RSS)
RSS_SLOPE_MAX = 5 * 1024  # KiB per minute, least squares over the post-warm-up samples
# Integer resources: the band (max - min after warm-up) absorbs the exporter's pooled connections
# to its simulator (up to 4 concurrent per demo account, two accounts, each an fd at both ends),
# the meetings each account's cycle has in flight, and the to_thread workers it starts lazily;
# the trend check (final median vs baseline median) catches one leaked fd, socket, thread or
# task per ~10 cycles or scrapes.
BANDS = {"fds": 16, "sockets": 16, "threads": 5, "tasks": 12}
TREND_MAX = 2
# The exporter's own series (not per meeting or participant) only gain bounded label pairs as the
# run goes: a 404 code when a meeting ends, a 401 code and a token_renewed retry per endpoint when
# the token expires.
OWN_SERIES_BAND = 10

FRESH_MAX = 4.0  # s: a meeting's last poll may be at most one interval + one cycle + slack old
VANISH_MAX = 4.0  # s after the simulator no longer lists a meeting, its series must be gone
# The exporter lists meetings at Zoom's Resource-intensive rate (pro plan: 10 a minute, two per
# discovery), so a new meeting shows up within ~12 s plus a cycle, plus our 2 s round.
APPEAR_MAX = 20.0
# Scenario-seconds of slack around a poll's window: the simulator prints times truncated to the
# second, and mapping wall time to scenario time is good to a few ms times SPEED.
MARGIN = 2.0
SHUTDOWN_MAX = 5.0

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SIM_URL = re.compile(r"demo mode: polling the built-in Zoom simulator\"? url=(http://\S+?)/v2")
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

MeetingKey = tuple[str, str]  # (kind, meeting_id)
PersonKey = tuple[str, str, str]  # (kind, meeting_id, participant_id)


# ----- scrapes -----


@dataclass
class Scrape:
    """One /metrics answer, parsed into what the checks need."""

    wall: float
    series: int = 0
    up: float | None = None
    states: dict[str, float] = field(default_factory=dict)
    tasks: float | None = None
    poll_duration: float = 0.0
    last_success: float = 0.0
    zoom_meetings: dict[str, float] = field(default_factory=dict)
    counts: dict[MeetingKey, float] = field(default_factory=dict)
    last_poll: dict[MeetingKey, float] = field(default_factory=dict)
    meeting_series_keys: set[MeetingKey] = field(default_factory=set)
    people: dict[MeetingKey, set[str]] = field(default_factory=dict)
    participant_series: int = 0
    participant_series_keys: set[PersonKey] = field(default_factory=set)
    other_series: int = 0
    oauth_requests: float = 0.0
    token_renewals: float = 0.0

    @property
    def keys(self) -> set[PersonKey]:
        return {(k, m, p) for (k, m), pids in self.people.items() for p in pids}


def parse(text: str, wall: float) -> Scrape:
    scrape = Scrape(wall)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"unparsable exposition line {line!r}"
        name, raw, value = match.group(1), match.group(2) or "", float(match.group(3))
        labels = dict(LABEL.findall(raw))
        if labels.get("account", WATCHED) != WATCHED:
            continue  # the demo's other account: its world is not the one compared here
        scrape.series += 1
        meeting = (labels.get("kind", ""), labels.get("meeting_id", ""))
        if name.startswith("zoom_participant_"):
            scrape.participant_series += 1
            scrape.participant_series_keys.add((*meeting, labels.get("participant_id", "")))
            if name == "zoom_participant_info":
                scrape.people.setdefault(meeting, set()).add(labels["participant_id"])
            continue
        if name.startswith("zoom_meeting_"):
            scrape.meeting_series_keys.add(meeting)
            if name == "zoom_meeting_participants":
                scrape.counts[meeting] = value
            elif name == "zoom_meeting_last_poll_timestamp_seconds":
                scrape.last_poll[meeting] = value
            continue
        scrape.other_series += 1
        if name == "zoom_up":
            scrape.up = value
        elif name == "zoom_exporter_state":
            scrape.states[labels["state"]] = value
        elif name == "zoom_exporter_asyncio_tasks":
            scrape.tasks = value
        elif name == "zoom_poll_duration_seconds":
            scrape.poll_duration = value
        elif name == "zoom_last_successful_poll_timestamp_seconds":
            scrape.last_success = value
        elif name == "zoom_meetings":
            scrape.zoom_meetings[labels["kind"]] = value
        elif name == "zoom_api_requests_total" and labels.get("endpoint") == "oauth_token":
            scrape.oauth_requests += value
        elif name == "zoom_api_retries_total" and labels.get("reason") == "token_renewed":
            scrape.token_renewals += value
    return scrape


class KeepAlive:
    """One persistent connection that asks for what Prometheus asks for: gzipped OpenMetrics."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        self.connections = 0  # asserted to stay 1: the server must keep the connection open

    def metrics(self) -> str:
        if self.conn.sock is None:  # http.client opens a new connection if the last one closed
            self.connections += 1
        self.conn.request(
            "GET", "/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
        )
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:200]
        assert response.getheader("Content-Type", "").startswith("application/openmetrics-text")
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        text = body.decode()
        assert text.endswith("# EOF\n"), "OpenMetrics answer without # EOF"
        return text

    def close(self) -> None:
        self.conn.close()


def fresh_metrics(exporter: Exporter) -> str:
    status, headers, body = http_get(exporter.url + "/metrics")
    assert status == 200
    assert headers.get("Content-Type", "").startswith("text/plain")
    return body.decode()


# ----- the simulator inside the exporter -----


def epoch(text: str) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Stay:
    """One listing entry: a join and, if it happened yet, the leave (scenario seconds)."""

    join: float
    leave: float | None

    def present(self, at: float) -> bool:
        return self.join <= at and (self.leave is None or self.leave > at)

    def touched(self, low: float, high: float) -> bool:
        return low <= self.join <= high or (self.leave is not None and low <= self.leave <= high)


def present(stays: Iterable[Stay], at: float) -> bool:
    return any(s.present(at) for s in stays)


def touched(stays: Iterable[Stay], low: float, high: float) -> bool:
    return any(s.touched(low, high) for s in stays)


class Sim:
    """The exporter's built-in simulator, asked directly (its demo credentials are public)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token = ""

    def _renew(self) -> None:
        form = urllib.parse.urlencode(
            {"grant_type": "account_credentials", "account_id": DEMO_ACCOUNT}
        ).encode()
        auth = f"{DEMO_CLIENT}:{DEMO_SECRET}".encode()
        request = urllib.request.Request(
            self.base + "/oauth/token",
            data=form,
            headers={"Authorization": "Basic " + base64.b64encode(auth).decode()},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            self.token = json.load(response)["access_token"]

    def scenario(self) -> dict[str, object]:
        status, _, body = http_get(self.base + "/_sim/scenario")
        assert status == 200
        payload: dict[str, object] = json.loads(body)
        return payload

    def api(self, path: str) -> tuple[int, dict[str, object]]:
        for _ in range(2):
            if not self.token:
                self._renew()
            status, _, body = http_get(
                self.base + "/v2" + path, {"Authorization": "Bearer " + self.token}
            )
            payload = json.loads(body)
            if status == 401 and payload.get("code") == 124:  # our token expired: renew once
                self.token = ""
                continue
            return status, payload
        raise AssertionError(f"the simulator keeps refusing a fresh token for {path}")

    def listing(self, kind: str, meeting_id: str) -> dict[str, list[Stay]] | None:
        """Every entry of a live meeting's QoS listing by participant id; None if not live."""
        stays: dict[str, list[Stay]] = {}
        query = {"type": "live", "page_size": "10"}
        while True:
            path = f"/metrics/{kind}s/{meeting_id}/participants/qos?"
            status, page = self.api(path + urllib.parse.urlencode(query))
            if status == 404:
                return None
            assert status == 200, page
            for person in page["participants"]:  # type: ignore[attr-defined]
                join = epoch(person["join_time"])
                assert join is not None
                stay = Stay(join, epoch(person.get("leave_time", "")))
                stays.setdefault(person["user_id"], []).append(stay)
            token = page.get("next_page_token")
            if not token:
                return stays
            query = {**query, "next_page_token": str(token)}


# ----- the process, from outside -----


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the soak began
    rss: int  # bytes
    fds: int
    sockets: int
    threads: int
    tasks: int


def proc_sample(pid: int, at: float, tasks: float | None) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    threads = int(fields["Threads"])
    fds = sockets = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # closed between the listing and the readlink
            continue
        fds += 1
        sockets += target.startswith("socket:[")
    assert tasks is not None, "zoom_exporter_asyncio_tasks is missing"
    return Sample(at, rss, fds, sockets, threads, int(tasks))


def window(samples: Sequence[Sample], bounds: tuple[float, float]) -> list[Sample]:
    low, high = (SOAK_SECONDS * b for b in bounds)
    return [s for s in samples if low <= s.at <= high]


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


# ----- the bookkeeping of one soak -----


@dataclass
class Book:
    started: float  # wall time
    scrapes: int = 0
    rounds: int = 0
    exact_rounds: int = 0
    max_diff: int = 0
    ambiguous: int = 0
    compared: int = 0
    participants: list[int] = field(default_factory=list)
    per_participant: list[float] = field(default_factory=list)
    total_per_participant: list[float] = field(default_factory=list)
    other_series: list[tuple[float, int]] = field(default_factory=list)
    appeared: int = 0
    disappeared: int = 0
    seen: dict[PersonKey, float] = field(default_factory=dict)
    first_keys: set[PersonKey] = field(default_factory=set)
    vanished: set[PersonKey] = field(default_factory=set)
    meetings_seen: set[MeetingKey] = field(default_factory=set)
    first_meetings: set[MeetingKey] = field(default_factory=set)
    sim_first_seen: dict[MeetingKey, float] = field(default_factory=dict)
    sim_gone: dict[MeetingKey, float] = field(default_factory=dict)
    exporter_gone: dict[MeetingKey, float] = field(default_factory=dict)
    gone_people: dict[MeetingKey, set[PersonKey]] = field(default_factory=dict)
    appear_lags: dict[MeetingKey, float] = field(default_factory=dict)
    previous: Scrape | None = None
    max_age: float = 0.0  # s, the oldest meeting poll any scrape showed
    max_cycle: float = 0.0  # s, the longest poll cycle
    states: set[str] = field(default_factory=set)


def check_scrape(book: Book, scrape: Scrape) -> None:
    """What every scrape must show, whatever the simulator is doing."""
    book.scrapes += 1
    assert scrape.up == 1.0, f"zoom_up is {scrape.up} at +{scrape.wall - book.started:.1f} s"
    current = [s for s, v in scrape.states.items() if v == 1.0]
    book.states.update(current)
    assert current == ["ok"], f"zoom_exporter_state is {current}"
    assert scrape.wall - scrape.last_success <= FRESH_MAX, "the last successful poll is stale"
    book.max_cycle = max(book.max_cycle, scrape.poll_duration)
    for meeting, polled in scrape.last_poll.items():
        age = scrape.wall - polled
        book.max_age = max(book.max_age, age)
        assert age <= FRESH_MAX, f"{meeting} was last polled {age:.1f} s ago"
    # The series agree with themselves.
    for meeting, count in scrape.counts.items():
        people = scrape.people.get(meeting, set())
        assert count == len(people), f"{meeting}: participants {count} but {len(people)} infos"
    assert set(scrape.people) <= set(scrape.counts), "participant infos of an unlisted meeting"
    assert scrape.meeting_series_keys == set(scrape.counts), "meeting series without a count"
    assert scrape.participant_series_keys == scrape.keys, (
        "participant series whose label set has no zoom_participant_info (orphans): "
        f"{sorted(scrape.participant_series_keys ^ scrape.keys)[:5]}"
    )
    for kind in ("meeting", "webinar"):
        listed = sum(1 for k, _ in scrape.counts if k == kind)
        assert scrape.zoom_meetings.get(kind) == listed, f"zoom_meetings{{kind={kind}}}"
    # Series per participant stay in a band: no label set grows without bound.
    keys = scrape.keys
    assert keys, "no participants exported"
    ratio, total = scrape.participant_series / len(keys), scrape.series / len(keys)
    assert 10 <= ratio <= 60, f"{ratio:.1f} participant series per participant"
    assert 10 <= total <= 70, f"{total:.1f} series in all per participant"
    book.participants.append(len(keys))
    book.per_participant.append(ratio)
    book.total_per_participant.append(total)
    book.other_series.append((scrape.wall - book.started, scrape.other_series))
    # Churn as the exporter shows it.
    if book.previous is None:
        book.first_keys, book.first_meetings = set(keys), set(scrape.counts)
    else:
        before = book.previous.keys
        book.appeared += len(keys - before)
        book.disappeared += len(before - keys)
        for meeting in set(book.previous.counts) - set(scrape.counts):
            book.gone_people[meeting] = {k for k in before if k[:2] == meeting}
            book.exporter_gone[meeting] = scrape.wall
    for key in keys:
        book.seen.setdefault(key, scrape.wall)
    for meeting in scrape.counts:
        assert meeting not in book.exporter_gone, f"{meeting} came back after vanishing"
        if meeting not in book.meetings_seen and book.previous is not None:
            first = book.sim_first_seen.get(meeting)  # None: found before our next round
            book.appear_lags[meeting] = 0.0 if first is None else scrape.wall - first
        book.meetings_seen.add(meeting)
        gone = book.sim_gone.get(meeting)
        assert gone is None or scrape.wall - gone <= VANISH_MAX, (
            f"{meeting} is still exported {scrape.wall - gone:.1f} s after the simulator "
            "stopped listing it"
        )
    book.previous = scrape


def check_round(book: Book, scrape: Scrape, sim: Sim) -> None:
    """Compare the scrape just taken with the simulator, asked right after it."""
    book.rounds += 1
    before = time.time()
    scenario = sim.scenario()
    after = time.time()
    asked, now = (before + after) / 2, float(scenario["time"])  # type: ignore[arg-type]

    def scenario_time(wall: float) -> float:
        return now + SPEED * (wall - asked)

    live: dict[MeetingKey, int] = {
        (m["kind"], str(m["id"])): int(m["participants"])
        for m in scenario["meetings"]  # type: ignore[attr-defined]
    }
    for meeting in live:
        book.sim_first_seen.setdefault(meeting, asked)
    for meeting in (book.meetings_seen | set(book.sim_first_seen)) - set(live):
        book.sim_gone.setdefault(meeting, asked)
    explained = 0
    for meeting in set(live) | set(scrape.counts):
        exported = scrape.people.get(meeting, set())
        stays = sim.listing(*meeting) if meeting in live else None
        if stays is None:  # ended since the exporter polled it: VANISH_MAX bounds how long
            explained += len(exported) + live.get(meeting, 0)
            continue
        if meeting not in scrape.counts:  # started since the exporter last listed meetings
            waited = asked - book.sim_first_seen[meeting]
            assert waited <= APPEAR_MAX, f"{meeting} not discovered after {waited:.1f} s"
            explained += live[meeting]
            continue
        # The exporter's listing of this meeting began after its cycle started and ended at
        # its last-poll time: whoever joined or left in that window may be either way.
        polled = scrape.last_poll[meeting]
        low = scenario_time(polled - scrape.poll_duration) - MARGIN
        high = scenario_time(polled) + MARGIN
        wrong = []
        churned = 0
        for pid in set(stays) | exported:
            mine = stays.get(pid, [])
            churned += touched(mine, low, now + MARGIN)
            if touched(mine, low, high):
                book.ambiguous += 1
                continue
            book.compared += 1
            expected = present(mine, scenario_time(polled))
            if expected != (pid in exported):
                wrong.append((pid, expected, mine))
            elif not expected and (*meeting, pid) in book.seen:
                book.vanished.add((*meeting, pid))
        assert not wrong, (
            f"{meeting} polled at scenario {scenario_time(polled):.0f}: "
            f"(participant, should be exported, stays) {wrong}"
        )
        diff = abs(len(exported) - live[meeting])
        assert diff <= churned, (
            f"{meeting}: {len(exported)} exported, {live[meeting]} in the simulator, but only "
            f"{churned} joined or left since the exporter polled"
        )
        explained += churned
    total = sum(len(p) for p in scrape.people.values())
    diff = abs(total - int(scenario["participants"]))  # type: ignore[call-overload]
    assert diff <= explained, (
        f"{total} participants exported, {scenario['participants']} in the simulator; "
        f"churn since the poll explains {explained}"
    )
    book.exact_rounds += diff == 0
    book.max_diff = max(book.max_diff, diff)


def check_pages(exporter: Exporter) -> None:
    for path, expected in (("/", b"<html"), ("/-/healthy", b"Healthy"), ("/-/ready", b"Ready")):
        status, _, body = http_get(exporter.url + path)
        assert status == 200, f"{path}: HTTP {status}"
        assert expected.lower() in body.lower(), f"{path}: {body[:100]!r}"


def check_resources(samples: Sequence[Sample]) -> dict[str, str]:
    post = [s for s in samples if s.at >= WARMUP * SOAK_SECONDS]
    base, final = window(samples, BASELINE), window(samples, FINAL)
    assert len(base) >= 10 and len(final) >= 10, "too few samples for the resource checks"
    base_rss = statistics.median(s.rss for s in base)
    final_rss = statistics.median(s.rss for s in final)
    slope = slope_per_minute([(s.at, s.rss / 1024) for s in post])
    report = {
        "rss": f"{samples[0].rss / 2**20:.1f}->{base_rss / 2**20:.1f}->{final_rss / 2**20:.1f} "
        f"MiB (start->baseline->final) slope {slope:+.0f} KiB/min",
    }
    assert final_rss - base_rss < RSS_GROWTH_MAX, report["rss"]
    assert slope < RSS_SLOPE_MAX, report["rss"]
    for name, band in BANDS.items():
        values = [getattr(s, name) for s in post]
        trend = statistics.median(getattr(s, name) for s in final) - statistics.median(
            getattr(s, name) for s in base
        )
        report[name] = f"{min(values)}..{max(values)} (trend {trend:+g})"
        assert max(values) - min(values) <= band, f"{name} after warm-up: {report[name]}"
        assert trend <= TREND_MAX, f"{name} trends upward: {report[name]}"
    return report


@pytest.mark.soak
def test_soak_under_churn(tmp_path: Path) -> None:
    began = time.monotonic()
    exporter = start_exporter(
        tmp_path,
        "--demo",
        "--demo.speed",
        str(SPEED),
        "--poll.interval",
        str(POLL_INTERVAL),
    )
    keep = KeepAlive(exporter.url)
    try:
        wait_ready(exporter)
        match = wait_for(
            lambda: SIM_URL.search(exporter.log.read_text()), what="the simulator's address"
        )
        sim = Sim(match.group(1))
        pid = exporter.process.pid
        book = Book(started=time.time())
        samples: list[Sample] = []
        start = time.monotonic()
        tick = 0
        late = 0
        while (elapsed := time.monotonic() - start) < SOAK_SECONDS:
            assert exporter.process.poll() is None, f"exporter exited: {exporter.log.read_text()}"
            text = keep.metrics() if tick % 2 == 0 else fresh_metrics(exporter)
            scrape = parse(text, time.time())
            check_scrape(book, scrape)
            samples.append(proc_sample(pid, elapsed, scrape.tasks))
            if tick % ROUND_EVERY == 0:
                check_round(book, scrape, sim)
            if tick % PAGES_EVERY == 2:
                check_pages(exporter)
            tick += 1
            pause = start + tick * TICK - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the sampling cadence, not a wait for a condition
            else:
                late += 1
        last = book.previous
        assert last is not None
        assert exporter.process.poll() is None, "exporter exited"
        # The token lives 3600 scenario seconds (90 s here): it was renewed, and no cycle failed.
        assert last.oauth_requests >= 2, "the access token was never renewed"
        assert keep.connections == 1, (
            f"the keep-alive connection was reopened {keep.connections - 1} times"
        )
        # The run did exercise churn (else the checks above prove little).
        assert book.appeared >= 20 and book.disappeared >= 20, (book.appeared, book.disappeared)
        ended = {
            m: t - book.sim_gone[m] for m, t in book.exporter_gone.items() if m in book.sim_gone
        }
        assert len(ended) >= 2, f"meetings that ended and vanished: {ended}"
        for meeting in ended:  # everyone in a meeting the simulator ended has left
            book.vanished |= book.gone_people[meeting]
        assert book.vanished & book.first_keys, "no participant seen at the start ever left"
        new = book.meetings_seen - book.first_meetings
        assert len(new) >= 2, f"new meetings the exporter discovered: {new}"
        assert max(book.appear_lags.values()) <= APPEAR_MAX, book.appear_lags
        assert book.compared > 10 * book.ambiguous, (book.compared, book.ambiguous)
        own = [n for t, n in book.other_series if t >= WARMUP * SOAK_SECONDS]
        assert max(own) - min(own) <= OWN_SERIES_BAND, f"own series {min(own)}..{max(own)}"
        resources = check_resources(samples)
        log = exporter.log.read_text()
        assert "Traceback" not in log and "level=error" not in log, log[-3000:]
        # SIGTERM with the keep-alive connection still open, as Prometheus would leave it.
        stopping = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        code = exporter.process.wait(timeout=15)
        shutdown = time.monotonic() - stopping
        assert code == 0, f"exit code {code}"
        assert shutdown < SHUTDOWN_MAX, f"SIGTERM took {shutdown:.2f} s"
    finally:
        keep.close()
        stop_process(exporter.process)
    print(
        f"\nsoak: {time.monotonic() - began:.1f} s total, {SOAK_SECONDS:.0f} s measured, "
        f"{book.scrapes} scrapes ({late} late ticks; meeting polls at most {book.max_age:.1f} s "
        f"old, cycles at most {book.max_cycle:.2f} s), {book.rounds} simulator rounds "
        f"({book.exact_rounds} exact, max diff {book.max_diff}; {book.compared} participant "
        f"checks, {book.ambiguous} in a poll's churn window); "
        f"RSS {resources['rss']}; fds {resources['fds']}; sockets {resources['sockets']}; "
        f"threads {resources['threads']}; tasks {resources['tasks']}; "
        f"participants {min(book.participants)}..{max(book.participants)} "
        f"({min(book.per_participant):.1f}..{max(book.per_participant):.1f} participant "
        f"series each, {min(book.total_per_participant):.1f}.."
        f"{max(book.total_per_participant):.1f} series in all; {min(own)}..{max(own)} own "
        "series); "
        f"churn +{book.appeared}/-{book.disappeared} "
        f"({len(book.vanished)} departures verified, {len(book.vanished & book.first_keys)} "
        f"of the first scrape's); meetings seen {len(book.meetings_seen)}, "
        f"ended {len(ended)} (gone {max(ended.values()):+.1f} s after our round saw it end, "
        f"at worst), new {len(new)} (discovered {max(book.appear_lags.values()):.1f} s after "
        f"our round saw it start, at worst); token requests "
        f"{last.oauth_requests:.0f} ({last.token_renewals:.0f} renewals on 401); "
        f"SIGTERM exit {code} in {shutdown:.2f} s"
    )
