"""Where does the event loop stall? The scale benchmark's setup (the real poller, store and web
server against the mock API), with every gap the ticker sees attributed to what ran meanwhile:

- loop callbacks that ran long (asyncio.Handle._run timed, with the task's coroutine),
- phases in any thread (rendering, building a reading, freeing, the GC, the status page),
- GC passes (gc.callbacks), in whichever thread.

    python benchmarks/stall_probe.py [--size L] [--mode all] [--cycles 3] [--scrapers 50]

It prints, for each gap over --gap ms, the callbacks and phases that overlap it, then the
totals per phase. For diagnosis only: the wrappers cost a little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_scale  # noqa: E402

EVENTS: list[tuple[str, str, float, float]] = []  # (what, thread, start, end), monotonic
GAPS: list[tuple[str, float, float]] = []  # (stage, start, end)
STAGE = ["setup"]
LONG_CALLBACK = 0.010


def record(what: str, start: float, end: float) -> None:
    EVENTS.append((what, threading.current_thread().name, start, end))


def wrap(owner: Any, attr: str, what: str | None = None) -> None:
    inner = getattr(owner, attr)
    name = what or f"{getattr(owner, '__name__', owner)}.{attr}"

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return inner(*args, **kwargs)
        finally:
            record(name, start, time.monotonic())

    setattr(owner, attr, wrapper)


def instrument() -> None:
    import asyncio.events

    from exporter.metrics import exposition, selfmetrics, store
    from exporter.polling import poller
    from exporter.web import status_page
    from exporter.zoom import client, transport

    handle_run = asyncio.events.Handle._run

    def timed_run(self: asyncio.events.Handle) -> None:
        start = time.monotonic()
        handle_run(self)
        end = time.monotonic()
        if end - start > LONG_CALLBACK:
            callback = self._callback
            owner = getattr(callback, "__self__", None)
            label = repr(callback)[:80]
            if isinstance(owner, asyncio.Task):
                coro = owner.get_coro()
                label = f"task {getattr(coro, '__qualname__', coro)}"
            record(f"loop callback: {label}", start, end)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    wrap(store, "render_safely", "render_safely (thread)")
    wrap(store, "trim_heap", "malloc_trim (thread)")
    wrap(exposition, "render_families")
    wrap(poller, "_build_and_drop", "_build_and_drop (thread)")
    wrap(poller, "meeting_reading", "meeting_reading (small, loop)")
    wrap(client.ZoomClient, "_validated", "pydantic _validated (loop)")
    wrap(transport, "decode_json", "json decode (loop)")
    wrap(status_page, "render", "status_page.render")
    wrap(selfmetrics.SelfMetrics, "render", "SelfMetrics.render")
    wrap(exposition.Form, "stream", "Form.stream")

    original_thread = store.in_daemon_thread

    async def traced_thread(work: Callable[[], Any]) -> Any:
        label = getattr(work, "__qualname__", repr(work))

        def run() -> Any:
            start = time.monotonic()
            try:
                return work()
            finally:
                record(f"daemon thread: {label}", start, time.monotonic())

        return await original_thread(run)

    store.in_daemon_thread = traced_thread  # type: ignore[assignment]

    class GcProxy:
        def __getattr__(self, name: str) -> Any:
            return getattr(gc, name)

        def collect(self, generation: int = 2) -> int:
            start = time.monotonic()
            try:
                return gc.collect(generation)
            finally:
                record(f"poller gc.collect({generation})", start, time.monotonic())

        def freeze(self) -> None:
            start = time.monotonic()
            gc.freeze()
            record("poller gc.freeze()", start, time.monotonic())

    poller.gc = GcProxy()  # type: ignore[assignment]

    started: dict[int, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            started[ident] = time.monotonic()
        else:
            begin = started.pop(ident, None)
            if begin is not None:
                record(f"gc pass gen {info['generation']}", begin, time.monotonic())

    gc.callbacks.append(on_gc)


class GapTicker(bench_scale.Ticker):
    """The benchmark's ticker, recording each gap over `gap` seconds with its window."""

    def __init__(self, gap: float) -> None:
        super().__init__()
        self.gap = gap

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(bench_scale.TICK)
            after = loop.time()
            late = after - before - bench_scale.TICK
            self.worst = max(self.worst, late)
            if late > self.gap:
                GAPS.append((STAGE[0], before + bench_scale.TICK, after))


