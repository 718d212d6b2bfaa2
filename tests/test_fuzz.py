"""A fuzz of the whole path from Zoom's bytes to /metrics: JSON bytes, the client's pagination
and models, the poller's cycle, the snapshot and the renderer.

Arbitrary JSON where Zoom's is expected (wrong types, missing fields, huge and odd numbers,
invalid and odd Unicode, huge strings): a cycle never raises, always publishes, and every
output parses with prometheus_client's parsers. CI runs a fixed budget of examples
(`EXAMPLES`, derandomized, so a run is reproducible); `promtool check metrics` runs on one
sample.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from conftest import FakeClock, poller
from exporter.metrics.store import SnapshotStore
from exporter.polling.health import STATES
from exporter.polling.poller import Poller
from exporter.polling.targets import configured_targets
from exporter.privacy import ParticipantPrivacy
from exporter.zoom.client import ZoomClient
from exporter.zoom.errors import ZoomTransportError
from exporter.zoom.models import MEDIA_PREFIXES, STREAM_SUFFIXES
from exporter.zoom.transport import decode_json

EXAMPLES = 150  # per test, in CI; raise locally with --hypothesis-seed and a bigger budget

ALL_LABELS = ParticipantPrivacy(
    labels=("user_name", "device", "network_type", "data_center", "version", "email",
            "ip_address", "location", "pc_name", "domain"),
)  # fmt: skip

# Every code point, lone surrogates included (JSON can carry them as \\udXXX escapes).
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
odd_text = st.one_of(
    st.text(any_char, max_size=20),
    st.text(any_char, min_size=250, max_size=400),  # around the 256-character cut
    st.sampled_from(
        ["", " ", "\ud800", "a\udfffb", "1e400 kbps", "-0 ms", "NaN%", "inf fps", "9" * 5000,
         "1" * 400 + " kbps", "0*0", "99999*99999", "\u202e\u0000\\\"\n", "Ω" * 300]
    ),
)  # fmt: skip
odd_number = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -(10**400), 2**63, -1, 0, 1e308, 5e-324]),
)
scalar = st.one_of(st.none(), st.booleans(), odd_number, odd_text)
anything = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
reading = st.one_of(  # half real readings, half anything
    st.sampled_from(["23 kbps", "27.15 kbps", "126 ms", "0.3%", "3%", "1280*720", "12 fps", -52]),
    scalar,
)
QOS_FIELDS = ("bitrate", "latency", "jitter", "avg_loss", "max_loss", "resolution", "frame_rate")
stream = st.one_of(
    st.fixed_dictionaries({}, optional={name: reading for name in QOS_FIELDS}), anything
)
sample = st.fixed_dictionaries(
    {},
    optional={
        "date_time": st.one_of(
            odd_text, st.sampled_from(["2026-11-18T11:06:00Z", "9999-12-31T23:59:59-23:59"])
        ),
        **{f"{p}_{s}": stream for p in MEDIA_PREFIXES for s in STREAM_SUFFIXES[:2]},
        "cpu_usage": st.fixed_dictionaries(
            {}, optional={"zoom_avg_cpu_usage": reading, "system_max_cpu_usage": reading}
        ),
        "wifi_rssi": st.one_of(
            anything, st.fixed_dictionaries({}, optional={"avg_rssi": reading, "max_rssi": reading})
        ),
    },
)
PERSON_FIELDS = ("id", "user_id", "user_name", "email", "device", "ip_address", "location",
                 "network_type", "data_center", "pc_name", "domain", "version")  # fmt: skip
person = st.fixed_dictionaries(
    {"user_id": st.one_of(odd_text, odd_number)},
    optional={
        **{name: scalar for name in PERSON_FIELDS[2:]},
        "join_time": st.one_of(odd_text, st.just("2026-11-18T10:00:00Z")),
        "leave_time": st.one_of(st.none(), st.just(""), odd_text),
        "user_qos": st.one_of(st.lists(sample, min_size=1, max_size=3), anything),
    },
)
participant = st.one_of(person, person, person, anything)  # mostly the right shape
page = st.fixed_dictionaries(
    {"participants": st.one_of(st.lists(participant, min_size=1, max_size=4), anything)},
    optional={
        "next_page_token": st.one_of(st.none(), st.just(""), odd_text, odd_number),
        "page_size": anything,
        "total_records": odd_number,
    },
)
page_json = page.map(lambda p: json.dumps(p).encode())  # NaN, Infinity, escaped surrogates
body = st.one_of(
    page_json,
    page_json,
    page_json,
    st.binary(max_size=64),  # not JSON at all
    st.sampled_from([b"[]", b"null", b"[" * 5000, b'{"participants": [' + b"1" * 5000 + b"]}"]),
)


async def one_cycle(pages: list[bytes]) -> tuple[Poller, SnapshotStore, Any]:
    """A poller's cycle over a fake transport that answers `pages` in turn."""
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        client = ZoomClient(
            session,
            api_url="http://127.0.0.1:9/v2",
            oauth_url="http://127.0.0.1:9/oauth",
            account_id="a",
            client_id="c",
            client_secret=SecretStr("s"),
            clock=clock,
        )
        answers = iter(pages)

        async def get(endpoint: str, path: str, params: dict[str, str]) -> dict[str, Any]:
            raw = next(answers, b"{}")
            try:  # what Transport.send does with a 200 answer
                payload = decode_json(raw)
            except (ValueError, RecursionError):
                raise ZoomTransportError(endpoint, "not JSON") from None
            if not isinstance(payload, dict):
                raise ZoomTransportError(endpoint, "not an object")
            return payload

        client.get = get  # type: ignore[method-assign]
        store = SnapshotStore()
        polling = poller(
            client,
            store,
            interval=60,
            configured=configured_targets(["111", "\udcff222"], ["333"]),
            discovery=False,
            privacy=ALL_LABELS,
            clock=clock,
        )
        report = await polling.run_cycle()
        return polling, store, report


