"""The immutable snapshot of one poll cycle, and the pure functions that build it.

The poller builds a fresh `Snapshot` each cycle from parsed API responses and swaps it in as a
whole; the collector only ever reads one. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from exporter.metrics.mos import audio_mos
from exporter.metrics.quality import participant_quality
from exporter.polling.targets import MeetingTarget
from exporter.privacy import DEFAULT_PRIVACY, ParticipantPrivacy
from exporter.series import SeriesOptions
from exporter.zoom import units
from exporter.zoom.models import MEDIA_PREFIXES, STREAM_SUFFIXES, Participant, QosSample, StreamQos


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
    mos: float | None = None  # audio only: the estimated MOS (exporter/metrics/mos.py)

    def series(self) -> int:
        """How many series this stream exports."""
        values = (
            self.bitrate_bytes,
            self.latency_seconds,
            self.jitter_seconds,
            self.avg_loss_ratio,
            self.max_loss_ratio,
            self.width_pixels,
            self.height_pixels,
            self.frame_rate,
            self.mos,
        )
        return sum(1 for v in values if v is not None)


@dataclass(frozen=True, slots=True)
class ParticipantReading:
    participant_id: str
    info: tuple[tuple[str, str], ...]  # the allowed descriptive labels, pseudonymized if asked
    sample_timestamp: float | None
    join_timestamp: float | None
    streams: tuple[StreamReading, ...]
    cpu: tuple[tuple[str, str, float], ...]  # (process, stat, ratio)
    wifi_rssi: tuple[tuple[str, float], ...]  # (stat, dBm)
    dropped_series: int = 0  # the series of the streams left out by SeriesOptions.streams

    def series(self) -> int:
        """How many series this participant exports (info, timestamps, CPU, Wi-Fi, streams)."""
        count = 1 + len(self.cpu) + len(self.wifi_rssi) + sum(s.series() for s in self.streams)
        return count + (self.sample_timestamp is not None) + (self.join_timestamp is not None)


Stats = tuple[float, float, float]  # p50, p95, max across participants


@dataclass(frozen=True, slots=True)
class StreamAggregate:
    """One media and stream of a meeting, across its participants; None: nobody had a value."""

    media: str
    stream: str
    latency_seconds: Stats | None = None
    jitter_seconds: Stats | None = None
    avg_loss_ratio: Stats | None = None
    bitrate_bytes: Stats | None = None
    mos: tuple[float, float] | None = None  # audio: p5 and min


@dataclass(frozen=True, slots=True)
class MeetingQuality:
    """A meeting's quality at a glance: exported whatever the participant series settings."""

    streams: tuple[StreamAggregate, ...] = ()
    good: int = 0
    fair: int = 0
    poor: int = 0


