"""Personal data by choice: the label allowlist and pseudonyms, at the snapshot and exposition."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from exporter.metrics.exposition import Exposition
from exporter.metrics.snapshot import Snapshot, meeting_reading, participant_reading
from exporter.polling.health import Health
from exporter.polling.targets import MeetingTarget
from exporter.privacy import (
    DEFAULT_PARTICIPANT_LABELS,
    NEVER_EXPORTED,
    PARTICIPANT_LABELS,
    PSEUDONYM_LENGTH,
    ParticipantPrivacy,
    pseudonym,
)
from exporter.web import status_page
from exporter.zoom.models import Participant

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
PERSON = Participant.model_validate(
    {
        "user_id": "16778240",
        "user_name": "Zoë Okafor ",
        "email": "Zoe.Okafor@Example.com",
        "device": "Mac",
        "ip_address": "192.0.2.7",
        "location": "Lagos (NG)",
        "network_type": "Wifi",
        "data_center": "Germany (FR)",
        "pc_name": "zoe-mbp",
        "domain": "corp.example",
        "mac_addr": "00:11:22:33:44:55",
        "harddisk_id": "HD-424242",
        "version": "6.2.3",
        "join_time": "2026-11-18T11:00:00Z",
    }
)
TARGET = MeetingTarget("meeting", "85746065432", "uuid==", topic="Sync", host="Zoë Okafor")
SECRETS = ("Zoë Okafor", "Zoe.Okafor@Example.com", "zoe.okafor@example.com")


def exposition_of(privacy: ParticipantPrivacy) -> str:
    reading = meeting_reading(TARGET, [PERSON], 1.0, privacy)
    return Exposition.render(Snapshot(meetings=(reading,))).text.plain.decode()


def info_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("zoom_participant_info{"))


def test_default_labels_leave_out_the_opt_in_and_machine_fields() -> None:
    line = info_line(exposition_of(ParticipantPrivacy()))
    for name in DEFAULT_PARTICIPANT_LABELS:
        assert f'{name}="' in line
    for name in ("email", "ip_address", "location", "pc_name", "domain", *NEVER_EXPORTED):
        assert f"{name}=" not in line
    for value in ("192.0.2.7", "Lagos", "zoe-mbp", "corp.example", "00:11:22", "HD-424242"):
        assert value not in exposition_of(ParticipantPrivacy())
    assert 'user_name="Zoë Okafor "' in line  # as Zoom gave it


@pytest.mark.parametrize("label", PARTICIPANT_LABELS)
def test_each_label_alone(label: str) -> None:
    text = exposition_of(ParticipantPrivacy(labels=(label,)))
    line = info_line(text)
    value = getattr(PERSON, label)
    assert f'{label}="{value}"' in line
    others = [n for n in PARTICIPANT_LABELS if n != label]
    assert not any(f"{name}=" in line for name in others)
    assert set(re.findall(r"(\w+)=", line)) == {
        "account",
        "kind",
        "meeting_id",
        "participant_id",
        label,
    }


def test_no_descriptive_labels_at_all() -> None:
    line = info_line(exposition_of(ParticipantPrivacy(labels=())))
    assert set(re.findall(r"(\w+)=", line)) == {"account", "kind", "meeting_id", "participant_id"}
    assert 'host=""' in exposition_of(ParticipantPrivacy(labels=()))  # the host is a name too


@pytest.mark.parametrize("name", [*NEVER_EXPORTED, "user_id", "nope"])
def test_never_exported_fields_cannot_be_asked_for(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ParticipantPrivacy(labels=("user_name", name))


def test_pseudonyms_replace_names_and_emails_everywhere() -> None:
    privacy = ParticipantPrivacy(labels=PARTICIPANT_LABELS, key=KEY)
    text = exposition_of(privacy)
    for secret in SECRETS:
        assert secret not in text
    name, email = pseudonym(KEY, "Zoë Okafor"), pseudonym(KEY, "zoe.okafor@example.com")
    line = info_line(text)
    assert f'user_name="{name}"' in line and f'email="{email}"' in line
    # the host is the same person: the same pseudonym, so a host can be found among participants
    assert f'host="{name}"' in text
    # the other fields are left as they are
    assert 'device="Mac"' in line and 'pc_name="zoe-mbp"' in line
    reading = meeting_reading(TARGET, [PERSON], 1.0, privacy)
    health = Health(state="ok", up=True, complete_cycles=1)
    html = status_page.render(Snapshot(meetings=(reading,)), health, "/metrics")
    assert name in html
    assert not any(secret in html for secret in SECRETS)


def test_pseudonym_is_a_keyed_hmac_of_fixed_length() -> None:
    value = pseudonym(KEY, "Zoë Okafor")
    assert re.fullmatch(f"[0-9a-f]{{{PSEUDONYM_LENGTH}}}", value)
    expected = hmac.new(KEY, "Zoë Okafor".encode(), hashlib.sha256).hexdigest()[:16]
    assert value == expected
    assert pseudonym(KEY, "Zoë Okafor") == value  # stable for one key
    assert pseudonym(OTHER_KEY, "Zoë Okafor") != value  # another key, another pseudonym
    assert pseudonym(KEY, "Zoë Okafor2") != value


def test_one_person_one_pseudonym_across_spellings_and_meetings() -> None:
    privacy = ParticipantPrivacy(labels=("user_name", "email"), key=KEY)
    again = PERSON.model_copy(
        update={"user_id": "99", "user_name": "Zoë Okafor", "email": "zoe.okafor@EXAMPLE.com"}
    )
    first, second = participant_reading(PERSON, privacy), participant_reading(again, privacy)
    assert first is not None and second is not None
    assert first.info == second.info
    other_key = participant_reading(PERSON, ParticipantPrivacy(("user_name", "email"), OTHER_KEY))
    assert other_key is not None and other_key.info != first.info


def test_empty_values_stay_empty() -> None:
    anonymous = Participant.model_validate({"user_id": "7", "user_name": "", "email": "  "})
    reading = participant_reading(anonymous, ParticipantPrivacy(("user_name", "email"), KEY))
    assert reading is not None
    assert dict(reading.info) == {"user_name": "", "email": ""}


def test_the_key_never_shows_in_a_repr() -> None:
    assert "kkkk" not in repr(ParticipantPrivacy(key=KEY))
