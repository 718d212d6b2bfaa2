"""Render a snapshot's QoS to every exposition format once; each scrape adds the live
self-metrics to the cached bytes.

The QoS is formatted straight from the snapshot (`render_families`), not through
prometheus_client's metric families: a label prefix per participant, one format per sample, and
a cache of value strings. The sample lines are the same in the text format and in OpenMetrics
(every family is a gauge or an info), so they are encoded and deflated once and shared by both
forms; only the family headers differ. tests/test_snapshot.py checks that the result is
byte-identical to prometheus_client's `generate_latest` over `collectors.registry_for`.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import Metric

from exporter.metrics.collectors import MEETING_STATS, STATS, registry_for
from exporter.metrics.quality import QUALITIES
from exporter.metrics.snapshot import Snapshot
from exporter.zoom.models import KINDS

# The classic text format that every Prometheus speaks, and OpenMetrics 1.0 when asked for it.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def go_float(value: float) -> str:
    """Format a sample value as Prometheus' Go code does (1.6e+09 style above a million)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _header(family: Metric, openmetrics: bool) -> str:
    name, kind, doc = family.name, family.type, family.documentation
    if openmetrics:
        return f"# HELP {name} {_escape_label_value(doc)}\n# TYPE {name} {kind}\n"
    if kind == "counter":
        name += "_total"
    elif kind == "info":
        name += "_info"
        kind = "gauge"
    doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def format_exposition(
    families: Iterable[Metric], *, openmetrics: bool = False, eof: bool = True
) -> bytes:
    """The text format (0.0.4) or OpenMetrics 1.0 of our families, without timestamps.

    Byte-identical to prometheus_client's generators for the gauges, counters and infos we
    make, at a third of the cost: they escape every metric and label name they write, while
    ours are fixed and valid, so only label values and help texts need escaping.
    """
    out: list[str] = []
    for family in families:
        out.append(_header(family, openmetrics))
        for sample in family.samples:
            if sample.labels:
                pairs = ",".join(
                    f'{key}="{_escape_label_value(value)}"'
                    for key, value in sorted(sample.labels.items())
                )
                out.append(f"{sample.name}{{{pairs}}} {go_float(sample.value)}\n")
            else:
                out.append(f"{sample.name} {go_float(sample.value)}\n")
    if openmetrics and eof:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def _media_ranges(header: str) -> list[tuple[str, list[str]]]:
    """The media ranges of an Accept header, most wanted first (by q-value, then by order),
    without those refused by q=0. Each is (type, its parameters as "key=value" strings)."""
    ranges: list[tuple[float, int, str, list[str]]] = []
    for index, part in enumerate(header.split(",")):
        media, *params = (token.strip() for token in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
                quality = quality if math.isfinite(quality) else 0.0
        if quality > 0:
            ranges.append((-quality, index, media.lower(), params))
    ranges.sort()
    return [(media, params) for _q, _i, media, params in ranges]


_ESCAPINGS: Final = ("allow-utf-8", "underscores", "dots", "values")


def _param(params: list[str], name: str) -> str:
    for param in params:
        key, sep, value = param.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return ""


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def negotiate(accept: str) -> tuple[bool, str]:
    """(OpenMetrics or not, the Content-Type) for an Accept header, as prometheus_client's
    `choose_encoder` answers, except that q-values order the choices and q=0 refuses one.

    OpenMetrics without a version is 1.0.0; with a version of 1.0.0 or more the Content-Type
    repeats it and names the escaping (`underscores` unless another known scheme is asked
    for). `text/plain` version 1.0.0 or more is the text format with its escaping named.
    OpenMetrics 0.0.1 falls through to the next choice; any other `text/plain`, `*/*` or the
    end of the list is the text format 0.0.4. Our names need no escaping, so the bytes are the
    same whatever the escaping.
    """
    for media, params in _media_ranges(accept):
        if media == "*/*":
            break
        if media not in ("application/openmetrics-text", "text/plain"):
            continue
        version = _param(params, "version")
        escaping = _param(params, "escaping")
        escaping = escaping if escaping in _ESCAPINGS else "underscores"
        if media == "application/openmetrics-text":
            if not version:
                return True, OPENMETRICS_CONTENT_TYPE
            if _version(version) >= (1, 0, 0):
                return True, (
                    f"application/openmetrics-text; version={version}; charset=utf-8; "
                    f"escaping={escaping}"
                )
        elif _version(version) >= (1, 0, 0):
            return False, f"text/plain; version=1.0.0; charset=utf-8; escaping={escaping}"
        else:
            break
    return False, TEXT_CONTENT_TYPE


def wants_gzip(accept_encoding: str) -> bool:
    """Whether the scraper takes gzip: named with a q-value above 0 (`*` is not enough, as
    for prometheus_client)."""
    return any(media == "gzip" for media, _params in _media_ranges(accept_encoding))


_GZIP_LEVEL: Final = 3  # 0.14 s and 3.1 MiB at 530k series, against 0.35 s and 2.6 MiB at 6
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # as zlib writes it


def _deflated(data: bytes) -> bytes:
    """A raw deflate piece that ends byte-aligned and not final: pieces made this way can be
    laid one after the other, each refers only to its own bytes."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


WRITE_SLICE: Final = 256 * 1024  # bytes a scrape writes at a time (see Form.stream)

# CRC-32 of two pieces laid one after the other, from each one's CRC and the second's length:
# zlib's crc32_combine (1.2.12 and later), which Python does not expose. The CRC is a
# polynomial over GF(2); appending n bytes multiplies the first CRC by x^(8n) modulo the
# CRC's polynomial. Each Piece keeps its x^(8n) (about 40 us to make), so laying it in is one
# multiplication, whatever the lengths: no pass over the data.
_CRC_POLY: Final = 0xEDB88320  # reflected, as zlib's


def _mult_mod_p(a: int, b: int) -> int:
    """a times b modulo the CRC polynomial (both reflected)."""
    m = 1 << 31
    p = 0
    while a:
        if a & m:
            p ^= b
            a ^= m
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return p


def _x2n_table() -> tuple[int, ...]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_mult_mod_p(table[-1], table[-1]))  # x^(2^n)
    return tuple(table)


_X2N: Final = _x2n_table()


def crc32_shift(length: int) -> int:
    """x^(8 length) modulo the CRC polynomial: what appending `length` bytes multiplies the
    CRC so far by (the product of x^(2^k) over the set bits of 8 length)."""
    factor, k = 1 << 31, 3  # x^0; bit j of length is bit j + 3 of 8 length
    while length:
        if length & 1:
            factor = _mult_mod_p(_X2N[k & 31], factor)
        length >>= 1
        k += 1
    return factor


@dataclass(frozen=True)
class Piece:
    """Bytes kept deflated only: a raw deflate run (byte-aligned, not final, referring to its
    own bytes only, so that runs can be laid one after another), and the CRC-32 and length of
    the plain bytes, for the gzip trailer of whatever body it ends up in."""

    deflated: bytes
    crc: int
    size: int
    shift: int  # crc32_shift(size), made once: laying the piece in is then one multiplication

    @staticmethod
    def of(plain: Sequence[bytes]) -> Piece:
        crc = 0
        for chunk in plain:
            crc = zlib.crc32(chunk, crc)
        size = sum(map(len, plain))
        return Piece(b"".join(map(_deflated, plain)), crc, size, crc32_shift(size))


@dataclass(frozen=True)
class Form:
    """One format of a snapshot, kept deflated only: a gzip member without its last block and
    trailer. Prometheus always asks for gzip; the plain bytes (72 MB at 15,000 participants,
    against 3 MB deflated) would only double the memory, twice while a cycle renders the next
    one beside them. A scrape without gzip inflates them as it writes (zlib lets the GIL go)."""

    # The gzip header and every chunk's deflated piece, joined in one bytes (a 1-tuple): a
    # scrape writes it in a few large slices, not one small write per family. Each write is
    # a system call that lets the GIL go, and taking it back from a rendering thread costs up
    # to a switch interval: 60 small writes held the loop for 50-100 ms per scrape.
    deflated: tuple[bytes, ...]
    crc: int  # CRC-32 of every chunk
    size: int  # bytes in every chunk

    @staticmethod
    def assemble(pieces: Iterable[Piece]) -> Form:
        """The form of these pieces laid one after another: no pass over any data, so that
        several accounts' renders compose cheaply."""
        deflated: list[bytes] = [_GZIP_HEADER]
        crc = size = 0
        for piece in pieces:
            if piece.size:
                deflated.append(piece.deflated)
                crc = _mult_mod_p(piece.shift, crc) ^ piece.crc  # zlib's crc32_combine
                size += piece.size
        return Form((b"".join(deflated),), crc, size)

    def inflated(self, limit: int = WRITE_SLICE) -> Iterator[bytes]:
        """The plain bytes, `limit` at a time."""
        inflater = zlib.decompressobj(-15)
        data = memoryview(self.deflated[0])[len(_GZIP_HEADER) :]
        while True:
            out = inflater.decompress(data, limit)
            data = memoryview(inflater.unconsumed_tail)
            if out:
                yield out
            elif not data:
                return

    @property
    def plain(self) -> bytes:
        """Every chunk, inflated and joined (for tests and tools, not for scrapes)."""
        return b"".join(self.inflated())

    def stream(
        self, tail: bytes, *, compressed: bool, limit: int = WRITE_SLICE
    ) -> tuple[int, Iterator[bytes | memoryview]]:
        """This form followed by `tail` (the live self-metrics), gzipped when asked: the
        Content-Length, and the body in parts of at most `limit` bytes to write one after the
        other. The cached bytes are never copied; unzipped, they are inflated as written."""
        if not compressed:
            return self.size + len(tail), itertools.chain(self.inflated(limit), (tail,))
        compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15)
        last = compressor.compress(tail) + compressor.flush()
        crc = zlib.crc32(tail, self.crc)
        end = last + struct.pack("<II", crc, (self.size + len(tail)) & 0xFFFFFFFF)
        body = memoryview(self.deflated[0])
        parts = (body[start : start + limit] for start in range(0, len(body), limit))
        return len(body) + len(end), itertools.chain(parts, (end,))

    def body(self, tail: bytes, *, compressed: bool) -> bytes:
        """The same, joined (a copy: for tests and tools, not for scrapes)."""
        return b"".join(self.stream(tail, compressed=compressed)[1])


