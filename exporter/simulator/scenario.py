"""A deterministic world of live Zoom meetings and webinars, driven by a clock.

The world is a pure function of the seed and the clock's first reading: every minute of scenario
time (a "tick") applies seeded churn (someone leaves, someone joins or rejoins) and, every
`ROTATE_TICKS` ticks, one meeting ends and a new one starts. Queries filter by the time asked, so
the same seed and the same clock readings always give the same responses.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Final

from exporter.simulator.people import Identity, make_identity, room_system, seed_identity
from exporter.simulator.qos import JsonDict, is_poor_sample, sample, seed_sample, unit_hash
from exporter.simulator.timefmt import hms, iso

SEED_MEETING_ID: Final = 85746065432
SEED_MEETING_UUID: Final = "4q1FpGXrT2y9B0xvN3kZpA=="
SEED_MEETING_TOPIC: Final = "Weekly Sync"
SEED_PARTICIPANT_ID: Final = "16778240"
SEED_PARTICIPANT_NAME: Final = "Seed Sample"
# The second meeting's UUID begins with "/" and contains "//": it must be double-encoded.
SLASH_MEETING_UUID: Final = "/xk3//T8QZe2mRv+Lb0qWA=="
SLASH_MEETING_TOPIC: Final = "Design Review"
WEBINAR_TOPIC: Final = "Quarterly All-Hands"

TICK_SECONDS: Final = 60
ROTATE_TICKS: Final = 20  # a meeting ends and another starts every 20 minutes
LEFT_VISIBLE_SECONDS: Final = 300  # participants who left stay listed (with leave_time) this long
SAMPLES_KEPT: Final = 3
MIN_TOTAL: Final = 42
MAX_TOTAL: Final = 66
_BOUNDS: Final = {"meeting": (4, 15), "webinar": (20, 30)}
_USER_ID_BASE: Final = 16778240
_USER_ID_STEP: Final = 1024
_PRUNE_SECONDS: Final = 3600
_TOPICS: Final = (
    "Sprint Planning", "Incident Review", "Sales Standup", "1:1", "Architecture Forum",
    "Hiring Sync", "Customer Call", "Budget Review", "Office Hours",
)  # fmt: skip

MeetingRef = int | str


def canonical_kind(kind: str) -> str:
    """ "meeting"/"meetings" -> "meeting"; "webinar"/"webinars" -> "webinar"."""
    name = kind.lower().rstrip("s")
    if name not in _BOUNDS:
        raise ValueError(f"unknown kind {kind!r}: use 'meeting' or 'webinar'")
    return name


@dataclass(eq=False)
class Attendance:
    """One entry of a participant listing: a join, and maybe the matching leave."""

    serial: int
    identity: Identity
    join_time: float
    leave_time: float | None = None
    pinned: bool = False  # never leaves through churn (the seed and the poor participants)
    seed: bool = False

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    @property
    def poor(self) -> bool:
        return self.identity.media.poor

    def present(self, at: float) -> bool:
        return self.join_time <= at and (self.leave_time is None or self.leave_time > at)

    def visible(self, at: float) -> bool:
        if self.join_time > at:
            return False
        return self.leave_time is None or at < self.leave_time + LEFT_VISIBLE_SECONDS


@dataclass(eq=False)
class Meeting:
    """A meeting or webinar instance."""

    kind: str
    id: int
    uuid: str
    topic: str
    host: str
    host_email: str
    start_time: float
    rotating: bool = True
    end_time: float | None = None
    sharer: str | None = None  # user_id of the participant sharing their screen
    entries: list[Attendance] = field(default_factory=list)
    users: int = 0

    def live(self, at: float) -> bool:
        return self.start_time <= at and (self.end_time is None or self.end_time > at)

    def active(self) -> list[Attendance]:
        """Entries that have not left, in the state generated so far."""
        return [e for e in self.entries if e.leave_time is None]

    def next_user_id(self) -> str:
        self.users += 1
        return str(_USER_ID_BASE + _USER_ID_STEP * (self.users - 1))


def _uuid(rng: random.Random, slashy: bool = False) -> str:
    text = base64.b64encode(rng.randbytes(16)).decode()
    if slashy:
        text = "/" + text[1:5] + "//" + text[7:]
    return text


def is_poor(participant: JsonDict) -> bool:
    """True if the participant's newest sample is beyond the poor thresholds (see qos.py)."""
    samples = [s for s in participant.get("user_qos", []) if isinstance(s, dict)]
    if not samples:
        return False
    return is_poor_sample(max(samples, key=lambda s: str(s.get("date_time", ""))))


