"""What one account's cycle costs the exporter when it serves several: its own render, then
composing every account's last render into the page scrapes read (no re-render of the others).

    .venv/bin/python benchmarks/bench_accounts.py [accounts] [participants per account]
"""

from __future__ import annotations

import sys
from dataclasses import replace

from bench_pipeline import synthetic, timed

from exporter.metrics.accounts import compose
from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import Snapshot, meeting_reading
from exporter.polling.targets import MeetingTarget
from exporter.zoom.models import Participant


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    per_account = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    parsed = [[Participant.model_validate(p) for p in people] for people in synthetic(per_account)]
    readings = tuple(
        meeting_reading(MeetingTarget("meeting", str(i), str(i)), people, 0.0)
        for i, people in enumerate(parsed)
    )
    snapshots = [Snapshot(readings, account=f"account-{n}") for n in range(accounts)]
    print(f"{accounts} accounts x {per_account} participants")
    rendered = [Exposition.render(s) for s in snapshots]
    timed("render one account (its cycle)", lambda: Exposition.render(snapshots[0]))
    composed = timed("compose every account's render", lambda: compose(rendered))
    everything = Snapshot(tuple(m for _ in snapshots for m in readings))
    timed(
        "render all accounts at once (avoided)",
        lambda: Exposition.render(replace(everything, account="all")),
    )
    size = composed.text.size
    deflated = len(composed.text.deflated[0])
    print(f"composed body {size / 2**20:.1f} MiB ({deflated / 2**20:.1f} MiB deflated)")


if __name__ == "__main__":
    main()