@dataclass(frozen=True, slots=True)
class MeetingReading:
    target: MeetingTarget
    participants: tuple[ParticipantReading, ...]
    polled_at: float
    listed: int = 0  # entries Zoom's listing held (those who left included): it sets the pages
    dropped: int = 0  # participants left out because building their reading failed
    quality: MeetingQuality = MeetingQuality()
    exported: tuple[ParticipantReading, ...] | None = None  # None: every participant
    dropped_participant_series: int = 0  # left out by SeriesOptions.participants
    dropped_stream_series: int = 0  # left out by SeriesOptions.streams

    @property
    def exported_participants(self) -> tuple[ParticipantReading, ...]:
        """The participants whose series /metrics shows."""
        return self.participants if self.exported is None else self.exported


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The QoS of one account's cycle: every meeting's participants, as /metrics shows them."""

    meetings: tuple[MeetingReading, ...] = ()
    account: str = "default"  # the `account` label of every series

    def dropped(self) -> tuple[int, int]:
        """Series left out by the settings: (participants, streams)."""
        people = sum(m.dropped_participant_series for m in self.meetings)
        return people, sum(m.dropped_stream_series for m in self.meetings)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


MEMO_LIMIT = 65_536  # unit strings kept parsed
_bitrate = units.memo(units.parse_bitrate, MEMO_LIMIT)
_duration = units.memo(units.parse_duration, MEMO_LIMIT)
_percent = units.memo(units.parse_percent, MEMO_LIMIT)
_frame_rate = units.memo(units.parse_frame_rate, MEMO_LIMIT)
_resolution = units.memo(units.parse_resolution, MEMO_LIMIT)


_IDLE: dict[tuple[str | None, ...], StreamReading] = {}  # idle streams' readings, shared


def stream_reading(media: str, stream: str, qos: StreamQos) -> StreamReading:
    """The reading of one stream. A stream with no bitrate is idle (a camera off, nothing
    shared: every value empty, or a "0*0" resolution), the same for thousands of participants:
    its reading is made once and shared (fewer objects to build and for the GC to walk)."""
    if qos.bitrate:
        return _stream_reading(media, stream, qos)
    key = (
        media,
        stream,
        qos.latency,
        qos.jitter,
        qos.avg_loss,
        qos.max_loss,
        qos.resolution,
        qos.frame_rate,
    )
    reading = _IDLE.get(key)
    if reading is None:
        if len(_IDLE) >= 4_096:
            _IDLE.clear()
        reading = _IDLE[key] = _stream_reading(media, stream, qos)
    return reading


def _stream_reading(media: str, stream: str, qos: StreamQos) -> StreamReading:
    resolution = _resolution(qos.resolution)
    latency = _duration(qos.latency)
    jitter = _duration(qos.jitter)
    avg_loss = _percent(qos.avg_loss)
    return StreamReading(
        media=media,
        stream=stream,
        bitrate_bytes=_bitrate(qos.bitrate),
        latency_seconds=latency,
        jitter_seconds=jitter,
        avg_loss_ratio=avg_loss,
        max_loss_ratio=_percent(qos.max_loss),
        width_pixels=resolution[0] if resolution else None,
        height_pixels=resolution[1] if resolution else None,
        frame_rate=_frame_rate(qos.frame_rate),
        mos=audio_mos(latency, jitter, avg_loss) if media == "audio" else None,
    )


# (QosSample field, media label, stream label) in Zoom's order, as QosSample.streams() has them.
_STREAM_FIELDS: Final = tuple(
    (f"{prefix}_{suffix}", media, suffix)
    for prefix, media in MEDIA_PREFIXES.items()
    for suffix in STREAM_SUFFIXES
)


def _series_of(media: str, qos: StreamQos) -> int:
    """How many series stream_reading(media, …, qos) would export, without building it."""
    latency, jitter, loss = _duration(qos.latency), _duration(qos.jitter), _percent(qos.avg_loss)
    values = (
        _bitrate(qos.bitrate),
        latency,
        jitter,
        loss,
        _percent(qos.max_loss),
        _frame_rate(qos.frame_rate),
    )
    count = sum(1 for v in values if v is not None)
    if _resolution(qos.resolution) is not None:
        count += 2
    if media == "audio" and latency is not None and jitter is not None and loss is not None:
        count += 1
    return count


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
        value = _cpu_value(process, stat, raw)
        if value is not None:
            out.append(value)
    return tuple(out)


_CPU: dict[tuple[str, str, str | None], tuple[str, str, float] | None] = {}


def _cpu_value(process: str, stat: str, raw: str | None) -> tuple[str, str, float] | None:
    """(process, stat, ratio) of a CPU reading, shared by every participant with the same one
    (Zoom's CPU readings are whole percents: a few hundred of them)."""
    key = (process, stat, raw)
    try:
        return _CPU[key]
    except KeyError:
        if len(_CPU) >= 4_096:
            _CPU.clear()
        value = _percent(raw)
        found = _CPU[key] = (process, stat, value) if value is not None else None
        return found


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
    participant: Participant,
    privacy: ParticipantPrivacy = DEFAULT_PRIVACY,
    streams: frozenset[str] | None = None,
) -> ParticipantReading | None:
    """The exported reading of one participant, or None if it has left or has no id. Only the
    labels `privacy` allows are kept, pseudonymized if it has a key; only the `stream` values
    in `streams` (every one if None)."""
    pid = participant.participant_id
    if not pid or participant.leave_time is not None:
        return None
    sample = newest_sample(participant.user_qos)
    info = privacy.info(lambda name: getattr(participant, name))
    if sample is None:
        return ParticipantReading(pid, info, None, _epoch(participant.join_time), (), (), ())
    readings = []
    dropped = 0
    for field, media, name in _STREAM_FIELDS:
        qos = getattr(sample, field)
        if qos is None:
            continue
        if streams is None or name in streams:
            readings.append(stream_reading(media, name, qos))
        else:
            dropped += _series_of(media, qos)
    return ParticipantReading(
        participant_id=pid,
        info=info,
        sample_timestamp=_epoch(sample.date_time),
        join_timestamp=_epoch(participant.join_time),
        streams=tuple(readings),
        cpu=_cpu(sample),
        wifi_rssi=_rssi(sample),
        dropped_series=dropped,
    )


