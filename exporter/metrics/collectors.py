"""Collectors that turn one immutable Snapshot into Prometheus metric families.

One small collector per concern (participants' QoS, meetings). They are
bound to a snapshot, so a registry built from them always describes exactly one poll cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client.core import (
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.metrics.quality import QUALITIES
from exporter.metrics.snapshot import Snapshot, StreamAggregate, StreamReading
from exporter.zoom.models import KINDS

REFRESH: Final = " Refreshed each poll cycle."
PARTICIPANT_LABELS: Final = ["account", "kind", "meeting_id", "participant_id"]
STREAM_LABELS: Final = [*PARTICIPANT_LABELS, "media", "stream"]
MEETING_LABELS: Final = ["account", "kind", "meeting_id"]
MOS_HELP: Final = (
    "Estimated MOS (1 to 4.5) of an audio stream from its latency, jitter and average loss, by "
    "the simplified ITU-T G.107 E-model (codec impairment 0, jitter buffer twice the jitter)."
)

# (metric name, help, StreamAggregate attribute) for the meeting-level stats (p50, p95, max).
MEETING_STATS: Final = (
    ("zoom_meeting_qos_latency_seconds", "Stream latency in seconds", "latency_seconds"),
    ("zoom_meeting_qos_jitter_seconds", "Stream jitter in seconds", "jitter_seconds"),
    (
        "zoom_meeting_qos_packet_loss_ratio",
        "Average packet loss as a ratio (0 to 1)",
        "avg_loss_ratio",
    ),
    (
        "zoom_meeting_qos_bitrate_bytes_per_second",
        "Stream bitrate in bytes per second",
        "bitrate_bytes",
    ),
)
STATS: Final = ("p50", "p95", "max")

# (metric name, help, StreamReading attribute) for the one-value-per-stream gauges.
_STREAM_GAUGES: Final = (
    (
        "zoom_participant_bitrate_bytes_per_second",
        "Stream bitrate in bytes per second.",
        "bitrate_bytes",
    ),
    ("zoom_participant_latency_seconds", "Stream latency in seconds.", "latency_seconds"),
    ("zoom_participant_jitter_seconds", "Stream jitter in seconds.", "jitter_seconds"),
    (
        "zoom_participant_resolution_width_pixels",
        "Video or screen-share width in pixels.",
        "width_pixels",
    ),
    (
        "zoom_participant_resolution_height_pixels",
        "Video or screen-share height in pixels.",
        "height_pixels",
    ),
    (
        "zoom_participant_frame_rate_frames_per_second",
        "Frame rate in frames per second.",
        "frame_rate",
    ),
)


class ParticipantCollector:
    """Per-participant QoS of the newest sample: streams, CPU, Wi-Fi, info."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stream_families = {
            attr: GaugeMetricFamily(name, text + REFRESH, labels=STREAM_LABELS)
            for name, text, attr in _STREAM_GAUGES
        }
        mos = GaugeMetricFamily(
            "zoom_participant_audio_mos_estimate",
            MOS_HELP + REFRESH,
            labels=[*PARTICIPANT_LABELS, "stream"],
        )
        loss = GaugeMetricFamily(
            "zoom_participant_packet_loss_ratio",
            "Packet loss as a ratio (0 to 1), average or maximum over the sample." + REFRESH,
            labels=[*STREAM_LABELS, "stat"],
        )
        cpu = GaugeMetricFamily(
            "zoom_participant_cpu_usage_ratio",
            "CPU usage as a ratio (0 to 1) of the Zoom process or the whole system." + REFRESH,
            labels=[*PARTICIPANT_LABELS, "process", "stat"],
        )
        rssi = GaugeMetricFamily(
            "zoom_participant_wifi_rssi_dbm",
            "Wi-Fi received signal strength in dBm." + REFRESH,
            labels=[*PARTICIPANT_LABELS, "stat"],
        )
        sample_ts = GaugeMetricFamily(
            "zoom_participant_qos_sample_timestamp_seconds",
            "Unix time at which Zoom took the exported QoS sample." + REFRESH,
            labels=PARTICIPANT_LABELS,
        )
        join_ts = GaugeMetricFamily(
            "zoom_participant_join_timestamp_seconds",
            "Unix time at which the participant joined." + REFRESH,
            labels=PARTICIPANT_LABELS,
        )
        info = InfoMetricFamily(
            "zoom_participant",
            "Descriptive fields of a live participant; value is always 1." + REFRESH,
            labels=PARTICIPANT_LABELS,
        )
        account = self._snapshot.account
        for meeting in self._snapshot.meetings:
            kind, mid = meeting.target.kind, meeting.target.meeting_id
            for p in meeting.exported_participants:
                base = [account, kind, mid, p.participant_id]
                info.add_metric(base, dict(p.info))
                if p.sample_timestamp is not None:
                    sample_ts.add_metric(base, p.sample_timestamp)
                if p.join_timestamp is not None:
                    join_ts.add_metric(base, p.join_timestamp)
                for s in p.streams:
                    _add_stream(stream_families, loss, [*base, s.media, s.stream], s)
                    if s.mos is not None:
                        mos.add_metric([*base, s.stream], s.mos)
                for process, stat, value in p.cpu:
                    cpu.add_metric([*base, process, stat], value)
                for stat, value in p.wifi_rssi:
                    rssi.add_metric([*base, stat], value)
        yield from stream_families.values()
        yield from (loss, mos, cpu, rssi, sample_ts, join_ts, info)


