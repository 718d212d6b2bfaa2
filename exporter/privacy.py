"""Which personal data leaves the exporter: the labels of zoom_participant_info, and pseudonyms.

Every participant's descriptive fields pass through one `ParticipantPrivacy` while the snapshot
is built, so a field that is not allowed never reaches /metrics, the status page or the logs.
The host's name on zoom_meeting_info follows `user_name`. Nothing here does I/O: the key is
handed in by the settings.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

# Exported unless the setting says otherwise: what a dashboard needs to tell people apart.
DEFAULT_PARTICIPANT_LABELS: Final = (
    "user_name",
    "device",
    "network_type",
    "data_center",
    "version",
)
# Exported only when listed in ZOOM_EXPORTER_PARTICIPANT_LABELS.
OPT_IN_PARTICIPANT_LABELS: Final = ("email", "ip_address", "location", "pc_name", "domain")
PARTICIPANT_LABELS: Final = DEFAULT_PARTICIPANT_LABELS + OPT_IN_PARTICIPANT_LABELS
# Identify a machine, not a call: never exported, whatever the setting says.
NEVER_EXPORTED: Final = ("mac_addr", "harddisk_id")
# Replaced by a pseudonym when ZOOM_EXPORTER_PSEUDONYMIZE is on.
PSEUDONYMIZED: Final = frozenset({"user_name", "email"})
PSEUDONYM_LENGTH: Final = 16  # hex characters: the first 64 bits of the HMAC-SHA256
MIN_KEY_LENGTH: Final = 16  # characters of ZOOM_EXPORTER_PSEUDONYMIZE_KEY

# How a value is normalised before hashing, so one person gets one pseudonym: Zoom's names
# may carry trailing spaces, and e-mail addresses are not case-sensitive in practice.
_NORMALISE: Final[dict[str, Callable[[str], str]]] = {
    "user_name": str.strip,
    "email": lambda value: value.strip().lower(),
}


def pseudonym(key: bytes, value: str) -> str:
    """HMAC-SHA256 of `value` under `key`, as PSEUDONYM_LENGTH hex characters."""
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_LENGTH]


@dataclass(frozen=True, slots=True)
class ParticipantPrivacy:
    """The labels to export, in order, and the pseudonym key (None: names in clear)."""

    labels: tuple[str, ...] = DEFAULT_PARTICIPANT_LABELS
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        refused = [name for name in self.labels if name not in PARTICIPANT_LABELS]
        if refused:
            raise ValueError(f"not an exportable participant label: {', '.join(refused)}")

    def value(self, name: str, raw: str | None) -> str:
        """What label `name` shows for Zoom's value `raw`; an empty value stays empty."""
        text = raw or ""
        if self.key is None or name not in PSEUDONYMIZED:
            return text
        text = _NORMALISE[name](text)
        return pseudonym(self.key, text) if text else ""

    def info(self, fields: Callable[[str], str | None]) -> tuple[tuple[str, str], ...]:
        """(label, value) pairs of the allowed labels; `fields` reads one of Zoom's fields."""
        if self.key is None:  # names in clear: what value() does, without a call per label
            return tuple((name, fields(name) or "") for name in self.labels)
        return tuple((name, self.value(name, fields(name))) for name in self.labels)

    def host(self, name: str) -> str:
        """A meeting host's name, treated as `user_name`: left out, pseudonymized or as is."""
        if "user_name" not in self.labels:
            return ""
        return self.value("user_name", name)


DEFAULT_PRIVACY: Final = ParticipantPrivacy()  # the default labels, names in clear
