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

from exporter.metrics.snapshot import Snapshot, StreamReading
from exporter.zoom.models import KINDS

REFRESH: Final = " Refreshed each poll cycle."
PARTICIPANT_LABELS: Final = ["kind", "meeting_id", "participant_id"]
STREAM_LABELS: Final = [*PARTICIPANT_LABELS, "media", "stream"]

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
        for meeting in self._snapshot.meetings:
            kind, mid = meeting.target.kind, meeting.target.meeting_id
            for p in meeting.participants:
                base = [kind, mid, p.participant_id]
                info.add_metric(base, dict(p.info))
                if p.sample_timestamp is not None:
                    sample_ts.add_metric(base, p.sample_timestamp)
                if p.join_timestamp is not None:
                    join_ts.add_metric(base, p.join_timestamp)
                for s in p.streams:
                    _add_stream(stream_families, loss, [*base, s.media, s.stream], s)
                for process, stat, value in p.cpu:
                    cpu.add_metric([*base, process, stat], value)
                for stat, value in p.wifi_rssi:
                    rssi.add_metric([*base, stat], value)
        yield from stream_families.values()
        yield from (loss, cpu, rssi, sample_ts, join_ts, info)


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
        labels = ["kind", "meeting_id"]
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
            "zoom_meetings", "Meetings or webinars being exported." + REFRESH, labels=["kind"]
        )
        counts = dict.fromkeys(KINDS, 0)
        for meeting in self._snapshot.meetings:
            t = meeting.target
            counts[t.kind] += 1
            participants.add_metric([t.kind, t.meeting_id], len(meeting.participants))
            info.add_metric(
                [t.kind, t.meeting_id],
                {"topic": t.topic, "uuid": t.uuid, "host": t.host, "source": t.source},
            )
            last_poll.add_metric([t.kind, t.meeting_id], meeting.polled_at)
        for kind, count in counts.items():
            meetings.add_metric([kind], count)
        yield from (meetings, participants, info, last_poll)


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
