"""Seeded participant identities: names, devices, addresses and what they send."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, replace
from typing import Any, Final

from exporter.simulator.qos import MediaProfile

_FIRST: Final = (
    "Ada", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Gustavo", "Hana", "Ivan", "Jade",
    "Kofi", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
    "Uma", "Vera", "Wen", "Yusuf", "Zoe",
)  # fmt: skip
_LAST: Final = (
    "Alvarez", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoang", "Ito",
    "Jensen", "Khan", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
)  # fmt: skip
_PLACES: Final = (
    ("San Jose (US)", "192.0.2"),
    ("London (GB)", "198.51.100"),
    ("Frankfurt (DE)", "203.0.113"),
    ("Tokyo (JP)", "192.0.2"),
    ("Toronto (CA)", "198.51.100"),
    ("Bangalore (IN)", "203.0.113"),
)
_DATA_CENTERS: Final = ("United States (SC)", "Germany (FR)", "Japan (TY)", "India (MB)")
# (device, weight, version, network types)
_DEVICES: Final = (
    ("Windows", 35, "6.2.3.44321", ("Wired", "Wifi")),
    ("Mac", 30, "6.2.3.44322", ("Wifi", "Wired")),
    ("iOS", 10, "6.2.1.43610", ("Wifi", "PPP")),
    ("Android", 10, "6.2.1.43611", ("Wifi", "PPP")),
    ("Web", 10, "6.2.0", ("Wired", "Wifi")),
    ("Linux", 5, "6.1.10.39201", ("Wired",)),
)
SEED_DEVICE: Final = "Android"
SEED_VERSION: Final = "4.4.55383.0726"


@dataclass(frozen=True)
class Identity:
    """Who a participant is; stays the same when they leave and rejoin."""

    user_id: str
    zoom_id: str
    user_name: str
    email: str
    device: str
    ip_address: str
    internal_ip: str
    location: str
    network_type: str
    data_center: str
    pc_name: str
    domain: str
    mac_addr: str
    harddisk_id: str
    version: str
    media: MediaProfile

    def fields(self) -> dict[str, Any]:
        """The identity fields in the order Zoom lists them."""
        return {
            "user_id": self.user_id,
            "user_name": self.user_name,
            "email": self.email,
            "device": self.device,
            "ip_address": self.ip_address,
            "location": self.location,
            "network_type": self.network_type,
            "data_center": self.data_center,
        }

    def machine(self) -> dict[str, Any]:
        """The machine fields that follow join and leave times."""
        return {
            "pc_name": self.pc_name,
            "domain": self.domain,
            "mac_addr": self.mac_addr,
            "harddisk_id": self.harddisk_id,
            "version": self.version,
        }


def _device(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    names = [d[0] for d in _DEVICES]
    weights = [d[1] for d in _DEVICES]
    index = names.index(rng.choices(names, weights)[0])
    return _DEVICES[index][0], _DEVICES[index][2], _DEVICES[index][3]


def _hex(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(count))


def _machine(rng: random.Random, device: str, first: str) -> dict[str, str]:
    mobile = device in ("iOS", "Android")
    return {
        "pc_name": f"{first}'s {'Phone' if mobile else device + ' PC'}",
        "domain": "" if mobile else "corp.example.com",
        "mac_addr": "" if mobile else ":".join(_hex(rng, 2) for _ in range(6)),
        "harddisk_id": "" if mobile or device == "Web" else _hex(rng, 16),
    }


def make_identity(
    rng: random.Random, user_id: str, key: str, *, poor: bool = False, web: bool = False
) -> Identity:
    """A random but seeded participant. About one in five hides PII (HIPAA display rules)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    device, version, networks = _device(rng)
    if web:
        device, _, version, networks = _DEVICES[4]
    location, prefix = rng.choice(_PLACES)
    network = rng.choice(networks)
    hidden = rng.random() < 0.2
    guest = rng.random() < 0.25
    media = MediaProfile(
        key=key,
        poor=poor,
        video_on=rng.random() < 0.7,
        gateway="rwg" if device == "Web" else "",
        wifi=network == "Wifi",
        has_cpu=device != "Web",
    )
    return Identity(
        user_id=user_id,
        zoom_id="" if guest else "".join(rng.choice(string.ascii_letters) for _ in range(22)),
        user_name="" if hidden else f"{first} {last}",
        email="" if hidden or guest else f"{first}.{last}@example.com".lower(),
        device=device,
        ip_address="" if hidden else f"{prefix}.{rng.randint(2, 254)}",
        internal_ip=f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}",
        location="" if hidden else location,
        network_type=network,
        data_center=rng.choice(_DATA_CENTERS),
        version=version,
        media=media,
        **_machine(rng, device, first),
    )


def room_system(rng: random.Random, user_id: str, key: str) -> Identity:
    """An H.323/SIP room system, connected through a Cloud Room Connector (crc streams)."""
    base = make_identity(rng, user_id, key)
    media = replace(base.media, gateway="crc", video_on=True, wifi=False, has_cpu=False)
    return replace(
        base,
        user_name="Boardroom 4B",
        email="",
        device="H.323/SIP",
        network_type="Wired",
        version="",
        pc_name="",
        domain="",
        mac_addr="",
        harddisk_id="",
        media=media,
    )


def seed_identity(user_id: str, name: str, key: str) -> Identity:
    """The participant of the API page 002's sample response."""
    return Identity(
        user_id=user_id,
        zoom_id="z8yBXtoLRjW1xFOJPmuhkg",
        user_name=name,
        email="seed.sample@example.com",
        device=SEED_DEVICE,
        ip_address="192.0.2.0",
        internal_ip="10.0.0.42",
        location="San Jose (US)",
        network_type="Others",
        data_center="United States (SC)",
        pc_name="User's Phone",
        domain="user-android",
        mac_addr="",
        harddisk_id="",
        version=SEED_VERSION,
        media=MediaProfile(key=key),
    )