async def drive(args: argparse.Namespace, mock: bench_scale.MockApi) -> None:
    import aiohttp

    from exporter.daemon import GIL_SWITCH_INTERVAL
    from exporter.metrics.store import SnapshotStore
    from exporter.polling.poller import Poller, PollSettings
    from exporter.series import SeriesOptions

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    mode, count = SeriesOptions.parse_participants(args.mode)
    streams = frozenset(args.streams.split(","))
    async with aiohttp.ClientSession() as session:
        client = mock.client(session)
        store = SnapshotStore()
        series = SeriesOptions(mode, count, streams)
        poller = Poller(client, store, PollSettings(1.0, series=series))
        runner, url = await bench_scale.serve_exporter(store, client)
        ticker = GapTicker(args.gap / 1000)
        ticker.start()
        await poller.run_cycle()
        STAGE[0] = "cycles"
        for _ in range(args.cycles):
            cpu = time.process_time()
            await poller.run_cycle()
            print(f"cycle CPU {time.process_time() - cpu:.2f} s", file=sys.stderr)
        STAGE[0] = "load"
        if args.scrapers:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                bench_scale.__file__,
                "--scrape",
                url,
                "--scrapers",
                str(args.scrapers),
                "--seconds",
                str(args.load_seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            communicate = asyncio.ensure_future(process.communicate())
            while not communicate.done():
                await poller.run_cycle()
            out, _ = await communicate
            latencies = json.loads(out)
            print(
                f"scrapes {len(latencies)} p50 {bench_scale.percentile(latencies, 0.5) * 1000:.0f}"
                f" p99 {bench_scale.percentile(latencies, 0.99) * 1000:.0f} ms",
                file=sys.stderr,
            )
        STAGE[0] = "status page"
        for _ in range(2):
            async with session.get(url.removesuffix("/metrics") + "/") as response:
                await response.read()
            await poller.run_cycle()
        ticker.stop()
        await runner.cleanup()
        print(f"peak RSS {bench_scale.peak_rss_mib():.0f} MiB", file=sys.stderr)


RSS: list[tuple[float, float]] = []  # (monotonic time, MiB)


def sample_rss() -> None:
    """Every 20 ms, this process's resident memory (a daemon thread; it needs the GIL only to
    read one small file)."""
    page = 4096 / 2**20
    while True:
        with open("/proc/self/statm") as statm:
            RSS.append((time.monotonic(), int(statm.read().split()[1]) * page))
        time.sleep(0.02)


def report_rss() -> None:
    """The top resident-memory moments and what ran then."""
    if not RSS:
        return
    when, peak = max(RSS, key=lambda r: r[1])
    print(f"\npeak RSS {peak:.0f} MiB, at:")
    for what, thread, s, e in EVENTS:
        if s <= when <= e and not what.startswith("loop callback"):
            print(f"   {what:<55} {thread:<22} {(e - s) * 1000:7.1f} ms")
    stages = [0.0] + [RSS[i][1] for i in range(0, len(RSS), max(1, len(RSS) // 40))]
    print("   over time (MiB): " + " ".join(f"{m:.0f}" for m in stages[1:]))


def report(gap: float) -> None:
    for stage, start, end in GAPS:
        print(f"\n[{stage}] gap {(end - start) * 1000:.0f} ms")
        overlapping = [e for e in EVENTS if e[2] < end and e[3] > start - 0.002]
        overlapping.sort(key=lambda e: e[2])
        for what, thread, s, e in overlapping:
            if e - s < 0.002:
                continue
            print(
                f"   {what:<55} {thread:<22} {(e - s) * 1000:7.1f} ms "
                f"(from {(s - start) * 1000:+.0f} ms)"
            )
    totals: dict[str, list[float]] = defaultdict(list)
    for what, _thread, s, e in EVENTS:
        totals[what.split(" at ")[0]].append(e - s)
    print("\nphase: count, total, max")
    for what, values in sorted(totals.items(), key=lambda kv: -max(kv[1])):
        if max(values) > 0.005:
            total, worst = sum(values), max(values) * 1000
            print(f"   {what:<60} {len(values):6d} {total:8.2f} s {worst:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="L")
    parser.add_argument("--mode", default="all")
    parser.add_argument("--streams", default="input,output")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--load-seconds", type=float, default=15.0)
    parser.add_argument("--gap", type=float, default=20.0, help="ms")
    args = parser.parse_args()
    instrument()
    threading.Thread(target=sample_rss, daemon=True).start()
    from pathlib import Path as _Path

    mock = bench_scale.start_mock(args.size, _Path("/tmp"))
    try:
        asyncio.run(drive(args, mock))
    finally:
        mock.stop()
    report(args.gap / 1000)
    report_rss()


if __name__ == "__main__":
    main()
