"""Collectors that turn one immutable Snapshot into Prometheus metric families.

One small collector per concern (participants' QoS, meetings, the exporter itself). They are
bound to a snapshot, so a registry built from them always describes exactly one poll cycle.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__
from exporter.metrics.snapshot import STATES, Snapshot, StreamReading
from exporter.zoom.limits import HEAVY, RESOURCE_INTENSIVE
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


class ExporterCollector:
    """The exporter's own health: reachability of Zoom, cycle timing, API calls, build."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot
        yield GaugeMetricFamily(
            "zoom_up",
            "1 if the last poll cycle reached the Zoom API, 0 if it failed." + REFRESH,
            value=1.0 if snap.up else 0.0,
        )
        if snap.last_success_timestamp is not None:
            yield GaugeMetricFamily(
                "zoom_last_successful_poll_timestamp_seconds",
                "Unix time at which the last successful poll cycle ended." + REFRESH,
                value=snap.last_success_timestamp,
            )
        if snap.poll_duration_seconds is not None:
            yield GaugeMetricFamily(
                "zoom_poll_duration_seconds",
                "Duration of the last poll cycle in seconds." + REFRESH,
                value=snap.poll_duration_seconds,
            )
        requests = CounterMetricFamily(
            "zoom_api_requests",
            "Zoom API calls by endpoint and HTTP status code (error: no answer)." + REFRESH,
            labels=["endpoint", "code"],
        )
        for endpoint, code, count in snap.api_requests:
            requests.add_metric([endpoint, code], count)
        yield requests
        yield from _health(snap)
        build = InfoMetricFamily("zoom_exporter_build", "Exporter build information; always 1.")
        build.add_metric([], {"version": __version__, "pythonversion": platform.python_version()})
        yield build
        yield from snap.process


RATE_LIMIT_PAIRS = tuple(
    (category, kind) for category in (HEAVY, RESOURCE_INTENSIVE) for kind in ("QPS", "Daily-limit")
)


def _gauge(name: str, documentation: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, documentation + REFRESH, value=value)


def _health(snap: Snapshot) -> Iterator[Metric]:
    """Rate limits, the daily budget and the planner, the exporter's state, config reloads."""
    if snap.state is not None:
        state = GaugeMetricFamily(
            "zoom_exporter_state",
            "What the last poll cycle ran into: 1 for the current state, 0 for the others."
            + REFRESH,
            labels=["state"],
        )
        for name in STATES:
            state.add_metric([name], 1.0 if name == snap.state else 0.0)
        yield state
    yield from _gauge(
        "zoom_exporter_poll_interval_seconds",
        "Effective seconds between poll cycles, stretched so the daily budget lasts.",
        snap.poll_interval_seconds,
    )
    if snap.budget is not None:
        yield from _gauge(
            "zoom_exporter_daily_budget",
            "This exporter's daily Zoom API request budget (its share of the account's cap).",
            snap.budget.budget,
        )
        yield from _gauge(
            "zoom_exporter_daily_budget_remaining",
            "Requests left today: the lower of our own count and Zoom's X-RateLimit-Remaining.",
            snap.budget.remaining,
        )
        yield from _gauge(
            "zoom_exporter_daily_budget_reset_timestamp_seconds",
            "Unix time of the next daily reset (00:00 UTC).",
            snap.budget.reset_timestamp,
        )
    yield from _gauge(
        "zoom_exporter_paused_until_timestamp_seconds",
        "Unix time until which Zoom API calls are paused (daily limit or budget spent).",
        snap.paused_until,
    )
    yield from _gauge(
        "zoom_exporter_last_cycle_requests",
        "Zoom API requests the last poll cycle made.",
        snap.cycle_requests,
    )
    yield from _gauge(
        "zoom_exporter_last_cycle_planned_requests",
        "Requests the planner expected the last cycle to make (discovery pages plus, per "
        "meeting, ceil(participants / 10)).",
        snap.planned_requests,
    )
    if snap.state is not None:
        yield from _gauge(
            "zoom_exporter_meetings_deferred",
            "Meetings left out of the last cycle to stay within the daily budget.",
            snap.meetings_deferred,
        )
    limited = CounterMetricFamily(
        "zoom_api_rate_limited",
        "HTTP 429 answers from Zoom by rate-limit category and X-RateLimit-Type." + REFRESH,
        labels=["category", "type"],
    )
    # The known pairs start at 0, so the first 429 is an increase Prometheus can see.
    counts = {pair: 0 for pair in RATE_LIMIT_PAIRS} if snap.state is not None else {}
    counts.update({(category, kind): n for category, kind, n in snap.rate_limited})
    for (category, kind), count in sorted(counts.items()):
        limited.add_metric([category, kind], count)
    yield limited
    retries = CounterMetricFamily(
        "zoom_api_retries",
        "Zoom API calls made again, by endpoint and reason." + REFRESH,
        labels=["endpoint", "reason"],
    )
    for endpoint, reason, count in snap.retries:
        retries.add_metric([endpoint, reason], count)
    yield retries
    if snap.config_reload is not None:
        ok, when = snap.config_reload
        yield GaugeMetricFamily(
            "zoom_exporter_config_last_reload_successful",
            "1 if the last configuration reload (SIGHUP) succeeded, 0 if it was rejected.",
            value=1.0 if ok else 0.0,
        )
        yield from _gauge(
            "zoom_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload.",
            when,
        )
    yield from _gauge(
        "zoom_exporter_asyncio_tasks",
        "asyncio tasks alive in the exporter when the last cycle ended.",
        snap.asyncio_tasks,
    )


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    """A fresh registry that describes exactly this snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    collectors: tuple[Collector, ...] = (
        ExporterCollector(snapshot),
        MeetingCollector(snapshot),
        ParticipantCollector(snapshot),
    )
    for collector in collectors:
        registry.register(collector)
    return registry
