"""At scale, CI-sized: the event loop never stalls while a large cycle runs, and the scale
benchmark runs (benchmarks/bench_scale.py; the README has its full-size table)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from conftest import ROOT
from exporter.daemon import GIL_SWITCH_INTERVAL
from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import LARGE_MEETING, Poller, PollSettings
from exporter.series import SeriesOptions
from exporter.web.app import create_app

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_scale

pytestmark = pytest.mark.bench
BOUND = 0.050  # seconds: the target for the largest account, here at CI size
# The machine is shared: another process may take the CPU for longer than BOUND now and then.
# A stall of ours (a GC pass, a render on the loop) happens in every attempt; noise does not.
ATTEMPTS = 3


@pytest.fixture(scope="module")
def mock_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bench_scale.MockApi]:
    api = bench_scale.start_mock("ci", tmp_path_factory.mktemp("mock"))
    try:
        yield api
    finally:
        api.stop()


async def test_the_loop_never_stalls_during_a_large_cycle(
    mock_api: bench_scale.MockApi, aiohttp_client, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A ticker that asks to wake every 5 ms is never more than BOUND late while cycles of a
    2,000-attendee webinar and 20 meetings run, each published in every format, with scrapes
    and a status page request in between."""
    assert bench_scale.SIZES["ci"][0] > LARGE_MEETING  # the webinar takes the worker thread
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as the daemon does
    try:
        async with aiohttp.ClientSession() as session:
            client = mock_api.client(session)
            store = SnapshotStore()
            poller = Poller(client, store, PollSettings(interval=1.0, series=SeriesOptions()))
            http = await aiohttp_client(create_app(store))
            first = await poller.run_cycle()  # warm: token, discovery, imports
            assert sum(len(m.participants) for m in first.snapshot.meetings) == 2_500
            headers = {"Accept": bench_scale.PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
            worst: list[float] = []
            for _attempt in range(ATTEMPTS):
                ticker = bench_scale.Ticker()
                ticker.start()
                await ticker.running.wait()  # started: its first wake-up is not a stall
                ticker.reset()
                for _ in range(2):
                    cycle = asyncio.ensure_future(poller.run_cycle())
                    while not cycle.done():
                        response = await http.get(
                            "/metrics", headers=headers, auto_decompress=False
                        )
                        assert response.status == 200
                        await response.read()
                        await asyncio.sleep(0.02)
                    await cycle
                    page = await http.get("/")
                    assert "Zoom QoS Exporter" in await page.text()
                ticker.stop()
                worst.append(ticker.worst)
                if ticker.worst <= BOUND:
                    break
            shown = ", ".join(f"{w * 1000:.0f} ms" for w in worst)
            assert min(worst) <= BOUND, f"the loop stalled: {shown}"
    finally:
        sys.setswitchinterval(previous)


def test_the_scale_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """The smoke run of the benchmark in the README: every figure is there, and the renderer
    is byte-identical to prometheus_client."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_scale.py"),
            "--size=tiny",
            "--cycles=1",
            "--scrapers=3",
            "--load-seconds=1",
            "--compare-modes=worst:2,none",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["participants"] == 340
    assert figures["series"] > figures["series_worst:2"] > figures["series_none"] > 0
    assert figures["renderer"]["identical"] == 1.0
    assert figures["scrapes"] > 0
    assert bench_scale.table(figures).count("|") > 20
