"""Render a snapshot's QoS to every exposition format once; each scrape adds the live
self-metrics to the cached bytes."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric

from exporter.metrics.collectors import registry_for
from exporter.metrics.snapshot import Snapshot

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


def wants_openmetrics(accept: str) -> bool:
    """Content negotiation: OpenMetrics only when the scraper asks for it."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/openmetrics-text":
            return True
    return False


def wants_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


# One gzip member for the cached QoS and the live self-metrics: the QoS is deflated once per
# cycle, and each scrape deflates only its few live lines on a copy of that state.
_GZIP_WBITS = 31  # zlib's gzip container
_GZIP_LEVEL = 6


@dataclass(frozen=True)
class Form:
    """One format of a snapshot: the plain bytes, and a deflate state that has consumed them."""

    plain: bytes
    deflated: bytes  # the gzip stream so far (header and every byte of `plain`, flushed)
    compressor: Any  # zlib's compressobj, to be copied, never used directly

    @staticmethod
    def of(plain: bytes) -> Form:
        compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        deflated = compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return Form(plain, deflated, compressor)

    def parts(self, tail: bytes, *, compressed: bool) -> tuple[bytes, bytes]:
        """This form followed by `tail` (the live self-metrics), gzipped when asked, as two
        parts to write one after the other: the cached body is never copied."""
        if not compressed:
            return self.plain, tail
        compressor = self.compressor.copy()
        rest: bytes = compressor.compress(tail) + compressor.flush()
        return self.deflated, rest

    def body(self, tail: bytes, *, compressed: bool) -> bytes:
        """The same, joined (a copy: for tests and tools, not for scrapes)."""
        return b"".join(self.parts(tail, compressed=compressed))


@dataclass(frozen=True)
class Exposition:
    """Every form of one snapshot's QoS, rendered once, before it is published.

    The OpenMetrics form has no `# EOF`: the self-metrics that follow it at scrape time end it.
    """

    snapshot: Snapshot
    text: Form
    openmetrics: Form

    @staticmethod
    def render(snapshot: Snapshot) -> Exposition:
        """Render every form (CPU-bound: called off the event loop, once per cycle)."""
        families = list(registry_for(snapshot).collect())
        text = format_exposition(families)
        openmetrics = format_exposition(families, openmetrics=True, eof=False)
        return Exposition(snapshot, Form.of(text), Form.of(openmetrics))

    def form(self, *, openmetrics: bool) -> Form:
        return self.openmetrics if openmetrics else self.text