def _headers() -> dict[str, tuple[bytes, bytes]]:
    """Each QoS family's header in text and in OpenMetrics, in the collectors' order; taken
    from the collectors themselves, so help texts are written once."""
    return {
        family.name: (_header(family, False).encode(), _header(family, True).encode())
        for family in registry_for(Snapshot()).collect()
    }


HEADERS: Final = _headers()
# The same headers, deflated: (text, OpenMetrics) by family.
HEADER_PIECES: Final = {
    name: (Piece.of([text]), Piece.of([openmetrics]))
    for name, (text, openmetrics) in HEADERS.items()
}


class _Values(dict[float, str]):
    """Go-style value strings, cached by value: `_Values().__getitem__` formats a value with
    no Python call when it is cached (half a million calls at L). Zeros are never cached:
    0.0 == -0.0, and the two are written differently."""

    def __missing__(self, value: float) -> str:
        text = go_float(value)
        if value and len(self) < 1_000_000:
            self[value] = text
        return text


def _q(value: str) -> str:
    return _escape_label_value(value)


Pieces = list[bytes]  # a family's sample lines, encoded, in pieces that each end a line
PIECE_PARTICIPANTS: Final = 1_000  # participants' lines per piece: at most about 1.5 MB


def _piece(lines: list[str]) -> Pieces:
    return [("".join(lines)).encode()] if lines else []


