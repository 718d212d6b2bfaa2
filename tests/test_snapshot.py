"""Models, snapshot building and rendering, on a recorded-shape page with every edge case."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.metrics.collectors import registry_for
from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import (
    ParticipantReading,
    SeriesOptions,
    Snapshot,
    StreamReading,
    meeting_reading,
)
from exporter.polling.targets import MeetingTarget
from exporter.zoom.models import Participant

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden.prom"
TARGET = MeetingTarget("meeting", "85746065432", "85746065432", topic="Weekly Sync", uuid="abc==")


def participants() -> list[Participant]:
    page = json.loads((DATA / "participants_page.json").read_text())
    return [Participant.model_validate(item) for item in page["participants"]]


def snapshot() -> Snapshot:
    reading = meeting_reading(TARGET, participants(), 1624564980.0, series=SeriesOptions())
    return Snapshot(meetings=(reading,))


def test_models_ignore_unknown_fields_and_bad_types() -> None:
    found = {p.user_id: p for p in participants()}
    odd = found["16778245"]
    assert odd.version == "5"
    assert odd.join_time is None
    assert len(odd.user_qos) == 1
    assert odd.user_qos[0].audio_input is None
    assert odd.user_qos[0].cpu_usage is not None
    assert odd.user_qos[0].cpu_usage.zoom_avg_cpu_usage == "12"
    assert found["16778241"].leave_time is not None
    assert found["16778240"].leave_time is None  # "" means still present


def test_participants_left_duplicate_and_unnamed() -> None:
    reading = meeting_reading(TARGET, participants(), 0.0)
    ids = [p.participant_id for p in reading.participants]
    assert ids == ["16778240", "16778242", "16778243", "16778244", "16778245"]
    by_id = {p.participant_id: p for p in reading.participants}
    # the rejoined participant is the present entry, not the one with a leave_time
    assert dict(by_id["16778242"].info)["user_name"] == "Rejoined"
    assert by_id["16778242"].join_timestamp == pytest.approx(1624564870.0)
    # of a repeated id, the newest sample wins
    audio = next(s for s in by_id["16778244"].streams if s.media == "audio")
    assert audio.bitrate_bytes == 2500.0


def test_newest_sample_is_exported_whatever_the_order() -> None:
    reading = meeting_reading(TARGET, participants(), 0.0)
    seed = reading.participants[0]
    assert seed.sample_timestamp == pytest.approx(1624564980.0)
    audio_in = next(s for s in seed.streams if (s.media, s.stream) == ("audio", "input"))
    assert audio_in.bitrate_bytes == 2875.0
    assert audio_in.latency_seconds == 0.126
    assert audio_in.avg_loss_ratio == 0.003


def sample_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_seed_values_exported_in_base_units() -> None:
    text = Exposition.render(snapshot()).text.plain.decode()
    ids = {"meeting_id": "85746065432", "participant_id": "16778240"}
    audio_in = {**ids, "media": "audio", "stream": "input"}
    assert sample_value(text, "zoom_participant_bitrate_bytes_per_second", **audio_in) == 2875.0
    assert sample_value(text, "zoom_participant_latency_seconds", **audio_in) == 0.126
    assert sample_value(text, "zoom_participant_jitter_seconds", **audio_in) == 0.006
    assert sample_value(text, "zoom_participant_packet_loss_ratio", **audio_in, stat="avg") == 0.003
    assert sample_value(text, "zoom_participant_packet_loss_ratio", **audio_in, stat="max") == 0.019
    share = {**ids, "media": "screen_share", "stream": "input"}
    assert sample_value(text, "zoom_participant_resolution_width_pixels", **share) == 0.0
    assert sample_value(text, "zoom_participant_frame_rate_frames_per_second", **share) is None
    cpu = {**ids, "process": "zoom", "stat": "avg"}
    assert sample_value(text, "zoom_participant_cpu_usage_ratio", **cpu) == 0.12


def test_empty_and_garbage_values_yield_no_series() -> None:
    text = Exposition.render(snapshot()).text.plain.decode()
    assert "NaN" not in text
    video = {"participant_id": "16778242", "media": "video", "stream": "input"}
    for name in (
        "zoom_participant_bitrate_bytes_per_second",
        "zoom_participant_jitter_seconds",
        "zoom_participant_latency_seconds",
        "zoom_participant_packet_loss_ratio",
    ):
        assert sample_value(text, name, **video) is None
    rwg = {"participant_id": "16778242", "media": "video", "stream": "device_to_rwg"}
    assert sample_value(text, "zoom_participant_bitrate_bytes_per_second", **rwg) is None  # opt-in
    every = Snapshot(meetings=(meeting_reading(TARGET, participants(), 0.0),))
    every_text = Exposition.render(every).text.plain.decode()
    assert sample_value(every_text, "zoom_participant_bitrate_bytes_per_second", **rwg) == 262500.0
    assert (
        sample_value(text, "zoom_participant_wifi_rssi_dbm", participant_id="16778242", stat="min")
        == -63
    )
    assert "16778241" not in text  # left
    assert "brand_new" not in text


def test_openmetrics_rendering_and_gzip() -> None:
    exposition = Exposition.render(snapshot())
    om = exposition.form(openmetrics=True).plain.decode()
    assert "# EOF" not in om  # the live self-metrics that follow end it
    assert "# TYPE zoom_participant info" in om
    import gzip

    for openmetrics in (False, True):
        form = exposition.form(openmetrics=openmetrics)
        tail = b"zoom_up 1\n"
        zipped = form.body(tail, compressed=True)
        assert gzip.decompress(zipped) == form.plain + tail == form.body(tail, compressed=False)
        # the cached deflate state is copied, never used: every scrape gets the same bytes
        assert form.body(tail, compressed=True) == zipped
        # written in parts of at most `limit` bytes (the tail apart), the length told first
        for compressed in (False, True):
            length, parts = form.stream(tail, compressed=compressed, limit=100)
            pieces = [bytes(part) for part in parts]
            assert all(len(piece) <= 100 for piece in pieces[:-1]) and len(pieces) > 3
            assert len(b"".join(pieces)) == length
            assert b"".join(pieces) == (zipped if compressed else form.plain + tail)


def normalised(text: str) -> str:
    """The exposition without the lines that depend on the Python that runs the test."""
    return re.sub(r"^zoom_exporter_build_info\{.*\n", "", text, flags=re.M)


def test_golden_exposition() -> None:
    text = normalised(Exposition.render(snapshot()).text.plain.decode())
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"


def test_promtool_accepts_the_golden_file() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install prometheus")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=GOLDEN.read_bytes(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert result.stdout.decode().strip() == ""  # no lint findings


def test_registry_describes_only_this_snapshot() -> None:
    families = {m.name for m in registry_for(Snapshot()).collect()}
    assert "zoom_meetings" in families
    assert "zoom_up" not in families  # the exporter's own metrics are live, not per snapshot
    samples = [
        s
        for m in registry_for(Snapshot()).collect()
        for s in m.samples
        if m.name.startswith("zoom_participant")
    ]
    assert samples == []


def _odd_snapshot(series: SeriesOptions | None = None) -> Snapshot:
    """The golden page with every stream, odd labels and edge values."""
    tricky = Participant.model_validate(
        {
            "user_id": 'p"1\\x',
            "user_name": 'Zoë "the \\ quoter"\nsecond line',
            "user_qos": [
                {"date_time": "2026-11-21T10:00:00Z", "audio_input": {"bitrate": "1 bps"}}
            ],
        }
    )
    edge = ParticipantReading(
        "edge",
        (("user_name", ""),),
        -0.0,
        1e22,
        (
            StreamReading("audio", "input", -0.0, 0.0, 1.5e-7, 1e-300, 123456.0, mos=4.4),
            StreamReading("video", "output", 1234567.0, 1624564981.5, 2.0, 0.0, -0.0, 0, 1, 0.5),
        ),
        (("zoom", "avg", -0.0),),
        (("min", -5e9),),
    )
    base = meeting_reading(TARGET, participants(), 1624564980.0, series=series)
    extra = meeting_reading(
        MeetingTarget("webinar", "w1", "w1", topic='Q&A \\ "all"'), [tricky], 7e-7, series=series
    )
    hidden = series is not None and series.participants == "none"
    edges = replace(
        extra,
        target=MeetingTarget("meeting", "e", "e"),
        participants=(edge,),
        exported=() if hidden else None,
    )
    return Snapshot(meetings=(base, extra, edges))


@pytest.mark.parametrize(
    "series",
    [
        None,
        SeriesOptions(),
        SeriesOptions("worst", 2),
        SeriesOptions("none", streams=frozenset({"device_to_rwg"})),
    ],
)
def test_renderer_matches_prometheus_client(series: SeriesOptions | None) -> None:
    """Our renderer, straight from the snapshot, is byte-identical to prometheus_client over
    the collectors' families, escaping and edge values included, in every mode."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from exporter.metrics.exposition import format_exposition

    snap = _odd_snapshot(series)
    registry = registry_for(snap)
    exposition = Exposition.render(snap)
    assert exposition.text.plain == generate_latest(registry)
    assert exposition.openmetrics.plain + b"# EOF\n" == generate_openmetrics(registry)
    # the generic formatter (used for the self-metrics) too
    assert format_exposition(registry.collect()) == generate_latest(registry)
    assert format_exposition(registry.collect(), openmetrics=True) == generate_openmetrics(registry)


@pytest.mark.parametrize(
    "number", [0.0, -0.0, 1.0, 0.126, 2875.0, 123456.0, 1234567.0, 1e22, 1.5e-7, -5e9, 1624564981.5]
)
def test_go_float_matches_prometheus_client(number: float) -> None:
    from prometheus_client.utils import floatToGoString

    from exporter.metrics.exposition import go_float

    assert go_float(number) == floatToGoString(number)


def test_release_frees_an_exposition_a_slice_at_a_time() -> None:
    """The store frees the previous exposition in slices of participants (one deallocation
    cascade of a large snapshot holds the GIL for tens of ms); readings still held elsewhere,
    as the poller holds a deferred meeting's, stay intact."""
    from exporter.metrics.store import FREE_SLICE, release

    snap = snapshot()
    kept = snap.meetings[0]
    people = len(kept.participants)
    held = [Exposition.render(snap)]
    del snap
    release(held)
    assert held == []
    assert len(kept.participants) == people  # still whole where it is still used
    assert FREE_SLICE >= 1
