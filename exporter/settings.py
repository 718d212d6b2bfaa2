"""Settings: environment (ZOOM_EXPORTER_*), an optional YAML file, secrets files, and flags.

Precedence, highest first: command-line flags, environment, secrets directory, YAML file, defaults.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from exporter.privacy import (
    DEFAULT_PARTICIPANT_LABELS,
    MIN_KEY_LENGTH,
    NEVER_EXPORTED,
    PARTICIPANT_LABELS,
    ParticipantPrivacy,
)
from exporter.series import DEFAULT_STREAMS, SeriesOptions
from exporter.sources import Origins, describe, looks_like_credential, source_error
from exporter.zoom.limits import PLANS
from exporter.zoom.models import STREAM_SUFFIXES

ENV_PREFIX = "ZOOM_EXPORTER_"
DEFAULT_MAX_POLL_INTERVAL = 300.0
# The longest poll interval: a day. Polling at a longer one (1e9 s, say) stopped in effect,
# while the exporter, waiting three intervals before it calls itself stuck, said all was well.
MAX_INTERVAL = 86_400.0
BUDGET_SHARE = 0.5  # of the plan's daily cap, by default; the rest is left to other apps
PlanName = Literal["pro", "business", "business_plus", "enterprise", "education"]


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """The rate limits and the daily budget the exporter works within."""

    heavy_per_second: float
    resource_intensive_per_second: float
    daily_cap: int
    daily_budget: int


class SettingsError(Exception):
    """A setting is invalid; the message names it and never contains a secret value.

    `lines` has one line per error, each naming where the bad value came from."""

    def __init__(self, *lines: str) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


DEFAULT_ACCOUNT = "default"  # the account's name (its `account` label) without an accounts list
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")
CREDENTIALS = ("account_id", "client_id", "client_secret")


def _plan_name(value: Any) -> Any:
    return (
        value.strip().lower().replace("-", "_").replace("+", "_plus")
        if isinstance(value, str)
        else value
    )


def _split_ids(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    return value


# Meeting or webinar ids: a list, or one comma-separated string (as the environment gives them).
Ids = Annotated[list[str], NoDecode, BeforeValidator(_split_ids)]
# A plan's name as people write it: "Business+", "business-plus", "PRO".
Plan = Annotated[PlanName, BeforeValidator(_plan_name)]


def account_limits(
    plan: PlanName, budget: int | None, heavy: float | None, resource_intensive: float | None
) -> AccountLimits:
    """A plan's limits, overridden by explicit rates and budget."""
    limits = PLANS[plan]
    return AccountLimits(
        heavy_per_second=heavy or limits.heavy_per_second,
        resource_intensive_per_second=(
            resource_intensive or limits.resource_intensive_per_minute / 60
        ),
        daily_cap=limits.daily_cap,
        daily_budget=budget or int(limits.daily_cap * BUDGET_SHARE),
    )


def shard_of(name: str, shards: int) -> int:
    """The replica (0 to shards - 1) that polls the account `name`: a stable hash (the same in
    every process and Python version, unlike hash()), modulo the number of replicas."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def parse_shard(value: str) -> tuple[int, int]:
    """ "1/3" -> (1, 3): this replica's index and the number of replicas."""
    found = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*([0-9]{1,6})\s*", value, re.ASCII)
    if found is None:  # ASCII digits only: str.isdigit() also took "²" and "٣"
        raise ValueError("must be i/n, e.g. 0/3")
    i, n = int(found[1]), int(found[2])
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"{i}/{n}: need 0 <= i < n")
    return i, n


