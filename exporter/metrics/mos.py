"""An estimated MOS (mean opinion score, 1 to 4.5) of an audio stream from its latency, jitter
and packet loss: the ITU-T G.107 E-model in the simplified form common in VoIP monitoring.

    effective latency  Le = latency + 2 x jitter + 10 ms      (the jitter buffer and codec delay)
    delay impairment   Id = Le / 40               if Le < 160 ms
                       Id = (Le - 120) / 10       otherwise
    loss impairment    Ie,eff = Ie + 2.5 x loss in percent, with Ie = 0
    rating             R = 93.2 - Id - Ie,eff, held to 0..100
    MOS                = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R)   (G.107 Annex B)

Assumptions, since Zoom reports neither codec nor buffer:
- codec impairment Ie = 0 (G.711-like; Zoom's wideband codec with loss concealment is at least
  that good), so the ceiling is R = 92.95, MOS 4.40, when everything is perfect;
- the jitter buffer is twice the measured jitter (the "2 x jitter" term), plus 10 ms of codec
  delay; the latency Zoom reports is used as the one-way delay;
- loss is random (no bursts) and costs 2.5 R per percent of the sample's average loss.

References: ITU-T G.107 (06/2015) section 7 and Annex B (R to MOS); the simplified delay and
loss terms as in Cole and Rosenbluth, "Voice over IP performance monitoring", ACM SIGCOMM CCR
31(2), 2001. Pure functions; nothing here does I/O.
"""

from __future__ import annotations

from typing import Final

R_MAX_NETWORK: Final = 93.2  # R with no delay and no loss (G.107 default R0 - Is)
MOS_MIN: Final = 1.0
MOS_MAX: Final = 4.5


def r_factor(latency_seconds: float, jitter_seconds: float, loss_ratio: float) -> float:
    """The transmission rating R (0 to 100) of a stream."""
    effective_ms = (latency_seconds + 2 * jitter_seconds) * 1000 + 10
    delay = effective_ms / 40 if effective_ms < 160 else (effective_ms - 120) / 10
    loss = 2.5 * loss_ratio * 100
    return min(100.0, max(0.0, R_MAX_NETWORK - delay - loss))


def mos_from_r(r: float) -> float:
    """G.107 Annex B: the MOS (1 to 4.5) that a rating R predicts."""
    if r <= 0:
        return MOS_MIN
    if r >= 100:
        return MOS_MAX
    # The cubic dips just below 1 for R < 6.5; held at 1 so that the MOS never rises with loss.
    return max(MOS_MIN, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))


def audio_mos(
    latency_seconds: float | None, jitter_seconds: float | None, loss_ratio: float | None
) -> float | None:
    """The estimated MOS of an audio stream; None unless Zoom gave all three values."""
    if latency_seconds is None or jitter_seconds is None or loss_ratio is None:
        return None
    return mos_from_r(r_factor(latency_seconds, jitter_seconds, loss_ratio))
