"""The HTTP face of the exporter: landing page, /metrics, /-/healthy, /-/ready and /-/reload.

Handlers only read the current pre-rendered snapshot: a scrape never calls Zoom.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from exporter.metrics.accounts import AccountsStore
from exporter.metrics.exposition import negotiate, wants_gzip
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import Health
from exporter.web import status_page
from exporter.web.webconfig import WebConfig, middlewares

# Reloads the configuration; returns None, or why it failed.
Reloader = Callable[[], Awaitable[str | None]]

# One account's store, or every account's (the daemon's): what the handlers read.
Store = SnapshotStore | AccountsStore
STORE: web.AppKey[Store] = web.AppKey("store")
TELEMETRY_PATH = web.AppKey("telemetry_path", str)
SELF_METRICS = web.AppKey("self_metrics", SelfMetrics)
RELOAD: web.AppKey[Reloader] = web.AppKey("reload")


class StatusPages:
    """The landing page of the current snapshot and health, rendered once, in a worker thread
    (at 10,000 participants it is a few hundred ms of CPU that must not stall the event loop);
    concurrent requests wait for the same render."""

    def __init__(self) -> None:
        self._generation: object = None  # the generation of the store(s) the page shows
        self._page: asyncio.Future[str] | None = None

    async def page(self, store: Store, telemetry_path: str) -> str:
        # Keyed by the stores' generations (one more at each publish, a health-only change
        # included), not by their expositions: holding the last ones here would free them on
        # the event loop, in one cascade, when the next request replaced them.
        generation = _generation(store)
        if self._page is None or self._generation != generation:
            self._generation = generation
            groups = _groups(store)
            self._page = asyncio.ensure_future(
                asyncio.to_thread(status_page.render_accounts, groups, telemetry_path)
            )
        return await asyncio.shield(self._page)


def _groups(store: Store) -> tuple[tuple[str, Snapshot, Health], ...]:
    if isinstance(store, AccountsStore):
        return store.groups()
    return ((store.snapshot.account, store.snapshot, store.health),)


def _generation(store: Store) -> object:
    if isinstance(store, AccountsStore):
        return tuple((name, s.generation) for name, s in store.stores.items())
    return store.generation


STATUS_PAGES = web.AppKey("status_pages", StatusPages)


async def metrics(request: web.Request) -> web.StreamResponse:
    """The cached QoS of the last cycle, then the live self-metrics; never a call to Zoom."""
    openmetrics, content_type = negotiate(request.headers.get("Accept", ""))
    compressed = wants_gzip(request.headers.get("Accept-Encoding", ""))
    own = request.app.get(SELF_METRICS)
    tail = own.render(openmetrics=openmetrics) if own is not None else b""
    if openmetrics and own is None:
        tail = b"# EOF\n"
    form = request.app[STORE].exposition.form(openmetrics=openmetrics)  # bytes only: no snapshot
    length, parts = form.stream(tail, compressed=compressed)
    del form
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    )
    if compressed:
        response.headers["Content-Encoding"] = "gzip"
    response.content_length = length
    await response.prepare(request)
    # In parts of WRITE_SLICE (256 KiB): what the socket does not take at once is copied into
    # the transport's buffer, so 50 scrapes hold at most 50 parts; and every write is a system
    # call that lets the GIL go, whose taking back costs up to a switch interval while a cycle
    # renders in a thread, so a 3 MiB gzip body goes in 12 writes, not 60. Each write has a
    # turn of the loop of its own: a write the socket takes at once does not yield, and 12 of
    # them in one turn (each taking the GIL back from a building thread) held the loop 20 ms.
    for part in parts:
        await response.write(part)
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def landing(request: web.Request) -> web.Response:
    html = await request.app[STATUS_PAGES].page(request.app[STORE], request.app[TELEMETRY_PATH])
    return web.Response(text=html, content_type="text/html")


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if not store.ready.is_set():
        return web.Response(status=503, text="Not ready: the first poll cycle has not finished\n")
    overdue = store.overdue()
    if overdue is not None:
        return web.Response(
            status=503, text=f"Not ready: no poll cycle has published for {overdue:.0f} s\n"
        )
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    """POST /-/reload, as in Prometheus: only with --web.enable-lifecycle."""
    reloader = request.app.get(RELOAD)
    if reloader is None:
        return web.Response(status=403, text="Lifecycle API is not enabled.\n")
    error = await reloader()
    if error is not None:
        return web.Response(status=500, text=f"failed to reload config: {error}\n")
    return web.Response(text="Reloaded\n")


def create_app(
    store: Store,
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
    *,
    self_metrics: SelfMetrics | None = None,
    reloader: Reloader | None = None,
) -> web.Application:
    app = web.Application(middlewares=middlewares(web_config or WebConfig()))
    app[STORE] = store
    app[TELEMETRY_PATH] = telemetry_path
    app[STATUS_PAGES] = StatusPages()
    if self_metrics is not None:
        app[SELF_METRICS] = self_metrics
    if reloader is not None:
        app[RELOAD] = reloader
    app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    return app
