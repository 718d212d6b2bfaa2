"""The landing page: plain HTML, no JavaScript, rendered from the current snapshot."""

from __future__ import annotations

from html import escape

from exporter import __version__
from exporter.snapshot import Snapshot


def render(snapshot: Snapshot, telemetry_path: str) -> str:
    path = escape(telemetry_path)
    state = "up" if snapshot.up else "down"
    participants = sum(len(m.participants) for m in snapshot.meetings)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Zoom QoS Exporter</title></head><body>"
        f"<h1>Zoom QoS Exporter</h1><p>Version {escape(__version__)}. "
        f"Zoom API: {state}. Meetings: {len(snapshot.meetings)}. "
        f"Participants: {participants}.</p>"
        f'<ul><li><a href="{path}">Metrics</a></li>'
        '<li><a href="/-/healthy">Health</a></li><li><a href="/-/ready">Readiness</a></li>'
        "</ul></body></html>\n"
    )