def render_families(snapshot: Snapshot) -> Iterator[tuple[str, Pieces]]:
    """(family name, its sample lines) for every QoS family, in the order of HEADERS; the same
    lines as prometheus_client writes for `registry_for(snapshot)`.

    The participant families come in pieces of PIECE_PARTICIPANTS participants: the lines of a
    whole large snapshot, held as strings until joined, were 95 MB more at the peak, and
    joining or encoding 15 MB is one C call that holds the GIL for 10 ms."""
    v = _Values().__getitem__
    meetings = snapshot.meetings
    counts = dict.fromkeys(KINDS, 0)
    participants: list[str] = []
    infos: list[str] = []
    polls: list[str] = []
    by_quality: list[str] = []
    stats: list[list[str]] = [[] for _ in MEETING_STATS]
    meeting_mos: list[str] = []
    acc = f'account="{_q(snapshot.account)}",'  # the first label of every series
    for meeting in meetings:
        t = meeting.target
        counts[t.kind] += 1
        bare = f'kind="{_q(t.kind)}",meeting_id="{_q(t.meeting_id)}"'
        km = acc + bare
        participants.append(f"zoom_meeting_participants{{{km}}} {v(len(meeting.participants))}\n")
        infos.append(
            f'zoom_meeting_info{{{acc}host="{_q(t.host)}",{bare},source="{_q(t.source)}",'
            f'topic="{_q(t.topic)}",uuid="{_q(t.uuid)}"}} 1.0\n'
        )
        polls.append(f"zoom_meeting_last_poll_timestamp_seconds{{{km}}} {v(meeting.polled_at)}\n")
        quality = meeting.quality
        for grade in QUALITIES:
            by_quality.append(
                f'zoom_meeting_participants_by_quality{{{km},quality="{grade}"}} '
                f"{v(getattr(quality, grade))}\n"
            )
        kind = f'{acc}kind="{_q(t.kind)}",media="'
        mid = f'",meeting_id="{_q(t.meeting_id)}",stat="'
        for (name, _help, attr), lines in zip(MEETING_STATS, stats, strict=True):
            for a in quality.streams:
                values = getattr(a, attr)
                if values is not None:
                    head = f"{name}{{{kind}{a.media}{mid}"
                    for stat, value in zip(STATS, values, strict=True):
                        lines.append(f'{head}{stat}",stream="{a.stream}"}} {v(value)}\n')
        for a in quality.streams:
            if a.mos is not None:
                head = f'zoom_meeting_audio_mos_estimate{{{km},stat="'
                meeting_mos.append(f'{head}p5",stream="{a.stream}"}} {v(a.mos[0])}\n')
                meeting_mos.append(f'{head}min",stream="{a.stream}"}} {v(a.mos[1])}\n')
    kinds = [f'zoom_meetings{{{acc}kind="{k}"}} {v(n)}\n' for k, n in counts.items()]
    yield "zoom_meetings", _piece(kinds)
    yield "zoom_meeting_participants", _piece(participants)
    yield "zoom_meeting", _piece(infos)
    yield "zoom_meeting_last_poll_timestamp_seconds", _piece(polls)
    yield "zoom_meeting_participants_by_quality", _piece(by_quality)
    for (name, _help, _attr), lines in zip(MEETING_STATS, stats, strict=True):
        yield name, _piece(lines)
    yield "zoom_meeting_audio_mos_estimate", _piece(meeting_mos)
    people, streams = snapshot.dropped()
    yield (
        "zoom_exporter_series_dropped",
        _piece(
            [
                f'zoom_exporter_series_dropped{{{acc}reason="participants"}} {v(people)}\n',
                f'zoom_exporter_series_dropped{{{acc}reason="streams"}} {v(streams)}\n',
            ]
        ),
    )
    yield from _participant_families(snapshot, v)


