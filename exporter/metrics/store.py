"""The current snapshot, rendered: what every scrape reads. Publishing swaps it in whole."""

from __future__ import annotations

import asyncio

from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import Snapshot


class SnapshotStore:
    """Holds the current rendered snapshot. Replacing it is one reference assignment."""

    def __init__(self) -> None:
        self.exposition = Exposition(Snapshot()).prerender()
        self.ready = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        return self.exposition.snapshot

    async def publish(self, snapshot: Snapshot) -> None:
        exposition = await asyncio.to_thread(Exposition(snapshot).prerender)
        self.exposition = exposition
        if snapshot.complete_cycles > 0:
            self.ready.set()
