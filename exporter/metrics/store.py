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
        self.generation = 0  # one more at each publish: what caches of the page compare

    @property
    def snapshot(self) -> Snapshot:
        return self.exposition.snapshot

    async def publish(self, snapshot: Snapshot, health: Health) -> None:
        exposition = await asyncio.to_thread(Exposition.render, snapshot)
        previous = [self.exposition]
        self.exposition, self.health = exposition, health
        self.generation += 1
        if health.complete_cycles > 0:
            self.ready.set()
        # The previous snapshot is freed in a worker thread, not on the event loop (a scrape
        # still writing its bytes holds only those). Its readings outlive it in the poller
        # when they were kept, and are freed with the next one otherwise.
        await asyncio.to_thread(previous.clear)
