"""The HTTP endpoints, served by aiohttp over a real socket, fed by a real poll of the simulator."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from conftest import simulator, zoom_client
from exporter.metrics.selfmetrics import SelfMetrics, StoreView
from exporter.metrics.store import SnapshotStore
from exporter.polling.poller import Poller, PollSettings
from exporter.simulator import Scenario, Simulator
from exporter.web.app import create_app


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator(Scenario(seed=5)) as sim:
        yield sim


@pytest.fixture
async def wired(sim: Simulator, aiohttp_client) -> AsyncIterator[tuple[TestClient, Poller]]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        zoom = zoom_client(session, sim.api_url, sim.oauth_url)
        store = SnapshotStore()
        poller = Poller(zoom, store, PollSettings(interval=60))
        view = StoreView(store, zoom.telemetry, zoom.token)
        http = await aiohttp_client(create_app(store, self_metrics=SelfMetrics(view)))
        yield http, poller


async def test_ready_only_after_first_cycle(wired: tuple[TestClient, Poller]) -> None:
    http, poller = wired
    assert (await http.get("/-/healthy")).status == 200
    response = await http.get("/-/ready")
    assert response.status == 503
    await poller.run_cycle()
    assert (await http.get("/-/ready")).status == 200


async def test_metrics_before_first_cycle_says_down(wired: tuple[TestClient, Poller]) -> None:
    http, _ = wired
    text = await (await http.get("/metrics")).text()
    assert 'zoom_up{account="default"} 0.0' in text
    assert "zoom_participant_bitrate_bytes_per_second{" not in text


async def test_content_negotiation_and_gzip(wired: tuple[TestClient, Poller]) -> None:
    http, poller = wired
    await poller.run_cycle()
    plain = await http.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    plain_text = await plain.text()
    assert 'zoom_up{account="default"} 1.0' in plain_text
    om = await http.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await om.text()).endswith("# EOF\n")
    zipped = await http.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    unzipped = gzip.decompress(await zipped.read()).decode()
    # One gzip member: the QoS deflated once per cycle, then this scrape's live self-metrics.
    assert unzipped.count("# HELP zoom_up ") == 1 and unzipped.endswith("\n")
    assert volatile_free(unzipped) == volatile_free(plain_text)
    om_zipped = await http.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    om_text = gzip.decompress(await om_zipped.read()).decode()
    assert om_text.endswith("# EOF\n") and om_text.count("# EOF") == 1
    # The OpenMetrics parser refuses a family that appears twice (QoS and self-metrics apart).
    names = [f.name for f in openmetrics_families(om_text)]
    assert "zoom_up" in names and "zoom_participant_bitrate_bytes_per_second" in names


def volatile_free(text: str) -> str:
    """The exposition without what changes between two scrapes (process and GC readings)."""
    return "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("process_", "python_gc_", "zoom_exporter_asyncio_tasks"))
    )


async def test_scrapes_never_call_zoom(wired: tuple[TestClient, Poller], sim: Simulator) -> None:
    http, poller = wired
    await poller.run_cycle()
    before = sim.stats["total"]
    for _ in range(20):
        assert (await http.get("/metrics")).status == 200
        assert (await http.get("/")).status == 200
    assert sim.stats["total"] == before


async def test_landing_page_and_unknown_paths(wired: tuple[TestClient, Poller]) -> None:
    http, poller = wired
    await poller.run_cycle()
    page = await http.get("/")
    assert page.headers["Content-Type"].startswith("text/html")
    assert 'href="/metrics"' in await page.text()
    assert (await http.get("/nope")).status == 404
    assert (await http.post("/metrics")).status == 405