def meeting_reading(
    target: MeetingTarget,
    participants: Iterable[Participant],
    polled_at: float,
    privacy: ParticipantPrivacy = DEFAULT_PRIVACY,
    series: SeriesOptions | None = None,
) -> MeetingReading:
    """Drop participants who left; of a repeated participant id keep the newest sample. The
    host's name is personal data too: it follows `privacy` as `user_name` does. The meeting's
    quality is computed from every kept participant; `series` (default: every participant,
    every stream) picks whose series are exported and which streams are kept. A participant
    whose reading cannot be built is left out and counted in `dropped`."""
    kept: dict[str, ParticipantReading] = {}
    listed = dropped = 0
    streams = series.streams if series is not None else None
    for participant in participants:
        listed += 1
        try:
            reading = participant_reading(participant, privacy, streams)
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
    dropped_streams = sum(p.dropped_series for p in ordered)
    exported = _exported(ordered, series)
    dropped_people = 0
    if exported is not None:
        chosen = {p.participant_id for p in exported}
        dropped_people = sum(p.series() for p in ordered if p.participant_id not in chosen)
    try:
        quality = meeting_quality(ordered)
    except Exception:  # the last line of defence: the meeting's series, without aggregates
        quality, dropped = MeetingQuality(), dropped + 1
    return MeetingReading(
        target,
        ordered,
        polled_at,
        listed,
        dropped,
        quality=quality,
        exported=exported,
        dropped_participant_series=dropped_people,
        dropped_stream_series=dropped_streams,
    )


def _exported(
    ordered: tuple[ParticipantReading, ...], series: SeriesOptions | None
) -> tuple[ParticipantReading, ...] | None:
    if series is None or series.participants == "all":
        return None
    if series.participants == "none":
        return ()
    if len(ordered) <= series.worst:
        return None
    chosen = {p.participant_id for p in sorted(ordered, key=worst_first)[: series.worst]}
    return tuple(p for p in ordered if p.participant_id in chosen)


def worst_first(participant: ParticipantReading) -> tuple[float, float, float, str]:
    """Sort key, worst participant first: lowest audio MOS, then highest average loss, then
    highest jitter (over its exported streams); no value counts as best; then by id."""
    mos = [s.mos for s in participant.streams if s.mos is not None]
    loss = [s.avg_loss_ratio for s in participant.streams if s.avg_loss_ratio is not None]
    jitter = [s.jitter_seconds for s in participant.streams if s.jitter_seconds is not None]
    return (
        min(mos) if mos else math.inf,
        -max(loss) if loss else math.inf,
        -max(jitter) if jitter else math.inf,
        participant.participant_id,
    )


def quantile(q: float, ordered: Sequence[float]) -> float:
    """PromQL's quantile(): linear interpolation between the closest ranks of sorted values."""
    rank = q * (len(ordered) - 1)
    lower = math.floor(rank)
    upper = min(lower + 1, len(ordered) - 1)
    weight = rank - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _stats(values: list[float]) -> Stats | None:
    if not values:
        return None
    values.sort()
    return quantile(0.5, values), quantile(0.95, values), values[-1]


# Every (media, stream) pair in Zoom's order: the order of the aggregate series.
_PAIRS: Final = tuple(
    (media, stream) for media in MEDIA_PREFIXES.values() for stream in STREAM_SUFFIXES
)


def meeting_quality(participants: Iterable[ParticipantReading]) -> MeetingQuality:
    """Per media and stream, p50, p95 and max across participants of latency, jitter, average
    loss and bitrate (and for audio, p5 and min of the MOS); the count of participants by
    quality (exporter/metrics/quality.py)."""
    columns: dict[tuple[str, str], list[list[float]]] = {}
    counts = {"good": 0, "fair": 0, "poor": 0, "unknown": 0}
    for p in participants:
        counts[participant_quality(p)] += 1
        for s in p.streams:
            column = columns.get((s.media, s.stream))
            if column is None:
                column = columns[(s.media, s.stream)] = [[], [], [], [], []]
            for values, value in zip(
                column,
                (s.latency_seconds, s.jitter_seconds, s.avg_loss_ratio, s.bitrate_bytes, s.mos),
                strict=True,
            ):
                if value is not None:
                    values.append(value)
    aggregates = []
    for pair in _PAIRS:
        column = columns.get(pair)
        if column is None:
            continue
        latency, jitter, loss, bitrate, mos = column
        mos.sort()
        aggregates.append(
            StreamAggregate(
                pair[0],
                pair[1],
                _stats(latency),
                _stats(jitter),
                _stats(loss),
                _stats(bitrate),
                (quantile(0.05, mos), mos[0]) if mos else None,
            )
        )
    return MeetingQuality(tuple(aggregates), counts["good"], counts["fair"], counts["poor"])


def _newer(candidate: ParticipantReading, current: ParticipantReading) -> bool:
    inf = float("-inf")
    cand = candidate.sample_timestamp if candidate.sample_timestamp is not None else inf
    cur = current.sample_timestamp if current.sample_timestamp is not None else inf
    return cand >= cur
