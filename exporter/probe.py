"""`probe`: fetch one meeting's (or one participant's) QoS once and print the parsed readings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import AbstractAsyncContextManager
from typing import TextIO

from exporter.metrics.snapshot import ParticipantReading, StreamReading, participant_reading
from exporter.zoom.client import ZoomClient
from exporter.zoom.errors import ZoomAPIError, ZoomError
from exporter.zoom.models import Kind

_STREAM_FIELDS = (
    ("bitrate_bytes", "bitrate", "B/s"),
    ("latency_seconds", "latency", "s"),
    ("jitter_seconds", "jitter", "s"),
    ("avg_loss_ratio", "loss_avg", ""),
    ("max_loss_ratio", "loss_max", ""),
    ("width_pixels", "width", "px"),
    ("height_pixels", "height", "px"),
    ("frame_rate", "fps", ""),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meeting", required=True, help="meeting (or webinar) id or UUID")
    parser.add_argument("--participant", help="one participant id: uses the single endpoint")
    parser.add_argument(
        "--webinar",
        action="store_true",
        help="the id is a webinar (when Zoom does not know the id as one kind, probe tries the "
        "other and says which flag to use, exit code 2)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--account", help="the name of the account to ask, from the accounts list (default: first)"
    )


async def fetch(
    client: ZoomClient, kind: Kind, meeting: str, participant: str | None
) -> list[ParticipantReading]:
    if participant is not None:
        found = [await client.participant_qos(kind, meeting, participant)]
    else:
        found = await client.participants_qos(kind, meeting)
    readings = (participant_reading(p) for p in found)
    return [r for r in readings if r is not None]


def _stream_line(stream: StreamReading) -> str:
    values = []
    for attr, name, unit in _STREAM_FIELDS:
        value = getattr(stream, attr)
        if value is not None:
            values.append(f"{name}={value:g}{unit}")
    return f"  {stream.media}/{stream.stream}: " + (" ".join(values) or "(no values)")


def print_text(readings: list[ParticipantReading], out: TextIO) -> None:
    for reading in readings:
        name = dict(reading.info).get("user_name") or "(no name)"
        print(f"participant {reading.participant_id} {name}", file=out)
        for stream in reading.streams:
            print(_stream_line(stream), file=out)
        for process, stat, value in reading.cpu:
            print(f"  cpu/{process}/{stat}: {value:g}", file=out)
        for stat, value in reading.wifi_rssi:
            print(f"  wifi_rssi/{stat}: {value:g} dBm", file=out)
    print(f"{len(readings)} live participants", file=out)


EXIT_WRONG_KIND = 2  # a webinar id without --webinar, or a meeting id with it

_OTHER: dict[Kind, Kind] = {"meeting": "webinar", "webinar": "meeting"}
_USE = {"webinar": "use --webinar", "meeting": "leave out --webinar"}


async def live_as(client: ZoomClient, kind: Kind, meeting: str) -> bool:
    """Whether Zoom knows `meeting` as a live `kind` (one page of its participants)."""
    try:
        await client.participants_qos(kind, meeting, max_pages=1)
    except ZoomError:
        return False
    return True


async def run(
    args: argparse.Namespace, client_context: AbstractAsyncContextManager[ZoomClient]
) -> int:
    kind: Kind = "webinar" if args.webinar else "meeting"
    try:
        async with client_context as client:
            try:
                readings = await fetch(client, kind, args.meeting, args.participant)
            except ZoomAPIError as error:
                if not error.gone:
                    raise
                # Zoom answers 3001 both for an id that is not live and for a webinar asked
                # for as a meeting (or the other way round): ask the other endpoint which.
                other = _OTHER[kind]
                if await live_as(client, other, args.meeting):
                    print(
                        f"zoom-qos-exporter probe: {args.meeting} is a live {other}, not a "
                        f"{kind}: {_USE[other]}",
                        file=sys.stderr,
                    )
                    return EXIT_WRONG_KIND
                if args.participant is not None:
                    raise  # the participant may be the one missing: say no more than Zoom
                detail = error.detail.rstrip(".")
                raise ZoomError(error.endpoint, f"{detail} (nor is it a live {other})") from None
    except ZoomError as error:
        print(f"zoom-qos-exporter probe: {error}", file=sys.stderr)
        return 1
    if args.json:
        json.dump([dataclasses.asdict(r) for r in readings], sys.stdout, indent=2)
        print()
    else:
        print_text(readings, sys.stdout)
    return 0
