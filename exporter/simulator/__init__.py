"""A Zoom Dashboard QoS API simulator over real HTTP, for `--demo` mode and the tests."""

from exporter.simulator.app import create_app
from exporter.simulator.clock import ScaledClock
from exporter.simulator.faults import Fault, Faults
from exporter.simulator.limits import RateLimits
from exporter.simulator.scenario import (
    SEED_MEETING_ID,
    SEED_MEETING_TOPIC,
    SEED_MEETING_UUID,
    SEED_PARTICIPANT_ID,
    SEED_PARTICIPANT_NAME,
    SLASH_MEETING_UUID,
    Scenario,
    is_poor,
)
from exporter.simulator.server import SimAccount, Simulator

__all__ = [
    "SEED_MEETING_ID",
    "SEED_MEETING_TOPIC",
    "SEED_MEETING_UUID",
    "SEED_PARTICIPANT_ID",
    "SEED_PARTICIPANT_NAME",
    "SLASH_MEETING_UUID",
    "Fault",
    "Faults",
    "RateLimits",
    "ScaledClock",
    "Scenario",
    "SimAccount",
    "Simulator",
    "create_app",
    "is_poor",
]