def check_exposition(store: SnapshotStore) -> str:
    text = store.exposition.text.body(b"", compressed=False).decode("utf-8")
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {"zoom_meetings"}
    om = store.exposition.openmetrics.body(b"# EOF\n", compressed=False).decode("utf-8")
    assert list(openmetrics_families(om))
    return text


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(body, min_size=1, max_size=4))
def test_any_answer_publishes_a_cycle_that_parses(pages: list[bytes]) -> None:
    _, store, report = asyncio.run(one_cycle(pages))
    assert report.health.state in STATES
    assert store.health is report.health  # published, whatever came
    check_exposition(store)


def test_a_hostile_sample_passes_promtool() -> None:
    """One page full of the worst values: the exposition passes promtool's lint."""
    person = {
        "user_id": "1\ud800",
        "user_name": "Zoë \udfff " + "x" * 400,
        "device": 'a"b\\c\nd',
        "location": "\u0000\u202e",
        "join_time": "2026-11-18T10:00:00Z",
        "user_qos": [
            {
                "date_time": "2026-11-18T11:06:00Z",
                "audio_input": {"bitrate": 10**400, "latency": "1e400 ms", "jitter": "12 ms"},
                "wifi_rssi": {"avg_rssi": 10**30, "max_rssi": -50},
                "cpu_usage": {"zoom_avg_cpu_usage": "NaN%", "system_max_cpu_usage": "30%"},
            }
        ],
    }
    raw = json.dumps({"participants": [person, {"user_id": "2", "user_qos": "x"}]}).encode()
    _, store, report = asyncio.run(one_cycle([raw, raw, raw]))
    assert report.health.state == "ok"
    text = check_exposition(store)
    assert "jitter_seconds{" in text and "latency_seconds{" not in text  # the bad one left out
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    # 0: clean; 3: lint remarks on names or help texts. A parse error is 1.
    assert result.returncode in (0, 3), result.stderr
    assert b"error while linting" not in result.stderr + result.stdout, result.stderr
