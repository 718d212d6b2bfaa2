"""The immutable snapshot of one poll cycle, and the pure functions that build it.

The poller builds a fresh `Snapshot` each cycle from parsed API responses and swaps it in as a
whole; the collector only ever reads one. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from exporter.polling.targets import MeetingTarget
from exporter.privacy import DEFAULT_PRIVACY, ParticipantPrivacy
from exporter.zoom import units
from exporter.zoom.models import Participant, QosSample, StreamQos


@dataclass(frozen=True, slots=True)
class StreamReading:
    """One stream's values in base units; None means Zoom gave no usable value."""

    media: str
    stream: str
    bitrate_bytes: float | None = None
    latency_seconds: float | None = None
    jitter_seconds: float | None = None
    avg_loss_ratio: float | None = None
    max_loss_ratio: float | None = None
    width_pixels: int | None = None
    height_pixels: int | None = None
    frame_rate: float | None = None


@dataclass(frozen=True, slots=True)
class ParticipantReading:
    participant_id: str
    info: tuple[tuple[str, str], ...]  # the allowed descriptive labels, pseudonymized if asked
    sample_timestamp: float | None
    join_timestamp: float | None
    streams: tuple[StreamReading, ...]
    cpu: tuple[tuple[str, str, float], ...]  # (process, stat, ratio)
    wifi_rssi: tuple[tuple[str, float], ...]  # (stat, dBm)


@dataclass(frozen=True, slots=True)
class MeetingReading:
    target: MeetingTarget
    participants: tuple[ParticipantReading, ...]
    polled_at: float
    listed: int = 0  # entries Zoom's listing held (those who left included): it sets the pages
    dropped: int = 0  # participants left out because building their reading failed


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The QoS of one cycle: every meeting's participants, as /metrics shows them."""

    meetings: tuple[MeetingReading, ...] = ()


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def stream_reading(media: str, stream: str, qos: StreamQos) -> StreamReading:
    resolution = units.parse_resolution(qos.resolution)
    return StreamReading(
        media=media,
        stream=stream,
        bitrate_bytes=units.parse_bitrate(qos.bitrate),
        latency_seconds=units.parse_duration(qos.latency),
        jitter_seconds=units.parse_duration(qos.jitter),
        avg_loss_ratio=units.parse_percent(qos.avg_loss),
        max_loss_ratio=units.parse_percent(qos.max_loss),
        width_pixels=resolution[0] if resolution else None,
        height_pixels=resolution[1] if resolution else None,
        frame_rate=units.parse_frame_rate(qos.frame_rate),
    )


def newest_sample(samples: Iterable[QosSample]) -> QosSample | None:
    """The sample with the latest `date_time`; undated samples count as oldest."""
    best: QosSample | None = None
    best_key = float("-inf")
    for sample in samples:
        key = sample.date_time.timestamp() if sample.date_time else float("-inf")
        if best is None or key >= best_key:
            best, best_key = sample, key
    return best


def _cpu(sample: QosSample) -> tuple[tuple[str, str, float], ...]:
    usage = sample.cpu_usage
    if usage is None:
        return ()
    fields = (
        ("zoom", "min", usage.zoom_min_cpu_usage),
        ("zoom", "avg", usage.zoom_avg_cpu_usage),
        ("zoom", "max", usage.zoom_max_cpu_usage),
        ("system", "max", usage.system_max_cpu_usage),
    )
    out = []
    for process, stat, raw in fields:
        value = units.parse_percent(raw)
        if value is not None:
            out.append((process, stat, value))
    return tuple(out)


def _rssi(sample: QosSample) -> tuple[tuple[str, float], ...]:
    rssi = sample.wifi_rssi
    if rssi is None:
        return ()
    out = []
    for stat, raw in (("min", rssi.min_rssi), ("avg", rssi.avg_rssi), ("max", rssi.max_rssi)):
        value = units.parse_rssi(raw)
        if value is not None:
            out.append((stat, value))
    return tuple(out)


def participant_reading(
    participant: Participant, privacy: ParticipantPrivacy = DEFAULT_PRIVACY
) -> ParticipantReading | None:
    """The exported reading of one participant, or None if it has left or has no id. Only the
    labels `privacy` allows are kept, pseudonymized if it has a key."""
    pid = participant.participant_id
    if not pid or participant.leave_time is not None:
        return None
    sample = newest_sample(participant.user_qos)
    info = privacy.info(lambda name: getattr(participant, name))
    if sample is None:
        return ParticipantReading(pid, info, None, _epoch(participant.join_time), (), (), ())
    streams = tuple(stream_reading(media, name, qos) for media, name, qos in sample.streams())
    return ParticipantReading(
        participant_id=pid,
        info=info,
        sample_timestamp=_epoch(sample.date_time),
        join_timestamp=_epoch(participant.join_time),
        streams=streams,
        cpu=_cpu(sample),
        wifi_rssi=_rssi(sample),
    )


def meeting_reading(
    target: MeetingTarget,
    participants: Iterable[Participant],
    polled_at: float,
    privacy: ParticipantPrivacy = DEFAULT_PRIVACY,
) -> MeetingReading:
    """Drop participants who left; of a repeated participant id keep the newest sample. The
    host's name is personal data too: it follows `privacy` as `user_name` does. A participant
    whose reading cannot be built is left out and counted in `dropped`."""
    kept: dict[str, ParticipantReading] = {}
    listed = dropped = 0
    for participant in participants:
        listed += 1
        try:
            reading = participant_reading(participant, privacy)
        except Exception:  # the last line of defence: one participant, never the snapshot
            dropped += 1
            continue
        if reading is None:
            continue
        previous = kept.get(reading.participant_id)
        if previous is None or _newer(reading, previous):
            kept[reading.participant_id] = reading
    ordered = tuple(kept[pid] for pid in sorted(kept))
    host = privacy.host(target.host)
    if host != target.host:
        target = replace(target, host=host)
    return MeetingReading(target, ordered, polled_at, listed, dropped)


def _newer(candidate: ParticipantReading, current: ParticipantReading) -> bool:
    inf = float("-inf")
    cand = candidate.sample_timestamp if candidate.sample_timestamp is not None else inf
    cur = current.sample_timestamp if current.sample_timestamp is not None else inf
    return cand >= cur
