"""Benchmark the pure pipeline: JSON page -> models -> snapshot -> rendered exposition.

Prints numbers; asserts nothing. Usage: python benchmarks/bench_pipeline.py [participants]
"""

from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import Snapshot, meeting_reading
from exporter.polling.targets import MeetingTarget
from exporter.zoom.models import Participant

PAGE = Path(__file__).resolve().parent.parent / "tests" / "data" / "participants_page.json"
PER_MEETING = 100


def synthetic(total: int) -> list[list[dict[str, Any]]]:
    """`total` live participants with the seed sample's full set of streams, 100 per meeting."""
    template = json.loads(PAGE.read_text())["participants"][0]
    meetings = []
    for m in range(0, total, PER_MEETING):
        people = []
        for i in range(m, min(total, m + PER_MEETING)):
            person = json.loads(json.dumps(template))
            person["user_id"] = str(10_000_000 + i)
            person["user_name"] = f"Person {i}"
            people.append(person)
        meetings.append(people)
    return meetings


def timed(label: str, fn: Callable[[], Any], repeat: int = 5) -> Any:
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<34} {best * 1000:9.1f} ms")
    return result


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    raw = synthetic(total)
    print(f"participants: {total} in {len(raw)} meetings (3 samples, 6 streams each)")

    def parse() -> list[list[Participant]]:
        return [[Participant.model_validate(p) for p in people] for people in raw]

    parsed = timed("validate JSON into models", parse)

    def build() -> Snapshot:
        readings = tuple(
            meeting_reading(MeetingTarget("meeting", str(i), str(i)), people, 0.0)
            for i, people in enumerate(parsed)
        )
        return Snapshot(meetings=readings)

    snapshot = timed("build snapshot (parse units)", build)
    exposition = timed(
        "render every form (text, OpenMetrics, both deflated)",
        lambda: Exposition.render(snapshot),
    )
    text = exposition.text.plain
    tail = b"zoom_up 1\n"  # stands in for the live self-metrics each scrape appends
    timed(
        "serve 1000 scrapes, plain",
        lambda: [list(exposition.text.stream(tail, compressed=False)[1]) for _ in range(1000)],
    )
    timed(
        "serve 1000 scrapes, OpenMetrics gzipped",
        lambda: [
            list(exposition.openmetrics.stream(tail, compressed=True)[1]) for _ in range(1000)
        ],
    )
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    gz = len(exposition.text.body(tail, compressed=True))
    print(f"series: {series}; body {len(text) / 1024:.0f} KiB, gzip {gz / 1024:.0f} KiB")

    tracemalloc.start()
    parsed2 = parse()
    snap2 = Snapshot(
        meetings=tuple(
            meeting_reading(MeetingTarget("meeting", str(i), str(i)), people, 0.0)
            for i, people in enumerate(parsed2)
        )
    )
    del parsed2
    kept = Exposition.render(snap2)  # what the store holds between cycles
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"memory: peak {peak / 2**20:.1f} MiB during a cycle, {current / 2**20:.1f} MiB held after"
    )
    del kept


if __name__ == "__main__":
    main()
