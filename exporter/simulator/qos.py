"""Deterministic QoS sample values: smooth, seeded drift keyed on the sample's minute."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Final

from exporter.simulator.timefmt import iso

JsonDict = dict[str, Any]

_FIELDS: Final = (
    "bitrate", "latency", "jitter", "avg_loss", "max_loss", "resolution", "frame_rate"
)  # fmt: skip


def _values(*values: str) -> dict[str, str]:
    return dict(zip(_FIELDS[: len(values)], values, strict=True))


# The newest sample of the seed participant, verbatim from the API page 002.
SEED_SAMPLE: Final[JsonDict] = {
    "audio_input": _values("23 kbps", "126 ms", "6 ms", "0.3%", "1.9%"),
    "audio_output": _values("63 kbps", "134 ms", "6 ms", "0.0%", "0.0%"),
    "video_input": _values("1055 kbps", "129 ms", "11 ms", "0.0%", "4.9%", "1280*720", "12 fps"),
    "video_output": _values("673 kbps", "135 ms", "11 ms", "0.0%", "0.0%", "640*360", "22 fps"),
    "as_input": _values("70 kbps", "135 ms", "8 ms", "0.0%", "0.0%", "0*0", ""),
    "as_output": _values("70 kbps", "135 ms", "8 ms", "0.0%", "0.0%", "0*0", ""),
    "cpu_usage": {
        "zoom_min_cpu_usage": "8%",
        "zoom_avg_cpu_usage": "12%",
        "zoom_max_cpu_usage": "18%",
        "system_max_cpu_usage": "40%",
    },
}

# Ranges (low, high) of a "good" and a "poor" connection. Poor is beyond every threshold:
# avg loss > 2 %, jitter > 40 ms, latency > 150 ms, audio < 72 kbps, video < 128 kbps.
_GOOD: Final = {
    "audio_kbps": (75.0, 110.0),
    "video_kbps": (450.0, 1900.0),
    "latency": (25.0, 140.0),
    "jitter": (2.0, 28.0),
    "loss": (0.0, 1.2),
}
_POOR: Final = {
    "audio_kbps": (18.0, 60.0),
    "video_kbps": (40.0, 118.0),
    "latency": (165.0, 320.0),
    "jitter": (46.0, 95.0),
    "loss": (2.6, 7.5),
}
POOR_LOSS_PERCENT: Final = 2.0
POOR_JITTER_MS: Final = 40.0
POOR_LATENCY_MS: Final = 150.0


def unit_hash(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the given key parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def drift(key: str, metric: str, minute: int, low: float, high: float) -> float:
    """A value in [low, high] that wanders smoothly from minute to minute."""
    period = 9.0 + 20.0 * unit_hash(key, metric, "period")
    phase = 2 * math.pi * unit_hash(key, metric, "phase")
    wave = 0.5 + 0.35 * math.sin(2 * math.pi * minute / period + phase)
    noise = 0.15 * (unit_hash(key, metric, minute) - 0.5) * 2
    return low + (high - low) * min(1.0, max(0.0, wave + noise))


@dataclass(frozen=True)
class MediaProfile:
    """What a participant sends and receives; decides which streams carry values."""

    key: str
    poor: bool = False
    video_on: bool = True
    sharing: bool = False
    viewing_share: bool = False
    gateway: str = ""  # "crc" (room systems), "rwg" (web client) or ""
    wifi: bool = False
    has_cpu: bool = True


def _stream(p: MediaProfile, name: str, minute: int, media: str) -> JsonDict:
    ranges = _POOR if p.poor else _GOOD
    rate_key = "audio_kbps" if media == "audio" else "video_kbps"
    key = f"{p.key}:{name}"
    loss = drift(key, "loss", minute, *ranges["loss"])
    peak = loss + drift(key, "peak", minute, 0.0, 3.0 if p.poor else 2.5)
    values: JsonDict = {
        "bitrate": f"{round(drift(key, 'bitrate', minute, *ranges[rate_key]))} kbps",
        "latency": f"{round(drift(key, 'latency', minute, *ranges['latency']))} ms",
        "jitter": f"{round(drift(key, 'jitter', minute, *ranges['jitter']))} ms",
        "avg_loss": f"{loss:.1f}%",
        "max_loss": f"{peak:.1f}%",
    }
    if media == "video":
        fps = (8.0, 14.0) if p.poor else (20.0, 30.0)
        values["resolution"] = "640*360" if p.poor or name.endswith("output") else "1280*720"
        values["frame_rate"] = f"{round(drift(key, 'fps', minute, *fps))} fps"
    elif media == "as":
        values["resolution"] = "1920*1080"
        values["frame_rate"] = ""
    return values


def _idle(media: str) -> JsonDict:
    values: JsonDict = dict.fromkeys(("bitrate", "latency", "jitter", "avg_loss", "max_loss"), "")
    if media == "video":
        values.update(resolution="", frame_rate="")
    elif media == "as":
        values.update(resolution="0*0", frame_rate="")
    return values


def _in_use(p: MediaProfile, media: str, direction: str) -> bool:
    if media == "audio":
        return True
    if media == "video":
        return p.video_on or direction == "output"
    return p.sharing if direction == "input" else p.viewing_share


def _cpu(p: MediaProfile, minute: int) -> JsonDict:
    if not p.has_cpu:
        keys = ("zoom_min_cpu_usage", "zoom_avg_cpu_usage", "zoom_max_cpu_usage")
        return {**dict.fromkeys(keys, ""), "system_max_cpu_usage": ""}
    avg = drift(p.key, "cpu", minute, 6.0, 35.0)
    return {
        "zoom_min_cpu_usage": f"{round(avg * 0.6)}%",
        "zoom_avg_cpu_usage": f"{round(avg)}%",
        "zoom_max_cpu_usage": f"{round(avg * 1.5)}%",
        "system_max_cpu_usage": f"{round(min(100.0, avg * 1.5 + 20))}%",
    }


def _wifi(p: MediaProfile, minute: int) -> JsonDict:
    avg = round(drift(p.key, "rssi", minute, -78.0, -42.0))
    return {"max_rssi": avg + 6, "avg_rssi": avg, "min_rssi": avg - 9, "rssi_unit": "dBm"}


def sample(p: MediaProfile, minute: int) -> JsonDict:
    """One `user_qos` entry for the minute `minute` (epoch seconds // 60)."""
    entry: JsonDict = {"date_time": iso(minute * 60)}
    for media in ("audio", "video", "as"):
        for direction in ("input", "output"):
            name = f"{media}_{direction}"
            used = _in_use(p, media, direction)
            entry[name] = _stream(p, name, minute, media) if used else _idle(media)
        if p.gateway:
            for hop in ("from", "to"):
                name = f"{media}_device_{hop}_{p.gateway}"
                used = _in_use(p, media, "input" if hop == "from" else "output")
                entry[name] = _stream(p, name, minute, media) if used else _idle(media)
    entry["cpu_usage"] = _cpu(p, minute)
    if p.wifi:
        entry["wifi_rssi"] = _wifi(p, minute)
    return entry


def seed_sample(minute: int) -> JsonDict:
    """The seed participant's sample: page 002's values, whatever the minute."""
    return {"date_time": iso(minute * 60), **{k: dict(v) for k, v in SEED_SAMPLE.items()}}


def _number(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    head = text.strip().split(" ")[0].rstrip("%")
    try:
        return float(head)
    except ValueError:
        return None


def is_poor_sample(entry: JsonDict) -> bool:
    """True when the sample's audio input breaks the loss, jitter and latency thresholds."""
    audio = entry.get("audio_input") or {}
    loss = _number(audio.get("avg_loss"))
    jitter = _number(audio.get("jitter"))
    latency = _number(audio.get("latency"))
    if loss is None or jitter is None or latency is None:
        return False
    return loss > POOR_LOSS_PERCENT and jitter > POOR_JITTER_MS and latency > POOR_LATENCY_MS
