"""Which participant series /metrics shows: ZOOM_EXPORTER_PARTICIPANT_SERIES and
ZOOM_EXPORTER_STREAMS, read by the settings and applied while the snapshot is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

ParticipantSeries = Literal["all", "worst", "none"]
DEFAULT_STREAMS: Final = frozenset({"input", "output"})


@dataclass(frozen=True, slots=True)
class SeriesOptions:
    """Which participant series /metrics shows (ZOOM_EXPORTER_PARTICIPANT_SERIES and
    ZOOM_EXPORTER_STREAMS); the meeting-level series are always there."""

    participants: ParticipantSeries = "all"
    worst: int = 0  # with participants="worst": how many per meeting
    streams: frozenset[str] = DEFAULT_STREAMS

    @staticmethod
    def parse_participants(text: str) -> tuple[ParticipantSeries, int]:
        """ "all", "none" or "worst:N" (N >= 1) -> (mode, N); ValueError otherwise."""
        value = text.strip().lower()
        if value in ("all", "none"):
            return ("all" if value == "all" else "none"), 0
        mode, sep, count = value.partition(":")
        if mode == "worst" and sep and count.isdigit() and 0 < int(count) <= 1_000_000:
            return "worst", int(count)
        raise ValueError("must be all, none or worst:N with N a whole number from 1")
