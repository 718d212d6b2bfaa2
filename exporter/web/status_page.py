"""The landing page: live meetings and their participants, colour-coded, as plain HTML + CSS.

It is for people who have no Grafana yet. No JavaScript: the page reloads itself with a
`<meta http-equiv="refresh">`. Rendering is pure (no I/O, no clock): everything comes from
the snapshot, and every string that Zoom provides is HTML-escaped.

Quality is judged by exporter/metrics/quality.py, the rule behind
`zoom_meeting_participants_by_quality` too: latency, jitter and average packet loss for every
media, and the estimated MOS for audio. Video and screen-share bitrate is shown in the bands of
Zoom's network indicator (they are for video); audio bitrate is shown plain. Bitrate never
decides a participant's quality (a muted microphone sends little).

A meeting shows its worst MAX_ROWS participants (the webinar of 10,000 would be a page nobody
reads, and costly to build); the counts above the table cover everyone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from exporter import __version__
from exporter.metrics.quality import (
    JITTER,
    LATENCY,
    LOSS,
    MOS,
    Quality,
    Thresholds,
    media_quality,
    participant_quality,
)
from exporter.metrics.quality import RANK as _RANK
from exporter.metrics.snapshot import MeetingReading, ParticipantReading, Snapshot, StreamReading
from exporter.polling.health import Health

__all__ = [
    "JITTER",
    "LATENCY",
    "LOSS",
    "MOS",
    "Quality",
    "Thresholds",
    "bitrate_band",
    "media_quality",
    "participant_quality",
    "render",
    "render_accounts",
]

REFRESH_SECONDS: Final = 30
MAX_ROWS: Final = 100  # participants shown per meeting, worst first


# Zoom's network-indicator bands. The exporter stores bitrate in bytes per second:
# 72 kbps = 72_000 / 8 = 9_000 B/s. (upper bound in B/s, band name, quality)
BITRATE_BANDS: Final[tuple[tuple[float, str, Quality], ...]] = (
    (9_000.0, "very bad", "poor"),  # < 72 kbps
    (16_000.0, "bad", "fair"),  # < 128 kbps
    (22_500.0, "not good", "fair"),  # < 180 kbps
    (40_000.0, "normal", "good"),  # < 320 kbps
    (80_000.0, "good", "good"),  # < 640 kbps
    (float("inf"), "excellent", "good"),  # >= 640 kbps
)

MEDIA: Final = (("audio", "Audio"), ("video", "Video"), ("screen_share", "Screen share"))
KIND_TITLES: Final = {"meeting": "Meeting", "webinar": "Webinar"}

CSS: Final = """
:root { font-family: system-ui, sans-serif; color: #1f2328; background: #f6f8fa; }
body { margin: 0 auto; max-width: 84rem; padding: 1rem 1.5rem 3rem; }
h1 { margin-bottom: .25rem; }
nav a { margin-right: 1rem; }
.summary { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; padding: 0; }
.summary li { list-style: none; background: #fff; border: 1px solid #d0d7de;
  border-radius: 6px; padding: .5rem .9rem; }
.summary b { display: block; font-size: 1.4rem; }
section.meeting { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
  margin: 1.25rem 0; padding: .25rem 1rem 1rem; }
section.meeting h2 { font-size: 1.15rem; margin: .75rem 0 .25rem; }
.meta { color: #57606a; font-size: .9rem; margin: 0 0 .5rem; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; }
th, td { border-bottom: 1px solid #eaeef2; padding: .3rem .45rem; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; }
.q { border-radius: 4px; padding: 0 .3rem; white-space: nowrap; }
.q-good { background: #dafbe1; color: #116329; }
.q-fair { background: #fff1c2; color: #7d4e00; }
.q-poor { background: #ffd8d3; color: #a40e26; font-weight: 600; }
.q-unknown { background: #eaeef2; color: #57606a; }
.q-plain { background: #f6f8fa; color: #1f2328; }
td.media span { display: inline-block; margin: 0 .15rem .15rem 0; }
.badge { display: inline-block; min-width: 3rem; text-align: center; font-weight: 600; }
.state-up { color: #116329; } .state-down { color: #a40e26; }
.errors { background: #fff1c2; border: 1px solid #d4a72c; border-radius: 6px;
  padding: .5rem 1rem; }
.legend { font-size: .85rem; color: #57606a; }
"""


def bitrate_band(bytes_per_second: float | None) -> tuple[str, Quality]:
    """Zoom's network-indicator band of a bitrate given in bytes per second."""
    if bytes_per_second is None:
        return "", "unknown"
    for upper, name, quality in BITRATE_BANDS:
        if bytes_per_second < upper:
            return name, quality
    return BITRATE_BANDS[-1][1], BITRATE_BANDS[-1][2]  # pragma: no cover (inf bound)


def _values(
    streams: Iterable[StreamReading], read: Callable[[StreamReading], float | None]
) -> list[float]:
    return [v for v in (read(s) for s in streams) if v is not None]


def _max(values: list[float]) -> float | None:
    return max(values) if values else None


def _info(participant: ParticipantReading) -> dict[str, str]:
    return dict(participant.info)


def _span(quality: Quality, text: str, title: str = "") -> str:
    title_attr = f' title="{escape(title)}"' if title else ""
    return f'<span class="q q-{quality}"{title_attr}>{escape(text)}</span>'


def _span_plain(text: str, title: str) -> str:
    """A value shown without a judgement."""
    return f'<span class="q q-plain" title="{escape(title)}">{escape(text)}</span>'


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.1f} %"


def _kbps(bytes_per_second: float) -> str:
    return f"{bytes_per_second * 8 / 1000:.0f} kbps"


def _stream_title(stream: StreamReading) -> str:
    parts = []
    if stream.latency_seconds is not None:
        parts.append(f"latency {_ms(stream.latency_seconds)}")
    if stream.jitter_seconds is not None:
        parts.append(f"jitter {_ms(stream.jitter_seconds)}")
    if stream.avg_loss_ratio is not None:
        parts.append(f"loss {_percent(stream.avg_loss_ratio)}")
    if stream.mos is not None:
        parts.append(f"MOS {stream.mos:.2f}")
    if stream.bitrate_bytes is not None:
        parts.append(_kbps(stream.bitrate_bytes))
    if stream.width_pixels and stream.height_pixels:
        parts.append(f"{stream.width_pixels}x{stream.height_pixels}")
    return f"{stream.stream}: " + ", ".join(parts)


def _has_values(stream: StreamReading) -> bool:
    return any(
        v is not None
        for v in (
            stream.latency_seconds,
            stream.jitter_seconds,
            stream.avg_loss_ratio,
            stream.bitrate_bytes,
        )
    )


def _media_cell(streams: list[StreamReading]) -> str:
    """Worst latency, jitter, loss and lowest bitrate of one media's streams."""
    if not any(_has_values(s) for s in streams):
        return '<td class="media" data-quality="unknown">&ndash;</td>'
    title = "; ".join(_stream_title(s) for s in streams)
    spans = []
    latency = _max(_values(streams, lambda s: s.latency_seconds))
    if latency is not None:
        spans.append(_span(LATENCY.judge(latency), _ms(latency), "worst latency"))
    jitter = _max(_values(streams, lambda s: s.jitter_seconds))
    if jitter is not None:
        spans.append(_span(JITTER.judge(jitter), "±" + _ms(jitter), "worst jitter"))
    loss = _max(_values(streams, lambda s: s.avg_loss_ratio))
    if loss is not None:
        spans.append(_span(LOSS.judge(loss), _percent(loss) + " loss", "worst average loss"))
    mos = _values(streams, lambda s: s.mos)
    if mos:
        spans.append(_span(MOS.judge(min(mos)), f"MOS {min(mos):.1f}", "lowest estimated MOS"))
    rates = _values(streams, lambda s: s.bitrate_bytes)
    if rates:
        if any(s.media == "audio" for s in streams):  # the bands are for video
            spans.append(_span_plain(_kbps(min(rates)), "lowest bitrate"))
        else:
            band, quality = bitrate_band(min(rates))
            spans.append(_span(quality, _kbps(min(rates)), f"lowest bitrate: {band}"))
    quality = media_quality(streams)
    return (
        f'<td class="media" data-quality="{quality}" title="{escape(title)}">'
        + "".join(spans)
        + "</td>"
    )


def _device_cell(participant: ParticipantReading) -> str:
    info = _info(participant)
    parts = [info.get(k, "") for k in ("device", "network_type", "location")]
    text = " · ".join(escape(p) for p in parts if p)
    rssi = dict(participant.wifi_rssi).get("avg")
    if rssi is not None:
        text += f" · Wi-Fi {rssi:.0f} dBm"
    cpu = {(process, stat): v for process, stat, v in participant.cpu}
    if ("zoom", "avg") in cpu:
        text += f" · CPU {cpu['zoom', 'avg'] * 100:.0f} %"
    return f"<td>{text or '&ndash;'}</td>"


def _participant_row(participant: ParticipantReading) -> str:
    info = _info(participant)
    name = info.get("user_name") or participant.participant_id
    quality = participant_quality(participant)
    cells = [
        f'<td class="name">{escape(name)}</td>',
        f'<td><span class="q badge q-{quality}">{quality}</span></td>',
    ]
    for media, _title in MEDIA:
        cells.append(_media_cell([s for s in participant.streams if s.media == media]))
    cells.append(_device_cell(participant))
    return (
        f'<tr class="participant" data-participant-id="{escape(participant.participant_id)}"'
        f' data-quality="{quality}">' + "".join(cells) + "</tr>"
    )


def _sort_key(participant: ParticipantReading) -> tuple[int, str]:
    name = _info(participant).get("user_name") or participant.participant_id
    return (-_RANK[participant_quality(participant)], name.casefold())


def _meeting_section(meeting: MeetingReading) -> str:
    target = meeting.target
    counts = dict.fromkeys(("poor", "fair", "good", "unknown"), 0)
    for participant in meeting.participants:
        counts[participant_quality(participant)] += 1
    kind = escape(KIND_TITLES.get(target.kind, target.kind))
    topic = target.topic or "(no topic)"
    header = "".join(
        (
            "<th>Participant</th><th>Quality</th>",
            "".join(f"<th>{title}</th>" for _media, title in MEDIA),
            "<th>Device · network</th>",
        )
    )
    ordered = sorted(meeting.participants, key=_sort_key)
    rows = "".join(_participant_row(p) for p in ordered[:MAX_ROWS])
    if not rows:
        rows = f'<tr><td colspan="{len(MEDIA) + 3}">No participants with QoS data.</td></tr>'
    elif len(ordered) > MAX_ROWS:
        rows += (
            f'<tr class="more"><td colspan="{len(MEDIA) + 3}">and {len(ordered) - MAX_ROWS:,} '
            "more in better or equal condition (see the Grafana dashboards)</td></tr>"
        )
    host = f" · host {escape(target.host)}" if target.host else ""
    tally = " ".join(_span(q, f"{counts[q]} {q}") for q in ("poor", "fair", "good"))
    return (
        f'<section class="meeting" data-kind="{escape(target.kind)}"'
        f' data-meeting-id="{escape(target.meeting_id)}">'
        f'<h2>{kind}: <span class="topic">{escape(topic)}</span></h2>'
        f'<p class="meta">ID {escape(target.meeting_id)}{host} · '
        f'<span class="count">{len(meeting.participants)}</span> participants: '
        f"{tally} · polled {_when(meeting.polled_at)}</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# What each zoom_exporter_state means, for people.
STATE_TEXT = {
    "degraded": "Some meetings could not be polled",
    "unreachable": "Every call to the Zoom API failed",
    "auth_failed": "Zoom refused the credentials",
    "forbidden": "Zoom refused the calls for want of permission (a scope, or the Dashboard "
    "feature); see the errors below",
    "token_unavailable": "Zoom's OAuth token endpoint is not answering",
    "daily_limit": "Zoom's daily request limit for the account is reached; showing the last data",
    "budget_exhausted": "This exporter's daily request budget is spent; showing the last data",
}


def _summary(snapshot: Snapshot, health: Health) -> str:
    participants = [p for m in snapshot.meetings for p in m.participants]
    meetings = sum(1 for m in snapshot.meetings if m.target.kind == "meeting")
    webinars = sum(1 for m in snapshot.meetings if m.target.kind == "webinar")
    poor = sum(1 for p in participants if participant_quality(p) == "poor")
    state = "up" if health.up else "down"
    reason = STATE_TEXT.get(health.state or "", "")
    title = f' title="{escape(reason)}"' if reason else ""
    items = [
        ("Zoom API", f'<span class="state-{state}"{title}>{state}</span>'),
        ("Meetings", str(meetings)),
        ("Webinars", str(webinars)),
        ("Participants", str(len(participants))),
        ("In poor condition", str(poor)),
    ]
    if health.budget is not None:
        budget = health.budget
        items.append(("API budget left today", f"{budget.remaining:,} of {budget.budget:,}"))
    if health.poll_interval_seconds is not None:
        items.append(("Polled every", f"{health.poll_interval_seconds:.0f} s"))
    return (
        '<ul class="summary">'
        + "".join(f"<li>{label}<b>{value}</b></li>" for label, value in items)
        + "</ul>"
    )


def _legend() -> str:
    return (
        '<p class="legend">Quality per Zoom\'s guidance: '
        f"{_span('good', 'good')} latency ≤ 120 ms, jitter ≤ 30 ms, loss ≤ 1.5 %; "
        f"{_span('fair', 'fair')} up to 150 ms, 40 ms, 2 %; "
        f"{_span('poor', 'poor')} beyond. Audio is also judged by its estimated MOS "
        "(ITU-T G.107 E-model from latency, jitter and loss): good from 4.0, fair from 3.6, "
        "poor below. A participant's quality is its worst stream. Bitrate decides nothing: "
        "audio bitrate is shown plain; video and screen-share bitrate in Zoom's network-"
        "indicator bands (&lt; 72 kbps very bad, &lt; 128 bad, &lt; 180 not good, &lt; 320 "
        "normal, &lt; 640 good). Hover a cell for every stream.</p>"
    )


def _account_body(snapshot: Snapshot, health: Health, legend: str) -> str:
    """One account's summary, errors and meetings."""
    if health.complete_cycles == 0 and not snapshot.meetings:
        body = "<p>Waiting for the first poll cycle to finish…</p>"
    elif not snapshot.meetings:
        body = "<p>No live meetings or webinars.</p>"
    else:
        ordered = sorted(
            snapshot.meetings,
            key=lambda m: (m.target.kind, m.target.topic.casefold(), m.target.meeting_id),
        )
        body = "".join(_meeting_section(m) for m in ordered)
    errors = ""
    reason = STATE_TEXT.get(health.state or "", "")
    if reason and not health.up:
        until = ""
        if health.paused_until is not None:
            until = f" Calls resume at {_when(health.paused_until)}."
        errors = f'<div class="errors"><b>{escape(reason)}.</b>{until}</div>'
    if health.errors:
        items = "".join(f"<li>{escape(e)}</li>" for e in health.errors)
        errors += f'<div class="errors"><b>Last cycle errors</b><ul>{items}</ul></div>'
    return f"{_summary(snapshot, health)}{errors}{legend}{body}"


def _page(telemetry_path: str, meta: str, main: str) -> str:
    path = escape(telemetry_path)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Zoom QoS Exporter</title><style>{CSS}</style></head><body>"
        "<header><h1>Zoom QoS Exporter</h1>"
        f'<nav><a href="{path}">Metrics</a><a href="/-/healthy">Health</a>'
        '<a href="/-/ready">Readiness</a></nav>'
        f'<p class="meta">Version {escape(__version__)} · {meta}'
        f"this page reloads every {REFRESH_SECONDS} s</p></header>"
        f"<main>{main}</main></body></html>\n"
    )


def _last_poll(health: Health) -> str:
    duration = (
        f" in {health.poll_duration_seconds:.2f} s"
        if health.poll_duration_seconds is not None
        else ""
    )
    return f"last successful poll {_when(health.last_success_timestamp)}{duration}"


def render(snapshot: Snapshot, health: Health, telemetry_path: str) -> str:
    """The whole landing page for one snapshot and the health of the cycle that made it."""
    main = _account_body(snapshot, health, _legend())
    return _page(telemetry_path, f"{_last_poll(health)} · ", main)


def render_accounts(groups: Sequence[tuple[str, Snapshot, Health]], telemetry_path: str) -> str:
    """The landing page of several accounts: one section each, in name order, with its own
    state, budget, errors and meetings."""
    if len(groups) == 1:
        _name, snapshot, health = groups[0]
        return render(snapshot, health, telemetry_path)
    sections = "".join(
        f'<section class="account" id="account-{escape(name)}">'
        f"<h2>Account {escape(name)}</h2>"
        f'<p class="meta">{_last_poll(health)}</p>'
        + _account_body(snapshot, health, "")
        + "</section>"
        for name, snapshot, health in sorted(groups, key=lambda g: g[0])
    )
    index = " ".join(
        f'<a href="#account-{escape(name)}">{escape(name)}</a>'
        for name, _s, _h in sorted(groups, key=lambda g: g[0])
    )
    meta = f"{len(groups)} accounts: {index} · " if groups else "no accounts on this replica · "
    return _page(telemetry_path, meta, _legend() + sections)
