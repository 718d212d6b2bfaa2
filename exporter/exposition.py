"""Render a snapshot to the exposition formats once, and serve the cached bytes to every scrape."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field

from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format

from exporter.collector import registry_for
from exporter.snapshot import Snapshot

# The classic text format that every Prometheus speaks, and OpenMetrics 1.0 when asked for it.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


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


@dataclass
class Exposition:
    """The rendered forms of one snapshot. Each form is made at most once."""

    snapshot: Snapshot
    _cache: dict[tuple[bool, bool], bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def body(self, *, openmetrics: bool, compressed: bool) -> bytes:
        key = (openmetrics, compressed)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                cached = self._render(openmetrics, compressed)
                self._cache[key] = cached
            return cached

    def _render(self, openmetrics: bool, compressed: bool) -> bytes:
        if compressed:
            plain = self._cache.get((openmetrics, False)) or self._render(openmetrics, False)
            self._cache[(openmetrics, False)] = plain
            return gzip.compress(plain, compresslevel=6, mtime=0)
        registry = registry_for(self.snapshot)
        if openmetrics:
            rendered: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
            return rendered
        return text_format.generate_latest(registry)

    def prerender(self) -> Exposition:
        """Render the plain text form now (called off the event loop, once per cycle)."""
        self.body(openmetrics=False, compressed=False)
        return self
