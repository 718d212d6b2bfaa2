"""The settings part of `--help`, generated from the Settings model so that it never drifts:
every setting with its environment name, its flag, its default and `--demo`'s default."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from exporter.daemon import RESTART_ONLY
from exporter.runtime import DEMO_DAILY_CAP, DEMO_POLL_INTERVAL
from exporter.settings import DEFAULT_MAX_POLL_INTERVAL, ENV_PREFIX, Settings

# What each setting means, when its Field has no description (the README has the long form).
MEANINGS: Mapping[str, str] = {
    "account_id": "the Server-to-Server OAuth app's account id",
    "client_id": "its client id",
    "client_secret": "its client secret (never logged or exported)",
    "api_url": "Zoom API base URL",
    "oauth_url": "OAuth token URL",
    "listen_address": "host:port to serve on",
    "telemetry_path": "path of the metrics",
    "poll_interval": "seconds between poll cycles (fractions allowed, at least 1)",
    "meeting_ids": "meeting ids or UUIDs always polled, comma-separated",
    "webinar_ids": "webinar ids or UUIDs always polled, comma-separated",
    "discovery": "find live meetings and webinars through the dashboard API",
    "request_timeout": "seconds before one API call is abandoned",
    "concurrency": "meetings fetched at the same time",
    "max_staleness": "seconds a meeting whose polls fail keeps its last good data",
    "log_level": "debug, info, warning or error",
    "demo": "poll the built-in Zoom simulator instead of Zoom",
    "demo_speed": "with --demo, run the simulated world N times faster",
    "plan": "the account's Zoom plan: pro, business, business_plus, enterprise, education",
    "daily_request_budget": "this exporter's share of the account's daily cap of calls",
    "heavy_rate": "QoS calls a second (overrides the plan)",
    "resource_intensive_rate": "discovery calls a second (overrides the plan)",
    "max_poll_interval": "the longest the planner may stretch the interval to",
    "max_retries": "retries of a call after a 5xx, timeout, dropped connection or 429",
    "storage_path": "a writable directory for state.json (today's API spend)",
    "log_format": "logfmt or json",
    "web_enable_lifecycle": "answer POST /-/reload",
    "web_max_connections": "open client connections at most",
    "participant_labels": "the descriptive labels of zoom_participant_info, comma-separated",
    "pseudonymize": "replace user_name, email and the host's name by a keyed pseudonym",
    "pseudonymize_key": "the pseudonym key, at least 16 characters (never logged or exported)",
    "participant_series": "whose participant series to export: all, worst:N or none",
    "streams": "the stream values to export, comma-separated",
}

# Defaults that the model leaves to None and works out later.
COMPUTED_DEFAULTS: Mapping[str, str] = {
    "account_id": "required unless --demo",
    "client_id": "required unless --demo",
    "client_secret": "required unless --demo",
    "daily_request_budget": "half the plan's daily cap",
    "heavy_rate": "the plan's",
    "resource_intensive_rate": "the plan's",
    "max_poll_interval": f"{DEFAULT_MAX_POLL_INTERVAL:g}, or the poll interval if longer",
    "storage_path": "none (kept in memory)",
    "pseudonymize_key": "none",
}

DEMO_DEFAULTS: Mapping[str, str] = {
    "poll_interval": f"{DEMO_POLL_INTERVAL:g}",
    "daily_request_budget": f"{DEMO_DAILY_CAP // 2:,}",
}


def shown_default(name: str, info: FieldInfo) -> str:
    if name in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[name]
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "empty"
    return str(value)


def settings_help(flags: Mapping[str, str], width: int = 88) -> str:
    """One entry per setting: the environment name and flag, what it means, its defaults."""
    lines = [
        "settings (highest precedence first: flags, environment, --secrets.dir files named like",
        "zoom_exporter_client_secret, the --config.file YAML whose keys are the names below in",
        "lower case without the prefix, defaults):",
    ]
    for name, info in Settings.model_fields.items():
        head = f"{ENV_PREFIX}{name.upper()}" + (f", {flags[name]}" if name in flags else "")
        parts = [info.description or MEANINGS.get(name, "")]
        default = f"default: {shown_default(name, info)}"
        if name in DEMO_DEFAULTS:
            default += f"; with --demo: {DEMO_DEFAULTS[name]}"
        parts.append(default)
        if name in RESTART_ONLY:
            parts.append("restart to change (a reload keeps it)")
        body = "; ".join(p for p in parts if p)
        lines.append(f"  {head}")
        lines += textwrap.wrap(body, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
