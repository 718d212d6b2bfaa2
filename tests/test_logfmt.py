"""Log lines are logfmt: one line per record, values quoted and escaped when needed."""

from __future__ import annotations

import logging

from exporter.logfmt import LogfmtFormatter


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("exporter.polling.poller", level, __file__, 1, message, None, None)


def test_plain_and_quoted_values() -> None:
    line = LogfmtFormatter().format(record("ready"))
    assert line.startswith("ts=") and line.endswith(
        "level=info logger=exporter.polling.poller msg=ready"
    )
    quoted = LogfmtFormatter().format(record('meeting "a" failed\nHTTP 500', logging.WARNING))
    assert "level=warning" in quoted
    assert quoted.endswith('msg="meeting \\"a\\" failed\\nHTTP 500"')
    assert "\n" not in quoted


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record("cycle failed", logging.ERROR)
        rec.exc_info = sys.exc_info()
    line = LogfmtFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in line
