"""Scale benchmark: the real poller, store and web server against a fast mock of Zoom's API.

Scenario L is a 10,000-attendee webinar plus 200 meetings of 25 (15,000 participants); XL has
50,000 participants (a 40,000-attendee webinar plus 400 meetings of 25). The mock API runs in
its own process and serves pages encoded once at its start, so it is never the bottleneck;
participants' QoS comes from the simulator's generator (three samples each, every stream Zoom
has, gateway hops for room systems and web clients).

The exporter runs in this process: the real ZoomClient, Poller, SnapshotStore and aiohttp app,
with its self-metrics. A ticker task measures how late the event loop runs it (the stall), and
50 scrapers in another process ask for /metrics as Prometheus does (OpenMetrics, gzip) while
cycles run back to back. It prints one table:

    python benchmarks/bench_scale.py [--size tiny|L|XL] [--mode all|worst:20|none]
        [--streams input,output] [--cycles 3] [--scrapers 50] [--json]

CPU per cycle is this process's CPU time (every thread) over a cycle with no scrapes, from the
first call to Zoom to the published snapshot, all formats and gzip included. Peak RSS is this
process's high-water mark (the mock and the scrapers run elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (webinar attendees, meetings, participants per meeting)
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (300, 4, 10),
    "ci": (2_000, 20, 25),
    "S": (2_000, 40, 25),
    "L": (10_000, 200, 25),
    "XL": (40_000, 400, 25),
}
TICK = 0.005  # the ticker's period, seconds
PAGE_SIZE = 10  # Zoom's cap for the participant QoS lists
DISCOVERY_PAGE = 300


# ----- the mock API (its own process) --------------------------------------------------------


def participants(kind: str, meeting: int, count: int, now: float) -> list[dict[str, Any]]:
    from exporter.simulator.qos import MediaProfile, sample
    from exporter.simulator.timefmt import iso

    rng = random.Random(f"{kind}{meeting}")
    minute = int(now // 60)
    out = []
    for i in range(count):
        key = f"{kind}-{meeting}-{i}"
        gateway = rng.choice(("", "", "", "", "crc", "rwg"))
        profile = MediaProfile(
            key=key,
            poor=rng.random() < 0.05,
            video_on=kind == "meeting" and rng.random() < 0.7,
            gateway=gateway,
            wifi=rng.random() < 0.5,
        )
        out.append(
            {
                "id": f"{meeting:04d}{i:06d}",
                "user_id": str(16_000_000 + meeting * 100_000 + i),
                "user_name": f"Person {i} of {meeting}",
                "device": rng.choice(("Windows", "Mac", "iOS", "Android", "Web")),
                "ip_address": f"10.{meeting % 250}.{i // 250 % 250}.{i % 250}",
                "location": rng.choice(("Berlin", "San Jose", "Lisbon", "Osaka")),
                "network_type": rng.choice(("Wifi", "Wired", "Cellular")),
                "data_center": rng.choice(("SC", "FRA", "AMS")),
                "join_time": iso(now - 600 - i),
                "version": "6.2.5.12345",
                "user_qos": [sample(profile, m) for m in (minute - 2, minute, minute - 1)],
            }
        )
    return out


def build_pages(size: str) -> dict[str, list[bytes]]:
    """Every listing's pages, encoded once: path -> pages."""
    webinar, meetings, per_meeting = SIZES[size]
    now = time.time()
    pages: dict[str, list[bytes]] = {}
    listed: dict[str, list[dict[str, Any]]] = {"meeting": [], "webinar": []}
    plan = [("webinar", 1, webinar)] + [("meeting", m, per_meeting) for m in range(meetings)]
    for kind, number, count in plan:
        mid = str(90_000_000_000 + number) if kind == "webinar" else str(80_000_000_000 + number)
        listed[kind].append(
            {
                "uuid": f"u{kind}{number}==",
                "id": mid,
                "topic": f"{kind} {number}",
                "host": "Host",
                "start_time": "2026-01-01T00:00:00Z",
                "participants": count,
            }
        )
        book = paged(participants(kind, number, count, now), "participants", PAGE_SIZE)
        for ref in (mid, f"u{kind}{number}=="):  # by id, and by uuid (what discovery gives)
            pages[f"/metrics/{kind}s/{ref}/participants/qos"] = book
    for kind, items in listed.items():
        pages[f"/metrics/{kind}s"] = paged(items, f"{kind}s", DISCOVERY_PAGE)
    return pages


