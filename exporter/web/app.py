"""The HTTP face of the exporter: landing page, /metrics, /-/healthy and /-/ready.

Handlers only read the current pre-rendered snapshot: a scrape never calls Zoom.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from exporter.metrics.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    wants_gzip,
    wants_openmetrics,
)
from exporter.metrics.store import SnapshotStore
from exporter.web import status_page
from exporter.web.webconfig import WebConfig, middlewares

STORE = web.AppKey("store", SnapshotStore)
TELEMETRY_PATH = web.AppKey("telemetry_path", str)


async def metrics(request: web.Request) -> web.Response:
    exposition = request.app[STORE].exposition
    openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
    compressed = wants_gzip(request.headers.get("Accept-Encoding", ""))
    body = exposition.cached(openmetrics=openmetrics, compressed=compressed)
    if body is None:  # the first scrape in this form since the cycle: render it off the loop
        body = await asyncio.to_thread(
            exposition.body, openmetrics=openmetrics, compressed=compressed
        )
    headers = {
        "Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE,
        "Vary": "Accept, Accept-Encoding",
    }
    if compressed:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def landing(request: web.Request) -> web.Response:
    html = status_page.render(request.app[STORE].snapshot, request.app[TELEMETRY_PATH])
    return web.Response(text=html, content_type="text/html")


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[STORE].ready.is_set():
        return web.Response(text="Ready\n")
    return web.Response(status=503, text="Not ready: the first poll cycle has not finished\n")


def create_app(
    store: SnapshotStore, telemetry_path: str = "/metrics", web_config: WebConfig | None = None
) -> web.Application:
    app = web.Application(middlewares=middlewares(web_config or WebConfig()))
    app[STORE] = store
    app[TELEMETRY_PATH] = telemetry_path
    app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app