class AccountEntry(BaseModel):
    """One entry of the `accounts:` list. Credentials come from the environment
    (`*_env`: a variable's name) or from a file in --secrets.dir (`*_file`); inline values
    only from a config file that nobody else may read (mode 0600). Unset limits are the
    top-level settings'."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    account_id: str | None = None
    account_id_env: str | None = None
    account_id_file: str | None = None
    client_id: str | None = None
    client_id_env: str | None = None
    client_id_file: str | None = None
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    plan: Plan | None = None
    daily_request_budget: int | None = Field(default=None, ge=1)
    heavy_rate: float | None = Field(default=None, gt=0, le=1000)
    resource_intensive_rate: float | None = Field(default=None, gt=0, le=100)
    meeting_ids: Ids = Field(default_factory=list)
    webinar_ids: Ids = Field(default_factory=list)
    discovery: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ACCOUNT_NAME.fullmatch(value):
            raise ValueError("must be 1 to 63 characters of A-Z, a-z, 0-9, _, . and -")
        return value

    @field_validator("account_id_file", "client_id_file", "client_secret_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("/") or ".." in Path(value).parts):
            raise ValueError("must be a file name inside --secrets.dir")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> AccountEntry:
        for name in CREDENTIALS:
            given = [
                key
                for key in (name, f"{name}_env", f"{name}_file")
                if getattr(self, key) is not None
            ]
            if len(given) != 1:
                raise ValueError(
                    f"account {self.name!r}: give {name} as exactly one of {name}_env, "
                    f"{name}_file or (in a mode 0600 file) {name}"
                    + (f"; got {', '.join(given)}" if given else "")
                )
        return self


@dataclass(frozen=True)
class AccountConfig:
    """One account as the daemon runs it: its name, credentials and limits, resolved."""

    name: str
    account_id: str
    client_id: str
    client_secret: SecretStr
    plan: PlanName
    limits: AccountLimits
    meeting_ids: tuple[str, ...]
    webinar_ids: tuple[str, ...]
    discovery: bool


def parse_listen_address(value: str) -> tuple[str, int]:
    """ "0.0.0.0:9924" -> ("0.0.0.0", 9924); "[::1]:9924" and ":9924" work too."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        allow_inf_nan=False,  # an infinite interval polls once, and is never overdue
        case_sensitive=False,
        validate_default=True,
    )

    account_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    api_url: str = "https://api.zoom.us/v2"
    oauth_url: str = "https://zoom.us/oauth/token"
    listen_address: str = "0.0.0.0:9924"
    telemetry_path: str = "/metrics"
    poll_interval: float = Field(default=60.0, ge=1.0, le=MAX_INTERVAL)
    meeting_ids: Ids = Field(default_factory=list)
    webinar_ids: Ids = Field(default_factory=list)
    discovery: bool = True
    request_timeout: float = Field(default=10.0, gt=0, le=300)
    concurrency: int = Field(default=4, ge=1, le=64)
    max_staleness: float = Field(default=600.0, ge=0)
    log_level: str = "info"
    demo: bool = False
    demo_speed: float = Field(default=1.0, gt=0, le=1000)
    plan: Plan = "pro"
    daily_request_budget: int | None = Field(default=None, ge=1)
    heavy_rate: float | None = Field(default=None, gt=0, le=1000)
    resource_intensive_rate: float | None = Field(default=None, gt=0, le=100)
    max_poll_interval: float | None = Field(default=None, ge=1.0, le=MAX_INTERVAL)
    max_retries: int = Field(default=3, ge=0, le=10)
    storage_path: Path | None = None  # a directory for state.json (the day's API spend)
    log_format: Literal["logfmt", "json"] = "logfmt"
    web_enable_lifecycle: bool = False  # POST /-/reload
    web_max_connections: int = Field(default=256, ge=1, le=65_536)  # open client connections
    # Personal data (README, "Personal data"): the labels of zoom_participant_info, pseudonyms.
    participant_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PARTICIPANT_LABELS)
    )
    pseudonymize: bool = False
    pseudonymize_key: SecretStr | None = None
    # Series per participant (README, "Series and what they cost"): all, worst:N or none;
    # the `stream` values to export (the device_* hops are opt-in).
    participant_series: str = "all"
    streams: Annotated[list[str], NoDecode] = Field(default_factory=lambda: sorted(DEFAULT_STREAMS))
    # Several Zoom accounts (README, "Several accounts"); none: the one above, named "default".
    accounts: list[AccountEntry] = Field(default_factory=list)
    shard: str | None = None  # "i/n": poll only the accounts whose stable hash falls to i
    _accounts: tuple[AccountConfig, ...] | None = PrivateAttr(default=None)

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        i, n = parse_shard(value)
        return f"{i}/{n}"

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: list[AccountEntry]) -> list[AccountEntry]:
        seen: dict[str, str] = {}
        for entry in value:
            other = seen.get(entry.name.lower())
            if other == entry.name:
                raise ValueError(f"account name {entry.name!r} is used twice")
            if other is not None:  # labels that look alike: one account twice, most likely
                raise ValueError(f"account names {other!r} and {entry.name!r} differ only in case")
            seen[entry.name.lower()] = entry.name
        return value

    @field_validator("participant_series")
    @classmethod
    def _participant_series(cls, value: str) -> str:
        mode, count = SeriesOptions.parse_participants(value)
        return f"worst:{count}" if mode == "worst" else mode

    @field_validator("streams", mode="before")
    @classmethod
    def _streams(cls, value: Any) -> Any:
        names = _split_ids(value)
        if not isinstance(names, list):
            return value
        out: list[str] = []
        for name in (str(n).lower() for n in names):
            if name not in STREAM_SUFFIXES:
                shown = repr(name) if name.isidentifier() and len(name) <= 32 else "a name"
                raise ValueError(
                    f"{shown} is not a stream; choose from {', '.join(STREAM_SUFFIXES)}"
                )
            if name not in out:
                out.append(name)
        if not out:
            raise ValueError("name at least one stream")
        return out

    @field_validator("participant_labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        names = _split_ids(value)
        if not isinstance(names, list):
            return value
        out: list[str] = []
        for name in (str(n).lower() for n in names):
            if name in NEVER_EXPORTED:
                raise ValueError(f"{name} is never exported")
            if name not in PARTICIPANT_LABELS:
                shown = repr(name) if name.isidentifier() and len(name) <= 32 else "a name"
                choices = ", ".join(PARTICIPANT_LABELS)
                raise ValueError(f"{shown} is not a participant label; choose from {choices}")
            if name not in out:
                out.append(name)
        return out

    @field_validator("pseudonymize_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters long")
        return value

    @field_validator("listen_address")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("api_url", "oauth_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/-/healthy", "/-/ready"):
            raise ValueError("must be a path such as /metrics")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("storage_path")
    @classmethod
    def _storage(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.lower()
        if level not in ("debug", "info", "warning", "error"):
            raise ValueError("must be one of debug, info, warning, error")
        return level

    @model_validator(mode="after")
    def _intervals(self) -> Settings:
        if self.max_poll_interval is not None and self.max_poll_interval < self.poll_interval:
            raise ValueError(
                f"{ENV_PREFIX}MAX_POLL_INTERVAL ({self.max_poll_interval:g} s) must not be less "
                f"than {ENV_PREFIX}POLL_INTERVAL ({self.poll_interval:g} s)"
            )
        return self

    @model_validator(mode="after")
    def _pseudonym_key(self) -> Settings:
        if self.pseudonymize and self.pseudonymize_key is None:
            raise ValueError(
                f"{ENV_PREFIX}PSEUDONYMIZE is on but {ENV_PREFIX}PSEUDONYMIZE_KEY is not set"
            )
        return self

    @model_validator(mode="after")
    def _credentials(self) -> Settings:
        if self.demo or self.accounts:
            return self
        missing = [
            ENV_PREFIX + name.upper()
            for name in ("account_id", "client_id", "client_secret")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(
                f"missing Zoom credentials: {', '.join(missing)}; set them, "
                "or run with --demo to use the built-in Zoom simulator"
            )
        return self

    @property
    def listen(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)

    @property
    def longest_poll_interval(self) -> float:
        """How far the planner may stretch the interval: the setting, or 300 s (at least the
        poll interval)."""
        if self.max_poll_interval is not None:
            return self.max_poll_interval
        return max(DEFAULT_MAX_POLL_INTERVAL, self.poll_interval)

    @property
    def privacy(self) -> ParticipantPrivacy:
        """The participant labels to export, and the pseudonym key if pseudonymizing."""
        key = self.pseudonymize_key if self.pseudonymize else None
        return ParticipantPrivacy(
            labels=tuple(self.participant_labels),
            key=key.get_secret_value().encode("utf-8") if key is not None else None,
        )

    @property
    def series(self) -> SeriesOptions:
        """Whose participant series /metrics shows, and which streams."""
        mode, count = SeriesOptions.parse_participants(self.participant_series)
        return SeriesOptions(mode, count, frozenset(self.streams))

    @property
    def limits(self) -> AccountLimits:
        """The plan's limits, overridden by explicit rates and budget."""
        return account_limits(
            self.plan, self.daily_request_budget, self.heavy_rate, self.resource_intensive_rate
        )

    @property
    def shard_index(self) -> tuple[int, int]:
        """(this replica, replicas): (0, 1) unless --shard says otherwise."""
        return parse_shard(self.shard) if self.shard else (0, 1)

    def zoom_accounts(self) -> tuple[AccountConfig, ...]:
        """Every account configured (all shards), resolved: those read by load_settings, else
        resolved now from the environment."""
        if self._accounts is None:
            self._accounts = resolve_accounts(self)
        return self._accounts

    def my_accounts(self) -> tuple[AccountConfig, ...]:
        """The accounts this replica polls: those whose shard_of() is its index."""
        index, count = self.shard_index
        return tuple(a for a in self.zoom_accounts() if shard_of(a.name, count) == index)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources = [init_settings, env_settings, file_secret_settings]
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


class AccountError(SettingsError):
    """A credential of an `accounts:` entry cannot be had; `loc` is where the entry says it
    is (("accounts", 1, "client_secret_env")), for the error to point at the file's line."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc = loc
        self.message = message


def _named(reference: str) -> str:
    """A `*_env` or `*_file` name as written, unless it looks like a credential pasted where
    its name belongs (Zoom's ids and secrets: long, mixed-case letters and digits): such a
    value is never shown, in an error or a log line."""
    if looks_like_credential(reference) or not reference.isprintable():
        return "the name given (not shown: it looks like a credential, not a name)"
    return reference


def _read_secret(path: Path) -> bytes:
    """At most MAX_SECRET_FILE bytes of a regular file (a symlink to one, as Kubernetes mounts
    them): a FIFO would block the read (on a reload, the event loop), and /dev/zero or
    /dev/urandom would fill the memory."""
    _regular(path)
    with path.open("rb") as source:
        return source.read(MAX_SECRET_FILE)


def _regular(path: Path) -> None:
    """Raise OSError unless `path` is a regular file, or a symlink to one (opening a FIFO
    blocks until someone writes to it)."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise OSError(errno.EINVAL, "not a regular file")


def _credential(
    entry: AccountEntry,
    index: int,
    name: str,
    *,
    environ: Mapping[str, str],
    secrets_dir: Path | None,
    private_file: bool,
    missing_ok: bool = False,
) -> str:
    """One credential of an account entry, from wherever the entry says; never shows it.
    `missing_ok` (for --config.check) lets an unset variable or an absent file pass as ""."""
    account = f"account {entry.name!r}"
    env = getattr(entry, f"{name}_env")
    if env is not None:
        value = environ.get(str(env), "").strip()
        if not value and not missing_ok:
            raise AccountError(
                ("accounts", index, f"{name}_env"), f"{account}: {_named(env)} is not set"
            )
        return value
    file = getattr(entry, f"{name}_file")
    if file is not None:
        loc = ("accounts", index, f"{name}_file")
        if secrets_dir is None:
            if missing_ok:
                return ""
            raise AccountError(loc, f"{account}: needs --secrets.dir")
        path = secrets_dir / file
        try:
            text: str = _read_secret(path).decode("utf-8").strip()
        except FileNotFoundError:
            if missing_ok:
                return ""
            raise AccountError(loc, f"{account}: {_named(file)} is not in --secrets.dir") from None
        except OSError as error:
            why = error.strerror or str(error)
            raise AccountError(loc, f"{account}: {_named(file)}: cannot read ({why})") from None
        except UnicodeDecodeError:
            raise AccountError(loc, f"{account}: {_named(file)} is not UTF-8 text") from None
        if not text and not missing_ok:
            raise AccountError(loc, f"{account}: {_named(file)} is empty")
        return text
    value = getattr(entry, name)
    loc = ("accounts", index, name)
    if name == "client_secret" and not private_file:
        raise AccountError(
            loc,
            f"{account}: client_secret is inline, but the config file may be read by others "
            "(chmod 600 it), or use client_secret_env or client_secret_file",
        )
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
    if not text.strip():
        raise AccountError(loc, f"{account}: {name} is empty")
    return text.strip()


# Discovery off and no meeting or webinar listed: the account would make no call at all (not
# even for a token), and say it is up, with credentials that may well be wrong.
NOTHING_TO_POLL = "discovery is off and no meeting_ids or webinar_ids are listed: nothing to poll"


def resolve_accounts(
    settings: Settings,
    *,
    config_file: Path | None = None,
    secrets_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    missing_ok: bool = False,
) -> tuple[AccountConfig, ...]:
    """The accounts to poll, credentials read: the `accounts:` list, or the one account of the
    top-level settings under the name "default". Raises SettingsError naming the account."""
    if not settings.accounts:
        if not settings.discovery and not settings.meeting_ids and not settings.webinar_ids:
            raise AccountError(("discovery",), NOTHING_TO_POLL)
        return (
            AccountConfig(
                name=DEFAULT_ACCOUNT,
                account_id=settings.account_id or "",
                client_id=settings.client_id or "",
                client_secret=settings.client_secret or SecretStr(""),
                plan=settings.plan,
                limits=settings.limits,
                meeting_ids=tuple(settings.meeting_ids),
                webinar_ids=tuple(settings.webinar_ids),
                discovery=settings.discovery,
            ),
        )
    env = os.environ if environ is None else environ
    private = False
    if config_file is not None:
        try:
            private = config_file.stat().st_mode & 0o077 == 0
        except OSError:
            private = False
    out: list[AccountConfig] = []
    polled: dict[str, AccountConfig] = {}  # by Zoom account id
    for index, entry in enumerate(settings.accounts):
        creds = {
            name: _credential(
                entry,
                index,
                name,
                environ=env,
                secrets_dir=secrets_dir,
                private_file=private,
                missing_ok=missing_ok,
            )
            for name in CREDENTIALS
        }
        discovery = settings.discovery if entry.discovery is None else entry.discovery
        if not discovery and not entry.meeting_ids and not entry.webinar_ids:
            where = (
                ("accounts", index, "discovery")
                if entry.discovery is not None
                else ("accounts", index)
            )
            raise AccountError(where, f"account {entry.name!r}: {NOTHING_TO_POLL}")
        plan = entry.plan or settings.plan
        budget = entry.daily_request_budget
        if budget is None and entry.plan is None:
            budget = settings.daily_request_budget
        twin = polled.get(creds["account_id"]) if creds["account_id"] else None
        if twin is not None and (
            twin.client_id == creds["client_id"] or (twin.discovery and discovery)
        ):
            raise AccountError(
                ("accounts", index, "name"),
                f"account {entry.name!r} is the Zoom account of {twin.name!r} again"
                + (
                    " (the same app)"
                    if twin.client_id == creds["client_id"]
                    else ", both with discovery"
                )
                + ": it would be polled twice, each entry spending Zoom's one daily cap",
            )
        out.append(
            AccountConfig(
                name=entry.name,
                account_id=creds["account_id"],
                client_id=creds["client_id"],
                client_secret=SecretStr(creds["client_secret"]),
                plan=plan,
                limits=account_limits(
                    plan,
                    budget,
                    entry.heavy_rate or (settings.heavy_rate if entry.plan is None else None),
                    entry.resource_intensive_rate
                    or (settings.resource_intensive_rate if entry.plan is None else None),
                ),
                meeting_ids=tuple(entry.meeting_ids),
                webinar_ids=tuple(entry.webinar_ids),
                discovery=discovery,
            )
        )
        polled.setdefault(creds["account_id"], out[-1])
    return tuple(out)


SECRET_FIELDS = ("client_secret", "pseudonymize_key")
MAX_SECRET_FILE = 64 * 1024  # bytes read of a secrets file


def _check_secrets_dir(directory: Path) -> list[str]:
    """Refuse a secrets file that is not UTF-8 (one line, naming the file, never its content);
    return warnings for world-readable ones."""
    warnings: list[str] = []
    for path in sorted(directory.iterdir()):
        if not path.name.lower().startswith(ENV_PREFIX.lower()) or not path.is_file():
            continue
        try:
            raw = _read_secret(path)
            mode = path.stat().st_mode
        except OSError as error:
            raise SettingsError(
                f"--secrets.dir: {path.name}: cannot read ({error.strerror})"
            ) from None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SettingsError(f"--secrets.dir: {path.name} is not UTF-8 text") from None
        if mode & 0o004:
            warnings.append(f"--secrets.dir: {path.name} is readable by every user; chmod o-r it")
    return warnings


def settings_warnings(
    settings: Settings, *, config_file: Path | None = None, secrets_dir: Path | None = None
) -> list[str]:
    """What is allowed but unwise: secrets readable by anyone or kept in the YAML file, and
    credentials sent without TLS. Never contains a secret's value."""
    warnings = _check_secrets_dir(secrets_dir) if secrets_dir is not None else []
    if config_file is not None:
        import yaml

        try:
            content = read_yaml_file(config_file)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, YamlTooLarge):
            content = None
        held = sorted(
            name
            for name in (content if isinstance(content, dict) else {})
            if isinstance(name, str) and name.lower() in SECRET_FIELDS
        )
        if held:
            warnings.append(
                f"--config.file: {config_file} holds {', '.join(held)}; keep secrets in "
                "--secrets.dir or the environment, not in a file that is often shared"
            )
            try:
                world = config_file.stat().st_mode & 0o004
            except OSError:
                world = 0
            if world:
                warnings.append(f"--config.file: {config_file} holds a secret and is readable "
                                "by every user; chmod o-r it")  # fmt: skip
    if settings.accounts and settings.demo:
        warnings.append("--demo polls its own two simulated accounts; the accounts list is unused")
    elif settings.accounts:
        ignored = [ENV_PREFIX + n.upper() for n in CREDENTIALS if getattr(settings, n)]
        if ignored:
            warnings.append(
                f"{', '.join(ignored)} unused: the accounts list names each account's credentials"
            )
    if not settings.demo:
        for name in ("oauth_url", "api_url"):
            url = getattr(settings, name)
            host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            if url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
                warnings.append(
                    f"{ENV_PREFIX}{name.upper()} is http://: the credentials and the token "
                    "travel unencrypted; use https://"
                )
    return warnings


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    secrets_dir: Path | None = None,
    flags: Mapping[str, str] | None = None,
    require_credentials: bool = True,
) -> Settings:
    """Build settings from every source; raise SettingsError with one line per invalid setting,
    naming where it came from (`flags` maps a setting to the flag that gave it).

    `require_credentials=False` (for --config.check) checks everything but their presence."""
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsError(f"--config.file: {config_file} is not a readable file")
        _check_yaml(config_file)
    if secrets_dir is not None and not secrets_dir.is_dir():
        raise SettingsError(f"--secrets.dir: {secrets_dir} is not a directory")
    if secrets_dir is not None:
        _check_secrets_dir(secrets_dir)  # a file that is not UTF-8 fails here, in one line
    settings_cls: type[Settings] = Settings
    if config_file is not None:

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": config_file})

        settings_cls = FileSettings
    if not require_credentials:

        class CheckedSettings(settings_cls):  # type: ignore[valid-type,misc]
            @model_validator(mode="after")
            def _credentials(self) -> CheckedSettings:  # replaces Settings' check
                return self

        settings_cls = CheckedSettings

    def origins() -> Origins:
        return Origins.gather(
            ENV_PREFIX,
            Settings.model_fields,
            overrides=overrides or {},
            flags=flags,
            environ=os.environ,
            secrets_dir=secrets_dir,
            config_file=config_file,
        )

    try:
        settings = settings_cls(_secrets_dir=secrets_dir, **(overrides or {}))
        settings._accounts = resolve_accounts(
            settings,
            config_file=config_file,
            secrets_dir=secrets_dir,
            missing_ok=not require_credentials,
        )
        return settings
    except AccountError as error:
        raise SettingsError(f"{origins().where(error.loc)}: {error.message}") from None
    except ValidationError as error:
        raise SettingsError(*describe(error, origins(), Settings)) from None
    except PydanticSettingsError as error:  # a value a source could not decode, say
        raise SettingsError(source_error(str(error), origins())) from None
    except (UnicodeDecodeError, OSError):  # a secrets file changed under us, say
        raise SettingsError("--secrets.dir: a secrets file cannot be read as UTF-8") from None


MAX_YAML_BYTES = 4 * 1024 * 1024  # a settings file larger than this is refused unread
# Nodes a YAML file may hold once its aliases are expanded: every list and mapping is walked
# (and its items copied) by the settings, so an alias "bomb" of a few lines (a billion laughs)
# would take minutes and gigabytes, on the event loop when it is a reload.
MAX_YAML_NODES = 1_000_000


class YamlTooLarge(ValueError):
    """A YAML text beyond what settings are read from; the message says which limit."""


def _expanded_nodes(root: Any) -> int:
    """How many nodes `root` has with every alias expanded, counting each shared node once per
    reference (by its memoized size, so the count never walks the expansion itself)."""
    import yaml

    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # post-order, without recursion (the nesting was checked by compose)
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[id(node)] = 1
            continue
        if children_done:
            sizes[id(node)] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(raw: bytes) -> Any:
    """yaml.safe_load, within bounds: at most MAX_YAML_BYTES, nested no deeper than the parser
    can go, and at most MAX_YAML_NODES nodes with aliases expanded. Raises YamlTooLarge,
    yaml.YAMLError or UnicodeDecodeError."""
    import yaml

    if len(raw) > MAX_YAML_BYTES:
        raise YamlTooLarge(f"larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    text = raw.decode("utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        if _expanded_nodes(root) > MAX_YAML_NODES:
            raise YamlTooLarge(f"more than {MAX_YAML_NODES:,} values once its aliases are expanded")
        return yaml.safe_load(text)
    except RecursionError:
        raise YamlTooLarge("nested too deeply") from None


def read_yaml_file(path: Path) -> Any:
    """A YAML file by load_yaml, reading no more than the limit."""
    _regular(path)
    with path.open("rb") as source:
        return load_yaml(source.read(MAX_YAML_BYTES + 1))


def _check_yaml(path: Path) -> None:
    import yaml

    try:
        content = read_yaml_file(path)
    except OSError as error:
        raise SettingsError(f"--config.file: {path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise SettingsError(f"--config.file: {path}: is not UTF-8 text") from None
    except YamlTooLarge as error:
        raise SettingsError(f"--config.file: {path}: {error}") from None
    except yaml.YAMLError as error:
        # The parser's message quotes the offending line, which may hold a secret: give the line.
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else f"--config.file: {path}"
        raise SettingsError(f"{where}: invalid YAML (the line is not shown)") from None
    if content is not None and not isinstance(content, dict):
        raise SettingsError(f"--config.file: {path}: must be a mapping of setting names")
