"""Pydantic models of the Zoom Dashboard API responses this exporter reads.

Zoom adds fields over time and leaves many out, so every model ignores unknown fields, every
field is optional, and a value of the wrong type becomes None instead of failing the response.

Whatever Zoom sends, what enters a model is safe to export: every string is valid UTF-8 (a
lone surrogate becomes U+FFFD) and at most `MAX_TEXT` characters (the rest is cut, and counted
in the validation context's "cut" entry when one is given); every number is finite; every
timestamp lies between 2000 and 2100. Validation never raises for a field's value.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from exporter.zoom.units import memo

Kind = Literal["meeting", "webinar"]
KINDS: Final[tuple[Kind, ...]] = ("meeting", "webinar")

MAX_TEXT: Final = 256  # characters kept of a string from Zoom: label values are capped here
_TIMESTAMP_RANGE: Final = (946_684_800.0, 4_102_444_800.0)  # 2000-01-01 to 2100-01-01 UTC


def valid_utf8(text: str) -> str:
    """`text` with every lone surrogate (which UTF-8 cannot encode) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def safe_text(text: str, limit: int = MAX_TEXT) -> tuple[str, bool]:
    """Valid UTF-8 of at most `limit` characters, and whether it was cut."""
    if len(text) > limit:
        return valid_utf8(text[:limit]), True
    return valid_utf8(text), False


def _cut(info: ValidationInfo | None) -> None:
    context = info.context if info is not None else None
    if isinstance(context, dict):
        context["cut"] = context.get("cut", 0) + 1


def _string(value: str, info: ValidationInfo | None) -> str:
    text, cut = safe_text(value)
    if cut:
        _cut(info)
    return text


