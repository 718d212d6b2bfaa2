"""What to poll: the configured ids and the discovered meetings, merged into one list of targets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from exporter.zoom.models import Kind, LiveMeeting, valid_utf8


@dataclass(frozen=True, slots=True)
class MeetingTarget:
    """A meeting or webinar to poll: its label id, the id used in API paths, and what we know."""

    kind: Kind
    meeting_id: str
    api_id: str
    topic: str = ""
    uuid: str = ""
    host: str = ""
    source: Literal["configured", "discovered"] = "configured"


def configured_targets(
    meeting_ids: Iterable[str], webinar_ids: Iterable[str]
) -> list[MeetingTarget]:
    # An environment variable that is not UTF-8 arrives with surrogates: never a label so.
    meetings, webinars = map(valid_utf8, meeting_ids), map(valid_utf8, webinar_ids)
    targets = [MeetingTarget("meeting", mid, mid) for mid in meetings]
    targets += [MeetingTarget("webinar", wid, wid) for wid in webinars]
    return targets


def discovered_target(kind: Kind, live: LiveMeeting) -> MeetingTarget | None:
    """A discovered meeting is labelled by its numeric id and polled by its UUID (this instance)."""
    label = live.id or live.uuid
    if not label:
        return None
    return MeetingTarget(
        kind=kind,
        meeting_id=label,
        api_id=live.uuid or label,
        topic=live.topic or "",
        uuid=live.uuid or "",
        host=live.host or "",
        source="discovered",
    )


def merge_targets(
    configured: list[MeetingTarget], discovered: Iterable[MeetingTarget]
) -> list[MeetingTarget]:
    """Configured ids first; a discovered meeting with the same id lends its details."""
    by_key: dict[tuple[str, str], MeetingTarget] = {}
    for target in configured:
        by_key.setdefault((target.kind, target.meeting_id), target)
    for found in discovered:
        keys = [(found.kind, found.meeting_id), (found.kind, found.uuid)]
        match = next((k for k in keys if k in by_key), None)
        if match is None:
            by_key[(found.kind, found.meeting_id)] = found
        elif by_key[match].source == "configured":
            mine = by_key[match]
            by_key[match] = MeetingTarget(
                mine.kind, mine.meeting_id, mine.api_id, found.topic, found.uuid, found.host
            )
    return list(by_key.values())
