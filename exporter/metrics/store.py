"""What every scrape reads: the current QoS, rendered, and the health of the cycle that made it.
Publishing swaps both in whole."""

from __future__ import annotations

import asyncio

from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import Snapshot
from exporter.polling.health import Health


class SnapshotStore:
    """Holds the current rendered snapshot. Replacing it is one reference assignment."""

    def __init__(self) -> None:
        self.exposition = Exposition.render(Snapshot())
        self.health = Health()
        self.ready = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        return self.exposition.snapshot

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        exposition = await asyncio.to_thread(Exposition.render, snapshot)
        self.exposition, self.health = exposition, health
        if health.complete_cycles > 0:
            self.ready.set()
