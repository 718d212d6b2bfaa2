"""Content negotiation as Prometheus and prometheus_client do it: each Accept header that
Prometheus 2 and 3 send, q-values, and the same Content-Type as prometheus_client."""

from __future__ import annotations

import gzip

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from test_snapshot import snapshot

from exporter.metrics.exposition import negotiate, wants_gzip
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import Health
from exporter.web.app import create_app

OM_1 = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_004 = "text/plain; version=0.0.4; charset=utf-8"

# (who sends it, Accept, OpenMetrics?, Content-Type)
HEADERS = [
    (
        "Prometheus 2, early (OpenMetrics 0.0.1 only)",
        "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        False,
        TEXT_004,
    ),
    (
        "Prometheus 2, later",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        True,
        OM_1 + "; escaping=underscores",
    ),
    (
        "Prometheus 2 scrape_protocols, native histograms",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
        "encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,"
        "application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=0.0.4;q=0.2,"
        "*/*;q=0.1",
        True,
        OM_1 + "; escaping=underscores",
    ),
    (
        "Prometheus 3 (UTF-8 names)",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,"
        "*/*;q=0.2",
        True,
        OM_1 + "; escaping=allow-utf-8",
    ),
    (
        "Prometheus 3 (legacy names)",
        "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,"
        "text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,"
        "*/*;q=0.2",
        True,
        OM_1 + "; escaping=underscores",
    ),
    (
        "Prometheus 3, scrape_protocols: [PrometheusText1.0.0]",
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.6,*/*;q=0.5",
        False,
        "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
    ),
    (
        "Prometheus 3, scrape_protocols: [PrometheusText0.0.4]",
        "text/plain;version=0.0.4;q=0.6,*/*;q=0.5",
        False,
        TEXT_004,
    ),
    ("OpenMetrics without a version", "application/openmetrics-text", True, OM_1),
    (
        "an unknown escaping",
        "application/openmetrics-text;version=1.0.0;escaping=x",
        True,
        OM_1 + "; escaping=underscores",
    ),
    (
        "a browser",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        False,
        TEXT_004,
    ),
    ("curl", "*/*", False, TEXT_004),
    ("nothing", "", False, TEXT_004),
]


@pytest.mark.parametrize(("who", "accept", "openmetrics", "content_type"), HEADERS)
def test_each_header_as_prometheus_client(
    who: str, accept: str, openmetrics: bool, content_type: str
) -> None:
    assert negotiate(accept) == (openmetrics, content_type), who
    # without q=0 anywhere, and in falling q order, prometheus_client answers the same
    _encoder, expected = choose_encoder(accept)
    assert content_type == expected, who


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("application/openmetrics-text;version=1.0.0;q=0,text/plain;version=0.0.4", False),
        ("application/openmetrics-text;q=0.0", False),
        ("text/plain;version=0.0.4;q=0.2,application/openmetrics-text;version=1.0.0;q=0.9", True),
        ("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.2", False),
        ("application/openmetrics-text;q=bogus,text/plain", False),
    ],
)
def test_q_values_order_and_q0_refuses(accept: str, openmetrics: bool) -> None:
    assert negotiate(accept)[0] is openmetrics


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity", False),
        ("*", False),
        ("", False),
    ],
)
def test_gzip_and_its_q_value(accept_encoding: str, compressed: bool) -> None:
    assert wants_gzip(accept_encoding) is compressed


@pytest.mark.parametrize(("who", "accept", "openmetrics", "content_type"), HEADERS)
async def test_served_with_that_content_type(
    aiohttp_client, who: str, accept: str, openmetrics: bool, content_type: str
) -> None:  # type: ignore[no-untyped-def]
    store = SnapshotStore()
    await store.publish(snapshot(), Health(complete_cycles=1))
    http: TestClient = await aiohttp_client(create_app(store))
    response = await http.get(
        "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Type"] == content_type
    body = gzip.decompress(await response.read()).decode()
    if openmetrics:
        assert body.endswith("# EOF\n")
        names = {f.name for f in openmetrics_families(body)}
        assert "zoom_participant_audio_mos_estimate" in names
    else:
        names = {f.name for f in text_string_to_metric_families(body)}
        assert "zoom_meeting_qos_latency_seconds" in names
    assert Snapshot() is not None