def paged(items: list[dict[str, Any]], key: str, size: int) -> list[bytes]:
    count = max(1, -(-len(items) // size))
    out = []
    for index in range(count):
        body = {
            "page_count": count,
            "page_size": size,
            "total_records": len(items),
            "next_page_token": str(index + 1) if index + 1 < count else "",
            key: items[index * size : (index + 1) * size],
        }
        out.append(json.dumps(body).encode())
    return out


def serve(size: str, port_file: str) -> None:
    from aiohttp import web

    pages = build_pages(size)
    token = json.dumps(
        {"access_token": "t", "token_type": "bearer", "expires_in": 3600, "scope": ""}
    ).encode()

    async def oauth(request: web.Request) -> web.Response:
        return web.Response(body=token, content_type="application/json")

    async def listing(request: web.Request) -> web.Response:
        book = pages.get(request.path)
        if book is None:
            return web.json_response({"code": 3001, "message": "Meeting not found"}, status=404)
        index = int(request.query.get("next_page_token") or 0)
        return web.Response(body=book[index], content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/oauth/token", oauth)
        app.router.add_get("/{tail:.*}", listing)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await asyncio.to_thread(Path(port_file).write_text, str(port))
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class MockApi:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def client(self, session: Any) -> Any:
        """A ZoomClient of this mock (any credentials do)."""
        from pydantic import SecretStr

        from exporter.zoom.client import ZoomClient

        return ZoomClient(
            session,
            api_url=self.url,
            oauth_url=self.url + "/oauth/token",
            account_id="a",
            client_id="c",
            client_secret=SecretStr("s"),
        )


async def serve_exporter(store: Any, client: Any) -> tuple[Any, str]:
    """The real web app for `store` on a free loopback port, with the self-metrics of `client`:
    (its runner, to clean up; the /metrics URL)."""
    from aiohttp import web

    from exporter.metrics.selfmetrics import SelfMetrics, StoreView
    from exporter.web.app import create_app

    view = StoreView(store, client.telemetry, client.token)
    runner = web.AppRunner(create_app(store, self_metrics=SelfMetrics(view)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"


def start_mock(size: str, workdir: Path) -> MockApi:
    port_file = workdir / f"mock-{os.getpid()}-{time.monotonic_ns()}.port"
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", size, "--port-file", str(port_file)],
        cwd=ROOT,
    )
    deadline = time.monotonic() + 600
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the mock API did not start")
        time.sleep(0.05)
    port = port_file.read_text()
    port_file.unlink()
    return MockApi(f"http://127.0.0.1:{port}", process)


# ----- scrapers (their own process) -----------------------------------------------------------

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def scrapers(url: str, concurrency: int, seconds: float, interval: float) -> None:
    """`concurrency` scrapers for `seconds`; each scrapes every `interval` seconds (staggered,
    as many Prometheus servers would), or back to back with an interval of 0."""
    import aiohttp

    async def main() -> list[float]:
        latencies: list[float] = []
        headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        deadline = time.monotonic() + seconds

        async def worker(session: aiohttp.ClientSession, index: int) -> None:
            await asyncio.sleep(interval * index / concurrency)
            while time.monotonic() < deadline:
                start = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    assert response.status == 200
                took = time.perf_counter() - start
                latencies.append(took)
                await asyncio.sleep(max(0.0, interval - took))

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(auto_decompress=False, connector=connector) as session:
            await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
        return latencies

    print(json.dumps(asyncio.run(main())))


# ----- the exporter (this process) -------------------------------------------------------------


class Ticker:
    """How late the event loop runs a task that asks to wake every TICK seconds."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0  # wake-ups so far
        self.running = asyncio.Event()  # set at the first wake-up: a test waits for it
        self._task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        self.worst = 0.0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, loop.time() - before - TICK)
            self.ticks += 1
            self.running.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def series_in(chunks: Iterable[bytes]) -> int:
    """Sample lines in a body given in pieces cut anywhere (Form.inflated: no copy of the
    whole body): every line, less those that start with #."""
    lines = comments = 0
    previous = b"\n"
    for chunk in chunks:
        lines += chunk.count(b"\n")
        comments += chunk.count(b"\n#") + (previous == b"\n" and chunk.startswith(b"#"))
        previous = chunk[-1:]
    return lines - comments


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace, mock: MockApi) -> dict[str, Any]:
    import aiohttp

    from exporter.daemon import GIL_SWITCH_INTERVAL
    from exporter.metrics.store import SnapshotStore
    from exporter.polling.poller import Poller, PollSettings
    from exporter.series import SeriesOptions

    sys.setswitchinterval(args.switch_interval or GIL_SWITCH_INTERVAL)  # as the daemon does
    result_switch = sys.getswitchinterval()
    mode, count = SeriesOptions.parse_participants(args.mode)
    streams = frozenset(args.streams.split(","))
    result: dict[str, Any] = {"size": args.size, "mode": args.mode, "streams": args.streams}
    result["switch_interval"] = result_switch
    async with aiohttp.ClientSession() as session:
        client = mock.client(session)
        store = SnapshotStore()
        settings = PollSettings(interval=1.0, series=SeriesOptions(mode, count, streams))
        poller = Poller(client, store, settings)
        runner, url = await serve_exporter(store, client)
        ticker = Ticker()
        ticker.start()
        try:
            first = await poller.run_cycle()  # the token, discovery, everyone's first reading
            if first.health.errors or not first.snapshot.meetings:
                raise RuntimeError(f"the first cycle failed: {first.health.errors}")
            cpu: list[float] = []
            stalls: list[float] = []
            for _ in range(args.cycles):
                ticker.reset()
                before = time.process_time()
                await poller.run_cycle()
                cpu.append(time.process_time() - before)
                stalls.append(ticker.worst)
            result["cycle_cpu_seconds"] = cpu
            result["stall_idle_seconds"] = max(stalls)
            result["peak_rss_cycles_mib"] = peak_rss_mib()
            result["participants"] = sum(len(m.participants) for m in store.snapshot.meetings)
            result["series"] = series_in(store.exposition.text.inflated())
            result["body_mib"] = store.exposition.text.size / 2**20
            result["gzip_mib"] = sum(map(len, store.exposition.openmetrics.deflated)) / 2**20
            # Under load: scrapers in another process while cycles run back to back.
            ticker.reset()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--scrape",
                url,
                "--scrapers",
                str(args.scrapers),
                "--seconds",
                str(args.load_seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            own = time.process_time()
            ticker.reset()  # starting a process is the benchmark's cost, not the exporter's
            cycles = 0
            communicate = asyncio.ensure_future(process.communicate())
            while not communicate.done():
                if args.idle_load:
                    await asyncio.wait([communicate])
                    break
                await poller.run_cycle()
                cycles += 1
            out, _ = await communicate
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            result["scrapers_cpu_seconds"] = (after.ru_utime + after.ru_stime) - (
                children.ru_utime + children.ru_stime
            )
            result["exporter_load_cpu_seconds"] = time.process_time() - own
            latencies = json.loads(out)
            result["load_cycles"] = cycles
            result["scrape_interval"] = args.scrape_interval
            result["load_seconds"] = args.load_seconds
            result["scrapes"] = len(latencies)
            result["scrape_p50_seconds"] = percentile(latencies, 0.50)
            result["scrape_p99_seconds"] = percentile(latencies, 0.99)
            result["stall_load_seconds"] = ticker.worst
            # The status page under the same data, timed on the loop.
            ticker.reset()
            async with session.get(url.removesuffix("/metrics") + "/") as response:
                await response.read()
            result["stall_status_page_seconds"] = ticker.worst
            result["peak_rss_mib"] = peak_rss_mib()
            result["renderer"] = renderer_ratio(store.snapshot)
            for other in args.compare_modes.split(","):
                if other and other != args.mode:  # a fresh poller: the first cycle polls all
                    m, n = SeriesOptions.parse_participants(other)
                    series = SeriesOptions(m, n, streams)
                    fresh = Poller(client, store, PollSettings(interval=1.0, series=series))
                    await fresh.run_cycle()
                    result[f"series_{other}"] = series_in(store.exposition.text.inflated())
        finally:
            ticker.stop()
            await runner.cleanup()
    return result


def renderer_ratio(snapshot: Any) -> dict[str, float]:
    """Our text and OpenMetrics renderers against prometheus_client's on the same families
    (best of two, each side building what it needs from the snapshot)."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from exporter.metrics.collectors import registry_for
    from exporter.metrics.exposition import format_snapshot

    def best(fn: Any) -> tuple[float, bytes]:
        times = []
        out = b""
        for _ in range(2):
            gc.collect()
            start = time.process_time()
            out = fn()
            times.append(time.process_time() - start)
        return min(times), out

    ours_text, text = best(lambda: format_snapshot(snapshot))
    theirs_text, reference = best(lambda: generate_latest(registry_for(snapshot)))
    ours_om, om = best(lambda: format_snapshot(snapshot, openmetrics=True))
    theirs_om, om_reference = best(lambda: generate_openmetrics(registry_for(snapshot)))
    return {
        "ours_text_seconds": ours_text,
        "prometheus_client_text_seconds": theirs_text,
        "text_ratio": theirs_text / ours_text,
        "openmetrics_ratio": theirs_om / ours_om,
        "identical": float(text == reference and om + b"# EOF\n" == om_reference),
    }


def table(r: dict[str, Any]) -> str:
    cpu = r["cycle_cpu_seconds"]
    rows = [
        (
            "scenario",
            f"{r['size']}: {r['participants']:,} participants, mode {r['mode']}, "
            f"streams {r['streams']}",
        ),
        (
            "series (this mode)",
            f"{r['series']:,} ({r['body_mib']:.0f} MiB text, {r['gzip_mib']:.1f} MiB gzip)",
        ),
        *[
            (f"series ({k.removeprefix('series_')})", f"{v:,}")
            for k, v in r.items()
            if k.startswith("series_")
        ],
        ("CPU per cycle (all formats, gzip)", f"{min(cpu):.2f}-{max(cpu):.2f} s"),
        ("peak RSS", f"{r['peak_rss_mib']:.0f} MiB (cycles alone: {r['peak_rss_cycles_mib']:.0f})"),
        ("max loop stall, cycles alone", f"{r['stall_idle_seconds'] * 1000:.0f} ms"),
        ("max loop stall, cycles + scrapes", f"{r['stall_load_seconds'] * 1000:.0f} ms"),
        ("max loop stall, status page", f"{r['stall_status_page_seconds'] * 1000:.0f} ms"),
        (
            "/metrics p50 / p99 under load",
            f"{r['scrape_p50_seconds'] * 1000:.0f} / "
            f"{r['scrape_p99_seconds'] * 1000:.0f} ms "
            f"({r['scrapes']} scrapes, {r['load_cycles']} cycles, each scraper every "
            f"{r['scrape_interval']:g} s)",
        ),
        (
            "CPU during the load (exporter, scrapers)",
            f"{r['exporter_load_cpu_seconds']:.1f} s, {r['scrapers_cpu_seconds']:.1f} s in "
            f"{r['load_seconds']:g} s, {os.cpu_count()} cores",
        ),
        (
            "renderer vs prometheus_client",
            f"text {r['renderer']['text_ratio']:.1f}x, OpenMetrics "
            f"{r['renderer']['openmetrics_ratio']:.1f}x, "
            f"identical: {bool(r['renderer']['identical'])}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="L")
    parser.add_argument("--mode", default="all")
    parser.add_argument("--compare-modes", default="worst:20,worst:5,none")
    parser.add_argument("--streams", default="input,output")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument(
        "--scrape-interval", type=float, default=1.0, help="per scraper; 0: back to back"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--idle-load", action="store_true", help="scrapes without cycles")
    parser.add_argument("--switch-interval", type=float, default=0.0, help="GIL; 0: the daemon's")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--scrape", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port_file)
        return
    if args.scrape:
        scrapers(args.scrape, args.scrapers, args.seconds, args.interval)
        return
    workdir = Path(os.environ.get("TMPDIR", "/tmp"))
    mock = start_mock(args.size, workdir)
    try:
        result = asyncio.run(measure(args, mock))
    finally:
        mock.stop()
    print(json.dumps(result) if args.json else table(result))


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    main()
