"""Log lines in logfmt (ts=... level=... logger=... msg="..." key=value ...), as Prometheus
components write them, or one JSON object a line (`--log.format=json`).

Context goes in fields, not prose: `log.warning("poll failed", extra=kv(meeting_id=..., code=...))`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextvars import ContextVar
from typing import Any, Literal

FIELDS = "kv"  # the LogRecord attribute that carries a line's fields
# The account whose task logs (set in each account's poll task): every line it writes says so.
ACCOUNT: ContextVar[str | None] = ContextVar("account", default=None)
Format = Literal["logfmt", "json"]


def kv(**fields: object) -> dict[str, Any]:
    """The `extra=` of a log call with these key=value fields (None values are left out)."""
    return {FIELDS: {k: v for k, v in fields.items() if v is not None}}


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\\\n\t'):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# Control characters, and the bidirectional overrides that make a line read other than it is
# (Trojan Source), are written as escapes: Zoom's text must not forge or hide log content.
_UNSAFE = {
    **{c: f"\\x{c:02x}" for c in range(0x20) if c not in (0x09, 0x0A)},
    0x7F: "\\x7f",
    **{c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)},
}


def _safe(value: object) -> str:
    """Any value as text that encodes and displays as what it is: a lone surrogate, a NUL or a
    bidi override from Zoom must not break or disguise a log line."""
    return str(value).encode("utf-8", "replace").decode("utf-8").translate(_UNSAFE)


def _stamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, FIELDS, None)
    fields = fields if isinstance(fields, dict) else {}
    account = ACCOUNT.get()  # handlers format in the logging call's context
    if account is not None and "account" not in fields:
        return {"account": account, **fields}
    return fields


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_stamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(_safe(record.getMessage()))}",
        ]
        for key, value in _fields(record).items():
            parts.append(f"{key}={_quote(_safe(value))}")
        if record.exc_info:
            parts.append(f"error={_quote(_safe(self.formatException(record.exc_info)))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _safe(record.getMessage()),
        }
        for key, value in _fields(record).items():
            finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
            line[key] = value if finite else _safe(value)
        if record.exc_info:
            line["error"] = _safe(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, allow_nan=False, default=str)


def configure(level: str, log_format: Format = "logfmt") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