def _add_stream(
    families: dict[str, GaugeMetricFamily],
    loss: GaugeMetricFamily,
    labels: list[str],
    reading: StreamReading,
) -> None:
    for attr, family in families.items():
        value = getattr(reading, attr)
        if value is not None:
            family.add_metric(labels, value)
    if reading.avg_loss_ratio is not None:
        loss.add_metric([*labels, "avg"], reading.avg_loss_ratio)
    if reading.max_loss_ratio is not None:
        loss.add_metric([*labels, "max"], reading.max_loss_ratio)


class MeetingCollector:
    """Per-meeting counts and descriptions, and the number of live meetings per kind."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        labels = MEETING_LABELS
        account = self._snapshot.account
        participants = GaugeMetricFamily(
            "zoom_meeting_participants",
            "Live participants with QoS data in the meeting or webinar." + REFRESH,
            labels=labels,
        )
        info = InfoMetricFamily(
            "zoom_meeting",
            "Descriptive fields of a polled meeting or webinar; value is always 1." + REFRESH,
            labels=labels,
        )
        last_poll = GaugeMetricFamily(
            "zoom_meeting_last_poll_timestamp_seconds",
            "Unix time of the last successful poll of the meeting's participants." + REFRESH,
            labels=labels,
        )
        meetings = GaugeMetricFamily(
            "zoom_meetings",
            "Meetings or webinars being exported." + REFRESH,
            labels=["account", "kind"],
        )
        by_quality = GaugeMetricFamily(
            "zoom_meeting_participants_by_quality",
            "Live participants by quality (good, fair, poor), by the status page's rule: the "
            "worst of latency, jitter, average loss and audio MOS over their streams." + REFRESH,
            labels=[*labels, "quality"],
        )
        stats = [
            (
                GaugeMetricFamily(
                    name,
                    f"{text}: p50, p95 and max across the meeting's participants." + REFRESH,
                    labels=[*labels, "media", "stream", "stat"],
                ),
                attr,
            )
            for name, text, attr in MEETING_STATS
        ]
        mos = GaugeMetricFamily(
            "zoom_meeting_audio_mos_estimate",
            "Estimated audio MOS (1 to 4.5) across the meeting's participants: p5 and min. "
            "See zoom_participant_audio_mos_estimate." + REFRESH,
            labels=[*labels, "stream", "stat"],
        )
        counts = dict.fromkeys(KINDS, 0)
        for meeting in self._snapshot.meetings:
            t = meeting.target
            base = [account, t.kind, t.meeting_id]
            counts[t.kind] += 1
            participants.add_metric(base, len(meeting.participants))
            info.add_metric(
                base, {"topic": t.topic, "uuid": t.uuid, "host": t.host, "source": t.source}
            )
            last_poll.add_metric(base, meeting.polled_at)
            quality = meeting.quality
            for name in QUALITIES:
                by_quality.add_metric([*base, name], getattr(quality, name))
            for family, attr in stats:
                for aggregate in quality.streams:
                    _add_stats(family, [*base, aggregate.media, aggregate.stream], aggregate, attr)
            for aggregate in quality.streams:
                if aggregate.mos is not None:
                    for stat, value in zip(("p5", "min"), aggregate.mos, strict=True):
                        mos.add_metric([*base, aggregate.stream, stat], value)
        for kind, count in counts.items():
            meetings.add_metric([account, kind], count)
        dropped = GaugeMetricFamily(
            "zoom_exporter_series_dropped",
            "Participant series left out of /metrics by ZOOM_EXPORTER_PARTICIPANT_SERIES "
            "(reason participants) and ZOOM_EXPORTER_STREAMS (reason streams)." + REFRESH,
            labels=["account", "reason"],
        )
        people, streams = self._snapshot.dropped()
        dropped.add_metric([account, "participants"], people)
        dropped.add_metric([account, "streams"], streams)
        yield from (meetings, participants, info, last_poll, by_quality)
        yield from (family for family, _attr in stats)
        yield from (mos, dropped)


def _add_stats(
    family: GaugeMetricFamily, labels: list[str], aggregate: StreamAggregate, attr: str
) -> None:
    values = getattr(aggregate, attr)
    if values is not None:
        for stat, value in zip(STATS, values, strict=True):
            family.add_metric([*labels, stat], value)


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    """A fresh registry that describes exactly this snapshot's QoS."""
    registry = CollectorRegistry(auto_describe=False)
    collectors: tuple[Collector, ...] = (
        MeetingCollector(snapshot),
        ParticipantCollector(snapshot),
    )
    for collector in collectors:
        registry.register(collector)
    return registry
