"""Several accounts' QoS served as one exposition, without rendering any of them again.

Each account's SnapshotStore renders only its own cycles. What a scrape reads is composed from
every account's latest rendered pieces: family by family, one HELP/TYPE header, then each
account's sample lines, in account-name order. The deflated pieces are laid one after another
as they are (each is byte-aligned and refers only to its own bytes), so composing costs a pass
of CRC-32 over the body, never a render or a compression. One account with its own cycle
changes nothing in the others' bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.metrics.exposition import Exposition, Form, forms
from exporter.metrics.snapshot import Snapshot
from exporter.metrics.store import SnapshotStore, in_daemon_thread
from exporter.polling.health import Health


@dataclass(frozen=True)
class Composed:
    """The exposition a scrape reads: the text format and OpenMetrics forms."""

    text: Form
    openmetrics: Form

    def form(self, *, openmetrics: bool) -> Form:
        return self.openmetrics if openmetrics else self.text


def compose(expositions: Sequence[Exposition]) -> Composed:
    """One exposition of several accounts' renders: each family's header once, then every
    account's lines, still deflated; the CRC is combined, not recomputed. Without any account,
    every family's header and no sample."""
    if len(expositions) == 1:
        only = expositions[0]
        return Composed(only.text, only.openmetrics)
    return Composed(*forms([e.families for e in expositions]))


class AccountsStore:
    """What the web layer reads when the daemon polls several accounts: each account's store,
    by name, and the exposition composed from their latest renders."""

    def __init__(self) -> None:
        self.stores: dict[str, SnapshotStore] = {}
        self.exposition = compose([])
        self.ready = asyncio.Event()
        self._asked = self._applied = 0  # compositions asked for, and the newest assigned
        self._composing: asyncio.Future[None] | None = None

    def set_stores(self, stores: dict[str, SnapshotStore]) -> None:
        """The accounts served now (a reload adds and removes some); composes at once."""
        self.stores = dict(sorted(stores.items()))
        self._assign(self._take(), compose([s.exposition for s in self.stores.values()]))

    def _take(self) -> int:
        self._asked += 1
        return self._asked

    def _assign(self, ticket: int, composed: Composed) -> None:
        if ticket > self._applied:  # a later composition may finish first: keep the newest
            self._applied = ticket
            self.exposition = composed
        # Ready once every account has finished a cycle (at once on a replica without any).
        if all(s.ready.is_set() for s in self.stores.values()):
            self.ready.set()

    async def refresh(self) -> None:
        """Compose again after an account published; return once the page includes it.

        Off the event loop when there are several accounts (the CRC pass over a large body
        takes milliseconds), and one composition at a time: publishes that arrive while one
        runs are all taken by the next, so a burst of cycles costs two, not one each."""
        ticket = self._take()
        while self._applied < ticket:
            if self._composing is None:
                self._composing = asyncio.ensure_future(self._compose_latest())
            await asyncio.shield(self._composing)

    async def _compose_latest(self) -> None:
        try:
            ticket = self._asked
            expositions = [s.exposition for s in self.stores.values()]
            if len(expositions) <= 1:
                composed = compose(expositions)
            else:
                composed = await in_daemon_thread(lambda: compose(expositions))
            self._assign(ticket, composed)
        finally:
            self._composing = None

    def overdue(self) -> float | None:
        """The longest an account's polling has been stuck, if any is (see SnapshotStore)."""
        ages = [age for s in self.stores.values() if (age := s.overdue()) is not None]
        return max(ages) if ages else None

    def groups(self) -> tuple[tuple[str, Snapshot, Health], ...]:
        """Each account's name, QoS and health, for the status page."""
        return tuple((name, s.snapshot, s.health) for name, s in self.stores.items())