class Scenario:
    """The simulated account's live meetings and webinars; deterministic for (seed, clock)."""

    def __init__(
        self, seed: int = 1, clock: Callable[[], float] = time.time, *, fixed_ids: bool = True
    ) -> None:
        """`fixed_ids` False: the seed meeting and the slash-UUID meeting get ids of the seed's
        own too (another account's world, with no meeting id in common with this one)."""
        self.seed = seed
        self.fixed_ids = fixed_ids
        self.clock = clock
        self.origin = float(clock())
        self._meetings: list[Meeting] = []
        self._serial = 0
        self._ticks = 0
        self._build()

    # ----- public queries -----

    def now(self) -> float:
        """Read the clock once and bring the world up to that time."""
        at = float(self.clock())
        self.advance(at)
        return at

    def live_meetings(self, kind: str = "meeting", at: float | None = None) -> list[JsonDict]:
        """The discovery entries (`/metrics/meetings` or `/metrics/webinars`) live now."""
        at = self.now() if at is None else at
        return [self.render_meeting(m, at) for m in self.meetings(kind, at)]

    def participants(self, kind: str, meeting_id: MeetingRef) -> list[JsonDict]:
        """What the participants QoS listing holds now, in listing order."""
        at = self.now()
        meeting = self._require(kind, meeting_id, at)
        return [self.render_participant(meeting, e, at) for e in self.listing(meeting, at)]

    def participant(self, kind: str, meeting_id: MeetingRef, user_id: str) -> JsonDict | None:
        """The single-participant QoS object now, or None."""
        at = self.now()
        meeting = self._require(kind, meeting_id, at)
        entry = self.find_participant(meeting, user_id, at)
        return None if entry is None else self.render_participant(meeting, entry, at, single=True)

    def participant_count(self, kind: str | None = None) -> int:
        """Participants present now (not the recently left) across live meetings."""
        at = self.now()
        return sum(len(self._present(m, at)) for m in self._live(kind, at))

    def poor_participants(self, kind: str | None = None) -> list[tuple[str, int, str]]:
        """(kind, meeting id, user_id) of the present participants with poor quality."""
        at = self.now()
        return [
            (m.kind, m.id, e.user_id)
            for m in self._live(kind, at)
            for e in self._present(m, at)
            if e.poor
        ]

    # ----- public changes (for tests and the demo) -----

    def end_meeting(self, meeting_id: MeetingRef, kind: str | None = None) -> None:
        """End a live meeting now: it leaves discovery and its QoS calls answer 404/3001."""
        at = self.now()
        kinds = [kind] if kind else list(_BOUNDS)
        for name in kinds:
            meeting = self.resolve(name, meeting_id, at)
            if meeting is not None:
                self._end(meeting, at)
                return
        raise KeyError(f"no live meeting {meeting_id!r}")

    def add_meeting(
        self,
        kind: str = "meeting",
        *,
        topic: str = "Ad-hoc Meeting",
        participants: int = 5,
        poor: int = 0,
        meeting_id: int | None = None,
        uuid: str | None = None,
    ) -> JsonDict:
        """Start a meeting that began two minutes ago (so it has samples); returns its entry."""
        at = self.now()
        rng = random.Random(f"{self.seed}:added:{len(self._meetings)}")
        start = at - 120
        meeting = self._new_meeting(rng, canonical_kind(kind), topic, start, uuid=uuid)
        if meeting_id is not None:
            meeting.id = meeting_id
        for index in range(participants):
            self._join_new(rng, meeting, start + index, poor=index < poor, pinned=index < poor)
        return self.render_meeting(meeting, at)

    def add_participant(
        self, kind: str, meeting_id: MeetingRef, *, poor: bool = False, ago: float = 90
    ) -> str:
        """A new participant who joined `ago` seconds ago; returns their user_id."""
        at = self.now()
        meeting = self._require(kind, meeting_id, at)
        rng = random.Random(f"{self.seed}:person:{self._serial}")
        return self._join_new(rng, meeting, at - ago, poor=poor).user_id

    def remove_participant(self, kind: str, meeting_id: MeetingRef, user_id: str) -> None:
        """The participant leaves now (they stay listed with a leave_time for a while)."""
        at = self.now()
        meeting = self._require(kind, meeting_id, at)
        entry = self.find_participant(meeting, user_id, at)
        if entry is None or entry.leave_time is not None:
            raise KeyError(f"participant {user_id!r} is not present")
        self._leave(meeting, entry, at)

    # ----- used by the HTTP app -----

    def meetings(self, kind: str, at: float) -> list[Meeting]:
        """Live meetings of a kind, oldest first."""
        return self._live(kind, at)

    def resolve(self, kind: str, ref: MeetingRef, at: float) -> Meeting | None:
        """A live meeting by numeric id (the latest instance) or UUID."""
        text = str(ref)
        found = [
            m
            for m in self._live(kind, at)
            if m.uuid == text or (text.isdigit() and m.id == int(text))
        ]
        return max(found, key=lambda m: m.start_time) if found else None

    def listing(self, meeting: Meeting, at: float) -> list[Attendance]:
        """The entries the participant listing holds at `at`, in join order."""
        visible = [e for e in meeting.entries if e.visible(at)]
        return sorted(visible, key=lambda e: (e.join_time, e.serial))

    def find_participant(self, meeting: Meeting, user_id: str, at: float) -> Attendance | None:
        """The latest visible entry of a user_id (or of a Zoom user id)."""
        found = [e for e in self.listing(meeting, at) if user_id in (e.user_id, e.identity.zoom_id)]
        return found[-1] if found else None

    def render_meeting(self, meeting: Meeting, at: float) -> JsonDict:
        """A discovery entry."""
        gateways = {e.identity.media.gateway for e in meeting.entries}
        return {
            "uuid": meeting.uuid,
            "id": meeting.id,
            "topic": meeting.topic,
            "host": meeting.host,
            "email": meeting.host_email,
            "user_type": "Licensed",
            "start_time": iso(meeting.start_time),
            "end_time": "",
            "duration": hms(at - meeting.start_time),
            "participants": len(self._present(meeting, at)),
            "has_pstn": False,
            "has_voip": True,
            "has_3rd_party_audio": False,
            "has_video": True,
            "has_screen_share": meeting.sharer is not None,
            "has_recording": False,
            "has_sip": "crc" in gateways,
            "has_archiving": False,
            "dept": "",
            "custom_keys": [],
        }

    def render_participant(
        self, meeting: Meeting, entry: Attendance, at: float, *, single: bool = False
    ) -> JsonDict:
        """A participant object as the list (or, with `single`, the one-participant) API has it."""
        ident = entry.identity
        left = entry.leave_time is not None and entry.leave_time <= at
        body: JsonDict = {"id": ident.zoom_id} if single else {}
        body.update(ident.fields())
        if single:
            body["internal_ip_addresses"] = [ident.internal_ip]
        body["join_time"] = iso(entry.join_time)
        if left or not single:  # the single endpoint leaves the key out for present people
            body["leave_time"] = iso(entry.leave_time or 0) if left else ""
        body.update(ident.machine())
        body["user_qos"] = self._samples(meeting, entry, at)
        return body

    def advance(self, at: float) -> None:
        """Apply every tick up to `at` (ticks only move forward)."""
        while self.origin + (self._ticks + 1) * TICK_SECONDS <= at:
            self._ticks += 1
            self._tick(self._ticks, self.origin + self._ticks * TICK_SECONDS)

    # ----- internals: building -----

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *parts))))

    def _build(self) -> None:
        t0 = self.origin
        self._build_seed_meeting(t0)
        self._build_design_review(t0)
        self._build_onboarding(t0)
        self._build_webinar(t0)

    def _new_meeting(
        self,
        rng: random.Random,
        kind: str,
        topic: str,
        start: float,
        *,
        uuid: str | None = None,
        rotating: bool = True,
    ) -> Meeting:
        host = make_identity(rng, "0", "host")
        meeting = Meeting(
            users=0 if uuid == SEED_MEETING_UUID else rng.randint(1, 60),
            kind=kind,
            id=rng.randint(81_000_000_000, 89_999_999_999),
            uuid=uuid or _uuid(rng, slashy=rng.random() < 0.3),
            topic=topic,
            host=host.user_name or "Host",
            host_email=host.email or "host@example.com",
            start_time=start,
            rotating=rotating,
        )
        self._meetings.append(meeting)
        return meeting

    def _attend(
        self, meeting: Meeting, identity: Identity, at: float, *, pinned: bool = False
    ) -> Attendance:
        self._serial += 1
        entry = Attendance(self._serial, identity, at, pinned=pinned)
        meeting.entries.append(entry)
        return entry

    def _join_new(
        self,
        rng: random.Random,
        meeting: Meeting,
        at: float,
        *,
        poor: bool = False,
        pinned: bool = False,
        web: bool = False,
    ) -> Attendance:
        user_id = meeting.next_user_id()
        key = f"{self.seed}:{meeting.id}:{user_id}"
        identity = make_identity(rng, user_id, key, poor=poor, web=web)
        if meeting.kind == "webinar" and len(meeting.entries) >= 3:  # attendees: camera off
            identity = replace(identity, media=replace(identity.media, video_on=False))
        return self._attend(meeting, identity, at, pinned=pinned or poor)

    def _populate(
        self, rng: random.Random, meeting: Meeting, count: int, latest: float, poor: int = 0
    ) -> None:
        """`count` people joined between the start and `latest`; the first `poor` are poor."""
        span = max(1.0, latest - meeting.start_time)
        for index in range(count):
            at = meeting.start_time + span * index / count
            self._join_new(rng, meeting, at, poor=index >= count - poor)
        first = meeting.active()[0]
        meeting.sharer = first.user_id if rng.random() < 0.7 else None

    def _build_seed_meeting(self, t0: float) -> None:
        rng = self._rng("meeting", 1)
        meeting = self._new_meeting(
            rng,
            "meeting",
            SEED_MEETING_TOPIC,
            t0 - 433,
            uuid=SEED_MEETING_UUID if self.fixed_ids else None,
            rotating=False,
        )
        if self.fixed_ids:
            meeting.id = SEED_MEETING_ID
        user_id = meeting.next_user_id()
        key = f"{self.seed}:{meeting.id}:{user_id}"
        identity = seed_identity(user_id, SEED_PARTICIPANT_NAME, key)
        entry = self._attend(meeting, identity, t0 - 410, pinned=True)
        entry.seed = True
        self._populate(rng, meeting, 7, t0 - 80)
        meeting.sharer = meeting.entries[1].user_id

    def _build_design_review(self, t0: float) -> None:
        rng = self._rng("meeting", 2)
        meeting = self._new_meeting(rng, "meeting", SLASH_MEETING_TOPIC, t0 - 720)
        if self.fixed_ids:
            meeting.uuid = SLASH_MEETING_UUID
        self._populate(rng, meeting, 10, t0 - 200, poor=1)
        self._join_new(rng, meeting, t0 - 190, web=True)
        again = self._join_new(rng, meeting, t0 - 600)  # left and rejoined: listed twice
        again.leave_time = t0 - 150
        self._attend(meeting, again.identity, t0 - 100)

    def _build_onboarding(self, t0: float) -> None:
        rng = self._rng("meeting", 3)
        meeting = self._new_meeting(rng, "meeting", "Customer Onboarding", t0 - 250)
        self._populate(rng, meeting, 4, t0 - 90, poor=1)
        user_id = meeting.next_user_id()
        room = room_system(rng, user_id, f"{self.seed}:{meeting.id}:{user_id}")
        self._attend(meeting, room, t0 - 200)
        gone = self._join_new(rng, meeting, t0 - 230)  # recently left: listed with leave_time
        gone.leave_time = t0 - 60

    def _build_webinar(self, t0: float) -> None:
        rng = self._rng("webinar", 1)
        meeting = self._new_meeting(rng, "webinar", WEBINAR_TOPIC, t0 - 900, rotating=False)
        meeting.uuid = _uuid(rng)
        self._populate(rng, meeting, 25, t0 - 75, poor=1)

    # ----- internals: evolution -----

    def _tick(self, index: int, at: float) -> None:
        rng = self._rng("tick", index)
        if index % ROTATE_TICKS == 0:
            self._rotate(rng, at)
        total = sum(len(m.active()) for m in self._meetings if m.end_time is None)
        leave = (rng.random() < 0.35 or total >= MAX_TOTAL) and total > MIN_TOTAL
        join = (rng.random() < 0.35 or total <= MIN_TOTAL) and total < MAX_TOTAL
        if leave:
            self._churn_leave(rng, at + rng.uniform(0, 50))
        if join:
            self._churn_join(rng, at + rng.uniform(0, 50))
        if index % 10 == 0:
            self._prune(at - _PRUNE_SECONDS)

    def _running(self) -> list[Meeting]:
        return [m for m in self._meetings if m.end_time is None]

    def _churn_leave(self, rng: random.Random, at: float) -> None:
        choices = [
            (m, e)
            for m in self._running()
            if len(m.active()) > _BOUNDS[m.kind][0]
            for e in m.active()
            if not e.pinned and e.join_time < at
        ]
        if choices:
            meeting, entry = rng.choice(choices)
            self._leave(meeting, entry, at)

    def _churn_join(self, rng: random.Random, at: float) -> None:
        rooms = [m for m in self._running() if len(m.active()) < _BOUNDS[m.kind][1]]
        if not rooms:
            return
        meeting = rng.choice(rooms)
        present = {e.user_id for e in meeting.active()}
        back = [
            e
            for e in meeting.entries
            if e.leave_time is not None
            and at - 240 < e.leave_time < at
            and e.user_id not in present
        ]
        if back and rng.random() < 0.4:
            self._attend(meeting, rng.choice(back).identity, at)
        else:
            self._join_new(rng, meeting, at)

    def _rotate(self, rng: random.Random, at: float) -> None:
        rotating = [m for m in self._running() if m.rotating and m.kind == "meeting"]
        if not rotating:
            return
        old = min(rotating, key=lambda m: m.start_time)
        people = len(old.active())
        poor = sum(1 for e in old.active() if e.poor)
        self._end(old, at)
        meeting = self._new_meeting(rng, "meeting", rng.choice(_TOPICS), at)
        count = max(4, min(12, people + rng.randint(-2, 2)))
        for index in range(count):
            self._join_new(rng, meeting, at + index * rng.uniform(3, 15), poor=index < poor)
        meeting.sharer = meeting.entries[0].user_id if rng.random() < 0.5 else None

    def _end(self, meeting: Meeting, at: float) -> None:
        meeting.end_time = at
        for entry in meeting.active():
            entry.leave_time = at

    def _leave(self, meeting: Meeting, entry: Attendance, at: float) -> None:
        entry.leave_time = at
        if meeting.sharer == entry.user_id:
            meeting.sharer = None

    def _prune(self, before: float) -> None:
        self._meetings = [m for m in self._meetings if m.end_time is None or m.end_time >= before]
        for meeting in self._meetings:
            meeting.entries = [
                e for e in meeting.entries if e.leave_time is None or e.leave_time >= before
            ]

    # ----- internals: queries -----

    def _live(self, kind: str | None, at: float) -> list[Meeting]:
        name = canonical_kind(kind) if kind else None
        return [m for m in self._meetings if m.live(at) and (name is None or m.kind == name)]

    def _present(self, meeting: Meeting, at: float) -> list[Attendance]:
        return [e for e in meeting.entries if e.present(at)]

    def _require(self, kind: str, ref: MeetingRef, at: float) -> Meeting:
        meeting = self.resolve(kind, ref, at)
        if meeting is None:
            raise KeyError(f"no live {canonical_kind(kind)} {ref!r}")
        return meeting

    def _minutes(self, entry: Attendance, at: float) -> Iterator[int]:
        last = int(min(at, entry.leave_time or at) // 60)
        for minute in range(last, last - SAMPLES_KEPT, -1):
            if minute * 60 >= entry.join_time:
                yield minute

    def _samples(self, meeting: Meeting, entry: Attendance, at: float) -> list[JsonDict]:
        minutes = list(self._minutes(entry, at))
        if entry.seed:
            samples = [seed_sample(m) for m in minutes]
        else:
            sharing = meeting.sharer == entry.user_id
            media = replace(
                entry.identity.media,
                sharing=sharing,
                viewing_share=meeting.sharer is not None and not sharing,
            )
            samples = [sample(media, m) for m in minutes]
        return _shuffled(samples, unit_hash(self.seed, entry.serial, minutes[0] if minutes else 0))


def _shuffled(samples: list[JsonDict], roll: float) -> list[JsonDict]:
    """Zoom does not promise time order: rotate the list by a seeded amount."""
    if len(samples) < 2:
        return samples
    shift = int(roll * len(samples))
    rotated = samples[shift:] + samples[:shift]
    return rotated[::-1] if roll > 0.5 else rotated
