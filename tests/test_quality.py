"""Meeting-level quality, the estimated MOS and the bounded participant series."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics.exposition import Exposition
from exporter.metrics.mos import audio_mos, mos_from_r, r_factor
from exporter.metrics.quality import participant_quality
from exporter.metrics.snapshot import Snapshot, meeting_reading, worst_first
from exporter.polling.targets import MeetingTarget
from exporter.series import SeriesOptions
from exporter.zoom.models import Participant

TARGET = MeetingTarget("meeting", "1", "1", topic="t")

# ITU-T G.107 Annex B (and G.109's table of categories): the MOS that a rating R predicts.
G107_POINTS = [(0, 1.0), (50, 2.58), (60, 3.10), (70, 3.60), (80, 4.03), (90, 4.34), (100, 4.5)]


@pytest.mark.parametrize(("r", "mos"), G107_POINTS)
def test_mos_from_r_matches_g107(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=0.01)


@pytest.mark.parametrize(
    ("latency_ms", "jitter_ms", "loss_percent", "r", "mos"),
    [
        # Le = 0 + 0 + 10 = 10 ms: R = 93.2 - 10/40 = 92.95, the ceiling with Ie = 0.
        (0, 0, 0, 92.95, 4.40),
        # Le = 100 + 40 + 10 = 150 ms: R = 93.2 - 3.75 - 2.5 = 86.95.
        (100, 20, 1, 86.95, 4.26),
        # Le = 150 + 80 + 10 = 240 ms: R = 93.2 - (240 - 120)/10 - 5 = 76.2 (Zoom's "poor" edge).
        (150, 40, 2, 76.2, 3.87),
        # Le = 400 + 100 + 10 = 510 ms: R = 93.2 - 39 - 12.5 = 41.7.
        (400, 50, 5, 41.7, 2.14),
        # Everything bad: R is held at 0, MOS 1.
        (2000, 500, 50, 0.0, 1.0),
    ],
)
def test_simplified_e_model_points(
    latency_ms: float, jitter_ms: float, loss_percent: float, r: float, mos: float
) -> None:
    args = (latency_ms / 1000, jitter_ms / 1000, loss_percent / 100)
    assert r_factor(*args) == pytest.approx(r, abs=1e-9)
    assert audio_mos(*args) == pytest.approx(mos, abs=0.01)


def test_mos_is_monotonic_in_each_input() -> None:
    grid = [i / 1000 for i in range(0, 2001, 7)]
    for fixed in (0.0, 0.02, 0.1, 0.3):
        for index in range(3):
            values = []
            for x in grid:
                args = [fixed, fixed / 4, fixed / 20]
                args[index] = x if index < 2 else x / 10
                values.append(audio_mos(*args))
            assert all(a is not None for a in values)
            assert all(a >= b for a, b in itertools.pairwise(values)), (fixed, index)
    assert all(1.0 <= mos_from_r(r / 10) <= 4.5 for r in range(-100, 1100))
    assert audio_mos(None, 0.01, 0.0) is None
    assert audio_mos(0.01, 0.01, None) is None


def _people(count: int, seed: int = 7) -> list[Participant]:
    rng = random.Random(seed)
    people = []
    for i in range(count):
        audio = {
            "latency": f"{rng.randint(20, 300)} ms",
            "jitter": f"{rng.randint(0, 80)} ms",
            "avg_loss": f"{rng.choice([0, 0, 0.1, 0.5, 1.2, 3.0, 7.5])}%",
            "max_loss": "9%",
            "bitrate": f"{rng.randint(20, 90)} kbps",
        }
        sample = {"date_time": "2026-11-21T10:00:00Z", "audio_input": audio}
        if i % 3:
            sample["video_output"] = {"latency": f"{rng.randint(20, 300)} ms", "bitrate": "1 Mbps"}
            sample["audio_device_from_crc"] = {"latency": "3 ms", "jitter": "1 ms"}
        people.append(Participant.model_validate({"user_id": f"u{i:03d}", "user_qos": [sample]}))
    return people


def _series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _by(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str):
    return {
        dict(labels).get("participant_id", ""): value
        for (n, labels), value in samples.items()
        if n == name and all(dict(labels).get(k) == v for k, v in want.items())
    }


def test_aggregates_equal_quantiles_of_the_participant_series() -> None:
    """zoom_meeting_qos_* and the MOS stats are PromQL's quantile() over the participant series
    (linear interpolation, as statistics.quantiles' inclusive method)."""
    reading = meeting_reading(TARGET, _people(57), 0.0, series=SeriesOptions())
    samples = _series(Exposition.render(Snapshot((reading,))).text.plain.decode())

    def quantiles(values: list[float]) -> list[float]:
        return statistics.quantiles(values, n=100, method="inclusive")

    for family, name in (
        ("latency_seconds", "zoom_participant_latency_seconds"),
        ("jitter_seconds", "zoom_participant_jitter_seconds"),
        ("bitrate_bytes_per_second", "zoom_participant_bitrate_bytes_per_second"),
    ):
        for media, stream in (("audio", "input"), ("video", "output")):
            values = list(_by(samples, name, media=media, stream=stream).values())
            if not values:
                continue
            stat = _by(samples, f"zoom_meeting_qos_{family}", media=media, stream=stream)
            assert len(stat) == 1
            got = {
                dict(labels)["stat"]: value
                for (n, labels), value in samples.items()
                if n == f"zoom_meeting_qos_{family}"
                and dict(labels)["media"] == media
                and dict(labels)["stream"] == stream
            }
            cuts = quantiles(values)
            assert got["p50"] == pytest.approx(cuts[49])
            assert got["p95"] == pytest.approx(cuts[94])
            assert got["max"] == max(values)
    loss = list(
        _by(samples, "zoom_participant_packet_loss_ratio", media="audio", stat="avg").values()
    )
    got_loss = {
        dict(labels)["stat"]: value
        for (n, labels), value in samples.items()
        if n == "zoom_meeting_qos_packet_loss_ratio" and dict(labels)["media"] == "audio"
    }
    assert got_loss["p95"] == pytest.approx(quantiles(loss)[94])
    mos = list(_by(samples, "zoom_participant_audio_mos_estimate", stream="input").values())
    assert len(mos) == 57
    got_mos = {
        dict(labels)["stat"]: value
        for (n, labels), value in samples.items()
        if n == "zoom_meeting_audio_mos_estimate"
    }
    assert got_mos["p5"] == pytest.approx(quantiles(mos)[4])
    assert got_mos["min"] == min(mos)
    # participants by quality: the status page's rule, every participant counted once
    counts = {
        dict(labels)["quality"]: value
        for (n, labels), value in samples.items()
        if n == "zoom_meeting_participants_by_quality"
    }
    expected = {"good": 0, "fair": 0, "poor": 0}
    for p in reading.participants:
        quality = participant_quality(p)
        if quality in expected:
            expected[quality] += 1
    assert counts == expected
    assert sum(counts.values()) == 57


@pytest.mark.parametrize("n", [1, 5, 20])
def test_worst_n_keeps_exactly_the_n_worst(n: int) -> None:
    people = _people(40)
    every = meeting_reading(TARGET, people, 0.0, series=SeriesOptions())
    worst = meeting_reading(TARGET, people, 0.0, series=SeriesOptions("worst", n))
    expected = sorted(every.participants, key=worst_first)[:n]
    kept = worst.exported_participants
    assert len(kept) == n
    assert {p.participant_id for p in kept} == {p.participant_id for p in expected}
    # worst by MOS, then loss, then jitter: nobody left out is worse than anybody kept
    assert max(map(worst_first, kept)) <= min(
        worst_first(p) for p in every.participants if p not in kept
    )
    text = Exposition.render(Snapshot((worst,))).text.plain.decode()
    ids = {
        s.labels["participant_id"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "participant_id" in s.labels
    }
    assert ids == {p.participant_id for p in kept}
    # the meeting-level series still cover everyone
    assert worst.quality == every.quality
    dropped = sum(p.series() for p in every.participants if p not in kept)
    assert (
        f'zoom_exporter_series_dropped{{account="default",reason="participants"}} {float(dropped)}'
        in text
    )


def test_worst_first_orders_by_mos_then_loss_then_jitter() -> None:
    def person(pid: str, latency: str, loss: str, jitter: str = "1 ms") -> Participant:
        audio = {"latency": latency, "jitter": jitter, "avg_loss": loss}
        video = {"jitter": jitter, "avg_loss": loss}
        sample = {"date_time": "2026-11-21T10:00:00Z", "audio_input": audio, "video_input": video}
        return Participant.model_validate({"user_id": pid, "user_qos": [sample]})

    reading = meeting_reading(
        TARGET,
        [
            person("good", "20 ms", "0%"),
            person("slow", "400 ms", "0%"),  # lowest MOS
            person("lossy", "20 ms", "1%"),
            Participant.model_validate(  # no audio: no MOS, then loss decides among equals
                {
                    "user_id": "video-only",
                    "user_qos": [{"video_input": {"avg_loss": "9%", "jitter": "1 ms"}}],
                }
            ),
        ],
        0.0,
    )
    order = [p.participant_id for p in sorted(reading.participants, key=worst_first)]
    assert order == ["slow", "lossy", "good", "video-only"]


def test_none_and_streams_leave_out_participant_series_only() -> None:
    people = _people(12)
    none = meeting_reading(TARGET, people, 0.0, series=SeriesOptions("none"))
    text = Exposition.render(Snapshot((none,))).text.plain.decode()
    assert "participant_id=" not in text
    assert 'zoom_meeting_participants{account="default",kind="meeting",meeting_id="1"} 12.0' in text
    assert "zoom_meeting_qos_latency_seconds{" in text
    assert "zoom_meeting_audio_mos_estimate{" in text
    every = meeting_reading(TARGET, people, 0.0, series=SeriesOptions())
    assert none.dropped_participant_series == sum(p.series() for p in every.participants)
    # the device_* streams are opt-in: what they would cost is counted
    all_streams = meeting_reading(TARGET, people, 0.0)
    assert "device_from_crc" not in text
    assert every.dropped_stream_series == sum(p.series() for p in all_streams.participants) - sum(
        p.series() for p in every.participants
    )
    assert every.dropped_stream_series == 8 * 2  # 8 of 12 have its latency and jitter: no MOS


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("all", ("all", 0)),
        ("none", ("none", 0)),
        ("worst:20", ("worst", 20)),
        (" Worst:1", ("worst", 1)),
    ],
)
def test_parse_participant_series(text: str, parsed: tuple[str, int]) -> None:
    assert SeriesOptions.parse_participants(text) == parsed


@pytest.mark.parametrize("text", ["", "worst", "worst:0", "worst:-1", "worst:x", "some", "all:3"])
def test_parse_participant_series_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="all, none or worst:N"):
        SeriesOptions.parse_participants(text)