def _participant_families(
    snapshot: Snapshot, v: Callable[[float], str]
) -> Iterator[tuple[str, Pieces]]:
    bitrate: list[str] = []
    latency: list[str] = []
    jitter: list[str] = []
    width: list[str] = []
    height: list[str] = []
    frame_rate: list[str] = []
    loss: list[str] = []
    mos: list[str] = []
    cpu: list[str] = []
    rssi: list[str] = []
    sample_ts: list[str] = []
    join_ts: list[str] = []
    info: list[str] = []
    families = (
        ("zoom_participant_bitrate_bytes_per_second", bitrate),
        ("zoom_participant_latency_seconds", latency),
        ("zoom_participant_jitter_seconds", jitter),
        ("zoom_participant_resolution_width_pixels", width),
        ("zoom_participant_resolution_height_pixels", height),
        ("zoom_participant_frame_rate_frames_per_second", frame_rate),
        ("zoom_participant_packet_loss_ratio", loss),
        ("zoom_participant_audio_mos_estimate", mos),
        ("zoom_participant_cpu_usage_ratio", cpu),
        ("zoom_participant_wifi_rssi_dbm", rssi),
        ("zoom_participant_qos_sample_timestamp_seconds", sample_ts),
        ("zoom_participant_join_timestamp_seconds", join_ts),
        ("zoom_participant", info),
    )
    pieces: list[Pieces] = [[] for _ in families]

    def flush() -> None:
        for (_name, lines), done in zip(families, pieces, strict=True):
            done.extend(_piece(lines))
            lines.clear()

    account = _q(snapshot.account)
    for meeting in snapshot.meetings:
        t = meeting.target
        kind_value, mid_value = _q(t.kind), _q(t.meeting_id)
        kind = f'{{account="{account}",kind="{kind_value}",media="'
        for p in meeting.exported_participants:
            pid_value = _q(p.participant_id)
            ids = f'meeting_id="{mid_value}",participant_id="{pid_value}"'
            base = f'{{account="{account}",kind="{kind_value}",{ids}'
            labels = [
                *((k, _q(value)) for k, value in p.info),
                ("account", account),
                ("kind", kind_value),
                ("meeting_id", mid_value),
                ("participant_id", pid_value),
            ]
            labels.sort()
            pairs = ",".join(f'{k}="{value}"' for k, value in labels)
            info.append(f"zoom_participant_info{{{pairs}}} 1.0\n")
            if p.sample_timestamp is not None:
                sample_ts.append(
                    f"zoom_participant_qos_sample_timestamp_seconds{base}}} "
                    f"{v(p.sample_timestamp)}\n"
                )
            if p.join_timestamp is not None:
                join_ts.append(
                    f"zoom_participant_join_timestamp_seconds{base}}} {v(p.join_timestamp)}\n"
                )
            for s in p.streams:
                lab = f'{kind}{s.media}",{ids},stream="{s.stream}"}} '
                if s.bitrate_bytes is not None:
                    bitrate.append(
                        f"zoom_participant_bitrate_bytes_per_second{lab}{v(s.bitrate_bytes)}\n"
                    )
                if s.latency_seconds is not None:
                    latency.append(f"zoom_participant_latency_seconds{lab}{v(s.latency_seconds)}\n")
                if s.jitter_seconds is not None:
                    jitter.append(f"zoom_participant_jitter_seconds{lab}{v(s.jitter_seconds)}\n")
                if s.width_pixels is not None:
                    width.append(
                        f"zoom_participant_resolution_width_pixels{lab}{v(s.width_pixels)}\n"
                    )
                if s.height_pixels is not None:
                    height.append(
                        f"zoom_participant_resolution_height_pixels{lab}{v(s.height_pixels)}\n"
                    )
                if s.frame_rate is not None:
                    frame_rate.append(
                        f"zoom_participant_frame_rate_frames_per_second{lab}{v(s.frame_rate)}\n"
                    )
                head = f'zoom_participant_packet_loss_ratio{kind}{s.media}",{ids},stat="'
                if s.avg_loss_ratio is not None:
                    loss.append(f'{head}avg",stream="{s.stream}"}} {v(s.avg_loss_ratio)}\n')
                if s.max_loss_ratio is not None:
                    loss.append(f'{head}max",stream="{s.stream}"}} {v(s.max_loss_ratio)}\n')
                if s.mos is not None:
                    mos.append(
                        f'zoom_participant_audio_mos_estimate{base},stream="{s.stream}"}} '
                        f"{v(s.mos)}\n"
                    )
            for process, stat, value in p.cpu:
                cpu.append(
                    f'zoom_participant_cpu_usage_ratio{base},process="{process}",stat="{stat}"}} '
                    f"{v(value)}\n"
                )
            for stat, value in p.wifi_rssi:
                rssi.append(f'zoom_participant_wifi_rssi_dbm{base},stat="{stat}"}} {v(value)}\n')
            if len(info) >= PIECE_PARTICIPANTS:
                flush()
    flush()
    for (name, _lines), done in zip(families, pieces, strict=True):
        yield name, done


