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


def test_zoom_text_cannot_forge_or_hide_log_content() -> None:
    """A NUL, an escape sequence or a bidi override in Zoom's text is written as an escape."""
    from exporter.logfmt import JsonFormatter, kv

    hostile = "ok\x00\x1b[2K\u202eevil\nlevel=error"
    line = LogfmtFormatter().format(record(hostile))
    assert "\x00" not in line and "\x1b" not in line and "\u202e" not in line
    assert "\n" not in line  # one event, one line
    as_json = JsonFormatter().format(record("m"))
    assert as_json.startswith("{")
    fields = logging.LogRecord("x", logging.INFO, "p", 1, "m", None, None)
    fields.__dict__.update(kv(error=hostile))
    assert "\u202e" not in LogfmtFormatter().format(fields)
