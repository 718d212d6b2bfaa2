"""The landing page: unit tests on hand-built snapshots, and the live page in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Exporter, http_get
from exporter.metrics.snapshot import MeetingReading, ParticipantReading, Snapshot, StreamReading
from exporter.polling.health import BudgetReading, Health
from exporter.polling.targets import MeetingTarget
from exporter.web import status_page

EVIL = '<script>alert("x")</script>&'


def _participant(
    pid: str,
    name: str,
    *,
    latency: float = 0.05,
    jitter: float = 0.01,
    loss: float = 0.001,
    bitrate: float = 12_000.0,
    media: str = "audio",
) -> ParticipantReading:
    stream = StreamReading(
        media=media,
        stream="input",
        bitrate_bytes=bitrate,
        latency_seconds=latency,
        jitter_seconds=jitter,
        avg_loss_ratio=loss,
        max_loss_ratio=loss * 3,
    )
    info = (("user_name", name), ("device", "Mac"), ("network_type", "Wifi"))
    return ParticipantReading(
        participant_id=pid,
        info=info,
        sample_timestamp=1_700_000_000.0,
        join_timestamp=1_699_999_000.0,
        streams=(stream,),
        cpu=(("zoom", "avg", 0.12),),
        wifi_rssi=(("avg", -61.0),),
    )


def _health(**kwargs: object) -> Health:
    defaults: dict[str, object] = {
        "state": "ok",
        "up": True,
        "last_success_timestamp": 1_700_000_000.0,
        "poll_duration_seconds": 0.25,
        "created_at": 1_700_000_001.0,
        "complete_cycles": 3,
    }
    defaults.update(kwargs)
    return Health(**defaults)  # type: ignore[arg-type]


def render_page(*meetings: MeetingReading, path: str = "/metrics", **health: object) -> str:
    """The status page of these meetings, with a healthy cycle unless told otherwise."""
    return status_page.render(Snapshot(meetings=meetings), _health(**health), path)


def _meeting(kind: str, mid: str, topic: str, *people: ParticipantReading) -> MeetingReading:
    target = MeetingTarget(kind=kind, meeting_id=mid, api_id=mid, topic=topic, host="Host")  # type: ignore[arg-type]
    return MeetingReading(target=target, participants=people, polled_at=1_700_000_000.0)


class PageParser(HTMLParser):
    """Collects the meetings, their topics and participant rows of a rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.meetings: list[dict[str, object]] = []
        self.links: list[str] = []
        self.scripts = 0
        self._in_topic = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "a" and attr.get("href"):
            self.links.append(str(attr["href"]))
        if tag == "section" and "meeting" in (attr.get("class") or ""):
            self.meetings.append(
                {
                    "kind": attr.get("data-kind"),
                    "meeting_id": attr.get("data-meeting-id"),
                    "topic": "",
                    "participants": [],
                }
            )
        if tag == "span" and attr.get("class") == "topic":
            self._in_topic = True
        if tag == "tr" and attr.get("class") == "participant" and self.meetings:
            people = self.meetings[-1]["participants"]
            assert isinstance(people, list)
            people.append((attr.get("data-participant-id"), attr.get("data-quality")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._in_topic = False

    def handle_data(self, data: str) -> None:
        if self._in_topic and self.meetings:
            self.meetings[-1]["topic"] = str(self.meetings[-1]["topic"]) + data


def parse(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser


def test_a_daily_limit_pause_is_explained_with_the_resume_time() -> None:
    html = render_page(
        _meeting("meeting", "1", "t", _participant("7", "Ann")),
        up=False,
        complete_cycles=9,
        state="daily_limit",
        paused_until=1_795_392_000.0,
        budget=BudgetReading(15_000, 0, 1_795_392_000.0),
        poll_interval_seconds=60.0,
    )
    assert "daily request limit for the account is reached; showing the last data" in html
    assert "Calls resume at 2026-11-23 00:00:00 UTC." in html
    assert "0 of 15,000" in html and "60 s" in html
    assert parse(html).meetings[0]["participants"]  # the last data is still shown
    healthy = render_page()
    assert "Calls resume" not in healthy


# ---------------------------------------------------------------------------------------------
# Pure rendering
# ---------------------------------------------------------------------------------------------


def test_links_and_no_javascript() -> None:
    html = render_page(path='/metrics"x')
    page = parse(html)
    assert page.links == ['/metrics"x', "/-/healthy", "/-/ready"]
    assert '/metrics"x"' not in html  # the attribute is escaped, not broken out of
    assert page.scripts == 0
    assert "<script" not in html.lower()
    assert html.startswith("<!DOCTYPE html>")


def test_every_zoom_string_is_escaped() -> None:
    person = _participant(EVIL, EVIL)
    meeting = MeetingReading(
        target=MeetingTarget(
            kind="meeting", meeting_id=EVIL, api_id="1", topic=EVIL, host=EVIL, uuid=EVIL
        ),
        participants=(person,),
        polled_at=1_700_000_000.0,
    )
    html = render_page(meeting, errors=(EVIL,))
    assert "<script" not in html
    assert '"x")' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html
    page = parse(html)
    assert page.meetings[0]["topic"] == EVIL  # the browser shows the original text
    assert page.meetings[0]["meeting_id"] == EVIL
    assert page.meetings[0]["participants"] == [(EVIL, "good")]


def test_meetings_participants_and_quality() -> None:
    good = _participant("1", "Ann")
    fair = _participant("2", "Bob", latency=0.13)
    poor_loss = _participant("3", "Cid", loss=0.025)
    poor_video = _participant("4", "Dee", jitter=0.05, media="video")
    standup = _meeting("meeting", "111", "Standup", good, fair, poor_loss)
    town_hall = _meeting("webinar", "222", "Town hall", poor_video)
    html = render_page(town_hall, standup)
    page = parse(html)
    assert [(m["kind"], m["meeting_id"], m["topic"]) for m in page.meetings] == [
        ("meeting", "111", "Standup"),
        ("webinar", "222", "Town hall"),
    ]
    # Poor first, then fair, then good.
    assert page.meetings[0]["participants"] == [("3", "poor"), ("2", "fair"), ("1", "good")]
    assert page.meetings[1]["participants"] == [("4", "poor")]
    assert "<li>In poor condition<b>2</b></li>" in html
    assert "<li>Meetings<b>1</b></li>" in html and "<li>Webinars<b>1</b></li>" in html
    assert '<span class="state-up">up</span>' in html
    assert "130 ms" in html and "2.5 % loss" in html and "96 kbps" in html
    assert 'http-equiv="refresh"' in html


@pytest.mark.parametrize(
    ("limits", "value", "expected"),
    [
        (status_page.LATENCY, 0.120, "good"),
        (status_page.LATENCY, 0.121, "fair"),
        (status_page.LATENCY, 0.150, "fair"),
        (status_page.LATENCY, 0.151, "poor"),
        (status_page.JITTER, 0.040, "fair"),
        (status_page.JITTER, 0.041, "poor"),
        (status_page.LOSS, 0.02, "fair"),
        (status_page.LOSS, 0.021, "poor"),
        (status_page.LOSS, None, "unknown"),
    ],
)
def test_zoom_thresholds(
    limits: status_page.Thresholds, value: float | None, expected: str
) -> None:
    assert limits.judge(value) == expected


@pytest.mark.parametrize(
    ("kbps", "band", "quality"),
    [
        (71.9, "very bad", "poor"),
        (72, "bad", "fair"),
        (127, "bad", "fair"),
        (128, "not good", "fair"),
        (180, "normal", "good"),
        (320, "good", "good"),
        (639, "good", "good"),
        (640, "excellent", "good"),
    ],
)
def test_bitrate_bands_in_bytes_per_second(kbps: float, band: str, quality: str) -> None:
    assert status_page.bitrate_band(kbps * 1000 / 8) == (band, quality)


def test_bitrate_does_not_decide_quality_and_only_video_is_banded() -> None:
    muted = _participant("1", "Ann", bitrate=2_000.0)  # 16 kbps: "very bad" for video
    html = render_page(_meeting("meeting", "1", "t", muted))
    assert parse(html).meetings[0]["participants"] == [("1", "good")]
    assert '<span class="q q-plain" title="lowest bitrate">16 kbps</span>' in html
    assert "q-poor" not in html.split("</style>")[1].split('class="legend"')[0]
    frozen = _participant("2", "Bo", bitrate=2_000.0, media="video")
    html = render_page(_meeting("meeting", "1", "t", frozen))
    assert parse(html).meetings[0]["participants"] == [("2", "good")]
    assert '<span class="q q-poor" title="lowest bitrate: very bad">16 kbps</span>' in html


def test_normal_audio_is_good_and_the_rule_is_stated() -> None:
    """Normal audio (40 kbps, 80 ms, 6 ms, 0.3 %) is good: its bitrate is no judgement."""
    stream = StreamReading("audio", "input", 5_000.0, 0.08, 0.006, 0.003, 0.019, mos=4.28)
    person = ParticipantReading("1", (("user_name", "Ann"),), None, None, (stream,), (), ())
    html = render_page(_meeting("meeting", "1", "t", person))
    assert parse(html).meetings[0]["participants"] == [("1", "good")]
    assert '<span class="q q-good" title="lowest estimated MOS">MOS 4.3</span>' in html
    assert "Audio is also judged by its estimated MOS" in html
    assert "Bitrate decides nothing" in html


@pytest.mark.parametrize(
    ("mos", "quality"), [(4.0, "good"), (3.99, "fair"), (3.6, "fair"), (3.59, "poor")]
)
def test_audio_mos_decides_quality(mos: float, quality: str) -> None:
    stream = StreamReading("audio", "input", 5_000.0, 0.05, 0.005, 0.0, 0.0, mos=mos)
    person = ParticipantReading("1", (("user_name", "Ann"),), None, None, (stream,), (), ())
    html = render_page(_meeting("meeting", "1", "t", person))
    assert parse(html).meetings[0]["participants"] == [("1", quality)]


def test_a_huge_meeting_shows_its_worst_rows() -> None:
    people = [_participant(str(i), f"P{i}") for i in range(status_page.MAX_ROWS + 5)]
    people.append(_participant("bad", "Worst", loss=0.05))
    html = render_page(_meeting("webinar", "1", "t", *people))
    rows = parse(html).meetings[0]["participants"]
    assert len(rows) == status_page.MAX_ROWS
    assert rows[0] == ("bad", "poor")
    assert "and 6 more" in html


def test_participant_without_qos_is_unknown() -> None:
    bare = ParticipantReading("9", (("user_name", "Eve"),), None, None, (), (), ())
    html = render_page(_meeting("meeting", "1", "t", bare))
    assert parse(html).meetings[0]["participants"] == [("9", "unknown")]


def test_empty_states() -> None:
    waiting = status_page.render(Snapshot(), Health(), "/metrics")
    assert "Waiting for the first poll cycle" in waiting
    assert '<span class="state-down">down</span>' in waiting
    idle = render_page()
    assert "No live meetings or webinars." in idle


# ---------------------------------------------------------------------------------------------
# The live page in a real browser
# ---------------------------------------------------------------------------------------------


def chromium_dump_dom(url: str, profile: Path) -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(
            "chromium is not installed: apt-get install -y --no-install-recommends chromium"
        )
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


def meetings_from_metrics(text: str) -> dict[tuple[str, str], tuple[str, int]]:
    topics: dict[tuple[str, str], str] = {}
    counts: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.labels.get("kind", ""), sample.labels.get("meeting_id", ""))
            if sample.name == "zoom_meeting_info":
                topics[key] = sample.labels["topic"]
            elif sample.name == "zoom_meeting_participants":
                counts[key] = int(sample.value)
    return {key: (topic, counts.get(key, -1)) for key, topic in topics.items()}


def test_status_page_in_headless_chromium(demo_exporter: Exporter, tmp_path: Path) -> None:
    # The simulator lets participants come and go: retry until a page and the metrics
    # around it describe the same cycle.
    mismatch = ""
    for attempt in range(5):
        before = meetings_from_metrics(demo_exporter.metrics())
        dom = chromium_dump_dom(demo_exporter.url + "/", tmp_path / f"profile-{attempt}")
        after = meetings_from_metrics(demo_exporter.metrics())
        page = parse(dom)
        shown = {
            (str(m["kind"]), str(m["meeting_id"])): (
                str(m["topic"]),
                len(m["participants"]),  # type: ignore[arg-type]
            )
            for m in page.meetings
        }
        assert len(shown) == len(page.meetings), "a meeting is shown twice"
        assert page.scripts == 0
        assert {"/metrics", "/-/healthy", "/-/ready"} <= set(page.links)
        if shown in (before, after):
            break
        mismatch = f"page: {shown}\nmetrics before: {before}\nmetrics after: {after}"
    else:
        raise AssertionError(mismatch)
    assert shown, "the demo has live meetings, the page shows none"
    assert {kind for kind, _ in shown} == {"meeting", "webinar"}
    qualities = {q for m in page.meetings for _, q in m["participants"]}  # type: ignore[attr-defined]
    assert "poor" in qualities, "the demo's degraded participants are not flagged poor"
    assert http_get(demo_exporter.url + "/")[1]["Content-Type"].startswith("text/html")