def format_snapshot(snapshot: Snapshot, *, openmetrics: bool = False) -> bytes:
    """One form of a snapshot's QoS in one piece, without gzip or `# EOF` (for tools and the
    benchmark; the exporter renders every form at once with Exposition.render)."""
    side = 1 if openmetrics else 0
    return b"".join(
        HEADERS[name][side] + b"".join(pieces) for name, pieces in render_families(snapshot)
    )


Family = tuple[str, Piece]  # a family's name, and its sample lines (no header) deflated


def forms(families: Sequence[Sequence[Family]]) -> tuple[Form, Form]:
    """The text and OpenMetrics forms of one or more renders' families (each render has every
    family, in the order of HEADERS): each family's header once, then each render's lines."""
    text: list[Piece] = []
    openmetrics: list[Piece] = []
    for index, (name, (text_header, om_header)) in enumerate(HEADER_PIECES.items()):
        text.append(text_header)
        openmetrics.append(om_header)
        for render in families:
            own, lines = render[index]
            assert own == name, (own, name)
            text.append(lines)
            openmetrics.append(lines)
    return Form.assemble(text), Form.assemble(openmetrics)


@dataclass(frozen=True)
class Exposition:
    """Every form of one snapshot's QoS, rendered once, before it is published: the text
    format and OpenMetrics, deflated (Form). No scrape ever renders. `families` keeps each
    family's lines apart (deflated, shared with the forms' bytes only by copy of 3 MB at
    15,000 participants), for composing several accounts' renders into one page.

    The OpenMetrics form has no `# EOF`: the self-metrics that follow it at scrape time end it.
    """

    snapshot: Snapshot
    text: Form
    openmetrics: Form
    families: tuple[Family, ...]

    @staticmethod
    def render(snapshot: Snapshot) -> Exposition:
        """Render every form (CPU-bound: called off the event loop, once per cycle). The lines
        of a family are deflated once, for both forms."""
        families: list[Family] = []
        for (name, lines), expected in zip(render_families(snapshot), HEADERS, strict=True):
            assert name == expected, (name, expected)
            families.append((name, Piece.of(lines)))
            del lines
        text, openmetrics = forms([families])
        return Exposition(snapshot, text, openmetrics, tuple(families))

    def form(self, *, openmetrics: bool) -> Form:
        return self.openmetrics if openmetrics else self.text
