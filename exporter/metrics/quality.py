"""How good a stream, a media or a participant is: one rule for the status page and for
`zoom_meeting_participants_by_quality`. Pure; nothing here does I/O.

The numbers follow Zoom's guidance, the same as deploy/prometheus/zoom.rules.yml and the
Grafana dashboards: latency above 150 ms, jitter above 40 ms or average packet loss above 2 %
is poor; above 120 ms, 30 ms or 1.5 % (close to the limit) is fair. Audio is also judged by
its estimated MOS (exporter/metrics/mos.py): below 3.6 (R < 70, "many users dissatisfied")
is poor, below 4.0 (R < 80, "some users dissatisfied") is fair. Bitrate decides nothing: an
audio stream's bitrate says more about the codec and a muted microphone than about quality,
and Zoom's bitrate bands are for video.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from exporter.metrics.snapshot import ParticipantReading, StreamReading

Quality = Literal["good", "fair", "poor", "unknown"]
RANK: Final[dict[Quality, int]] = {"unknown": 0, "good": 1, "fair": 2, "poor": 3}
QUALITIES: Final[tuple[Quality, ...]] = ("good", "fair", "poor")  # as exported


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Above `fair` a value is fair, above `poor` it is poor (Zoom's guidance); with
    `higher_is_better`, below instead of above (the MOS)."""

    fair: float
    poor: float
    higher_is_better: bool = False

    def judge(self, value: float | None) -> Quality:
        if value is None:
            return "unknown"
        if self.higher_is_better:
            return "poor" if value < self.poor else "fair" if value < self.fair else "good"
        if value > self.poor:
            return "poor"
        if value > self.fair:
            return "fair"
        return "good"


LATENCY: Final = Thresholds(fair=0.120, poor=0.150)  # seconds
JITTER: Final = Thresholds(fair=0.030, poor=0.040)  # seconds
LOSS: Final = Thresholds(fair=0.015, poor=0.02)  # ratio of the sample's average loss
MOS: Final = Thresholds(fair=4.0, poor=3.6, higher_is_better=True)  # audio only


def worst(qualities: Iterable[Quality]) -> Quality:
    return max(qualities, key=RANK.__getitem__, default="unknown")


def media_quality(streams: Iterable[StreamReading]) -> Quality:
    """Worst of latency, jitter, average loss and (audio) MOS over the given streams (one pass:
    it runs for every participant of every cycle)."""
    latency = jitter = loss = mos = None
    for s in streams:
        value = s.latency_seconds
        if value is not None and (latency is None or value > latency):
            latency = value
        value = s.jitter_seconds
        if value is not None and (jitter is None or value > jitter):
            jitter = value
        value = s.avg_loss_ratio
        if value is not None and (loss is None or value > loss):
            loss = value
        value = s.mos
        if value is not None and (mos is None or value < mos):
            mos = value
    return worst((LATENCY.judge(latency), JITTER.judge(jitter), LOSS.judge(loss), MOS.judge(mos)))


def participant_quality(participant: ParticipantReading) -> Quality:
    """Worst quality over every stream of the participant; unknown without QoS values."""
    return media_quality(participant.streams)