def _text(value: Any, info: ValidationInfo) -> str | None:
    """Zoom's QoS values are strings; numbers are accepted and anything else is no value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) <= MAX_TEXT and value.isascii():  # the usual case: nothing to cut or fix
            return value
        return _string(value, info)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float):
        try:
            return _string(str(value), info)
        except ValueError:  # an int of more digits than Python converts
            return None
    return None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, str):  # minute-aligned sample times repeat across participants
        return _timestamp_of_string(value)
    return _parse_timestamp(value)


def _parse_timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        epoch = parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    low, high = _TIMESTAMP_RANGE
    return parsed if low <= epoch <= high else None


_timestamp_of_string = memo(_parse_timestamp, 4_096)


def _list_or_empty(value: Any) -> Any:
    return value if isinstance(value, list) else []


def _number_or_text(value: Any, info: ValidationInfo) -> int | float | str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value if abs(value) < 10**15 else None
    if isinstance(value, str):
        return _string(value, info)
    return None


Text = Annotated[str | None, BeforeValidator(_text)]
Timestamp = Annotated[datetime | None, BeforeValidator(_timestamp)]
Reading = Annotated[int | float | str | None, BeforeValidator(_number_or_text)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StreamQos(_Lenient):
    """One media stream's five-second QoS summary.

    Its fields are cleaned as `Text` is, by one validator for the whole stream rather than one
    per field: a sample has up to 18 streams, and each Python validator call counts.
    """

    bitrate: str | None = None
    latency: str | None = None
    jitter: str | None = None
    avg_loss: str | None = None
    max_loss: str | None = None
    resolution: str | None = None
    frame_rate: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        cleaned = {}
        for name in _STREAM_VALUES:
            value = data.get(name)
            if value is not None and not (
                value.__class__ is str and len(value) <= MAX_TEXT and value.isascii()
            ):
                value = _text(value, info)  # the usual strings need no call
            cleaned[name] = value
        return cleaned


_STREAM_VALUES: Final = tuple(StreamQos.model_fields)


class CpuUsage(_Lenient):
    zoom_min_cpu_usage: Text = None
    zoom_avg_cpu_usage: Text = None
    zoom_max_cpu_usage: Text = None
    system_max_cpu_usage: Text = None


class WifiRssi(_Lenient):
    max_rssi: Reading = None
    avg_rssi: Reading = None
    min_rssi: Reading = None
    rssi_unit: Text = None


# Zoom's stream field prefixes and suffixes, mapped to the exporter's `media` and `stream` labels.
MEDIA_PREFIXES: dict[str, str] = {"audio": "audio", "video": "video", "as": "screen_share"}
STREAM_SUFFIXES: tuple[str, ...] = (
    "input",
    "output",
    "device_from_crc",
    "device_to_crc",
    "device_from_rwg",
    "device_to_rwg",
)


class QosSample(_Lenient):
    """One timed entry of a participant's `user_qos` list. A stream (or `cpu_usage`,
    `wifi_rssi`) that is not an object is no value: one validator sees to all of them."""

    date_time: Timestamp = None
    audio_input: StreamQos | None = None
    audio_output: StreamQos | None = None
    audio_device_from_crc: StreamQos | None = None
    audio_device_to_crc: StreamQos | None = None
    audio_device_from_rwg: StreamQos | None = None
    audio_device_to_rwg: StreamQos | None = None
    video_input: StreamQos | None = None
    video_output: StreamQos | None = None
    video_device_from_crc: StreamQos | None = None
    video_device_to_crc: StreamQos | None = None
    video_device_from_rwg: StreamQos | None = None
    video_device_to_rwg: StreamQos | None = None
    as_input: StreamQos | None = None
    as_output: StreamQos | None = None
    as_device_from_crc: StreamQos | None = None
    as_device_to_crc: StreamQos | None = None
    as_device_from_rwg: StreamQos | None = None
    as_device_to_rwg: StreamQos | None = None
    cpu_usage: CpuUsage | None = None
    wifi_rssi: WifiRssi | None = None

    @model_validator(mode="before")
    @classmethod
    def _objects_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        cleaned = data
        for name, model in _SAMPLE_OBJECTS.items():
            value = data.get(name)
            if value is not None and not isinstance(value, dict | model):
                if cleaned is data:
                    cleaned = dict(data)  # the caller's answer stays as it was
                cleaned[name] = None
        return cleaned

    def streams(self) -> list[tuple[str, str, StreamQos]]:
        """The present streams as (media, stream, values) label pairs."""
        found = []
        for prefix, media in MEDIA_PREFIXES.items():
            for suffix in STREAM_SUFFIXES:
                value = getattr(self, f"{prefix}_{suffix}")
                if value is not None:
                    found.append((media, suffix, value))
        return found


_SAMPLE_OBJECTS: Final[dict[str, type[_Lenient]]] = {
    name: StreamQos
    for name in QosSample.model_fields
    if name not in ("date_time", "cpu_usage", "wifi_rssi")
} | {"cpu_usage": CpuUsage, "wifi_rssi": WifiRssi}


def _samples(value: Any) -> list[Any]:
    """Only the newest entry of `user_qos` (by `date_time`; undated ones count as oldest, the
    later of equals wins): the one exported. Validating the others cost four times as much."""
    newest: Any = None
    newest_at: datetime | None = None
    for item in _list_or_empty(value):
        if isinstance(item, QosSample):
            at = item.date_time
        elif isinstance(item, dict):
            at = _timestamp(item.get("date_time"))
        else:
            continue
        if newest is None or (at is not None and (newest_at is None or at >= newest_at)):
            newest, newest_at = item, at
        elif at is None and newest_at is None:
            newest = item
    return [] if newest is None else [newest]


class Participant(_Lenient):
    """A participant with QoS, from the list or the single-participant endpoint."""

    id: Text = None
    user_id: Text = None
    user_name: Text = None
    email: Text = None
    device: Text = None
    ip_address: Text = None
    location: Text = None
    network_type: Text = None
    data_center: Text = None
    join_time: Timestamp = None
    leave_time: Timestamp = None
    pc_name: Text = None
    domain: Text = None
    mac_addr: Text = None
    harddisk_id: Text = None
    version: Text = None
    user_qos: Annotated[list[QosSample], BeforeValidator(_samples)] = Field(default_factory=list)

    @property
    def participant_id(self) -> str | None:
        """The id that the single-participant endpoint takes: `user_id`, else `id`."""
        return self.user_id or self.id


class LiveMeeting(_Lenient):
    """An entry of `/metrics/meetings` or `/metrics/webinars` (discovery)."""

    uuid: Text = None
    id: Text = None
    topic: Text = None
    host: Text = None
    start_time: Timestamp = None
    participants: Reading = None
