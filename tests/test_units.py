"""Unit parsing: Zoom's unit strings to base units, and no input ever raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.zoom import units


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("23 kbps", 2875.0),
        ("23kbps", 2875.0),
        ("1055 kbps", 131875.0),
        ("2.5 Mbps", 312500.0),
        ("2.5Mbps", 312500.0),
        ("800 bps", 100.0),
        ("0 kbps", 0.0),
        (" 64 KBPS ", 8000.0),
    ],
)
def test_bitrate_to_bytes_per_second(raw: str, expected: float) -> None:
    assert units.parse_bitrate(raw) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("126 ms", 0.126), ("6ms", 0.006), ("0 ms", 0.0), ("1.5 s", 1.5), ("250", 0.25)],
)
def test_duration_to_seconds(raw: str, expected: float) -> None:
    assert units.parse_duration(raw) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.3%", 0.003), ("1.9 %", 0.019), ("0.0%", 0.0), ("100%", 1.0), ("8%", 0.08)],
)
def test_percent_to_ratio(raw: str, expected: float) -> None:
    assert units.parse_percent(raw) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1280*720", (1280, 720)),
        ("640x360", (640, 360)),
        ("0*0", (0, 0)),
        (" 320 X 180 ", (320, 180)),
    ],
)
def test_resolution(raw: str, expected: tuple[int, int]) -> None:
    assert units.parse_resolution(raw) == expected


def test_frame_rate_and_rssi() -> None:
    assert units.parse_frame_rate("12 fps") == 12.0
    assert units.parse_frame_rate("29.97fps") == pytest.approx(29.97)
    assert units.parse_rssi(-52) == -52.0
    assert units.parse_rssi("-61 dBm") == -61.0
    assert units.parse_rssi("-61") == -61.0


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "-",
        " ",
        "N/A",
        "kbps",
        "12 parsecs",
        "nan",
        "inf kbps",
        "1e999 kbps",
        None,
        True,
        [],
        {},
        "1280*",
        "*720",
        "-5 kbps",
        "-3%",
    ],
)
def test_no_value_for_empty_or_garbage(raw: object) -> None:
    assert units.parse_bitrate(raw) is None
    assert units.parse_duration(raw) is None
    assert units.parse_percent(raw) is None
    assert units.parse_resolution(raw) is None
    assert units.parse_frame_rate(raw) is None


def test_mismatched_units_are_no_value() -> None:
    assert units.parse_bitrate("126 ms") is None
    assert units.parse_duration("23 kbps") is None
    assert units.parse_percent("12 fps") is None
    assert units.parse_frame_rate("3%") is None


PARSERS = [
    units.parse_bitrate,
    units.parse_duration,
    units.parse_percent,
    units.parse_frame_rate,
    units.parse_resolution,
    units.parse_rssi,
]


@given(st.text())
def test_no_string_raises(raw: str) -> None:
    for parse in PARSERS:
        value = parse(raw)
        assert value is None or isinstance(value, float | tuple)


@given(
    st.from_regex(
        r"\A\s*-?[0-9]{0,6}(\.[0-9]{0,4})?\s*(kbps|Mbps|bps|ms|%|fps|\*|x)?[0-9]{0,5}\s*\Z"
    )
)
def test_unit_shaped_strings_never_raise(raw: str) -> None:
    for parse in PARSERS:
        parse(raw)


@given(st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.binary()))
def test_non_strings_never_raise(raw: object) -> None:
    for parse in PARSERS:
        value = parse(raw)
        if isinstance(value, float):
            assert value == value  # never NaN
