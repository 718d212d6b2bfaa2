"""`--web.config.file`: TLS and basic auth, in the Prometheus exporter-toolkit file format.

Supported keys: `tls_server_config` (cert_file, key_file, client_auth_type, client_ca_file,
min_version, max_version), `http_server_config.headers`, and `basic_auth_users` (bcrypt hashes;
needs the `bcrypt` package, the `auth` extra). `cipher_suites`, `curve_preferences` and
`prefer_server_cipher_suites` are accepted, so a file written for another exporter loads, but
not applied (Python's ssl defaults are used), with a warning. The file is read once at start.

With basic auth on, the probe paths `/-/healthy` and `/-/ready` answer without credentials;
every other path, the status page included, needs them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hashlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from exporter.settings import SettingsError, YamlTooLarge, read_yaml_file

log = logging.getLogger(__name__)

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # exporter-toolkit's old name of RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit (web/tls_config.go) verifies a client certificate against client_ca_file
# only in the two *Verify* modes. RequestClientCert asks for one and never checks it, which
# admits the same clients as not asking: Python's ssl cannot ask without verifying, so it does
# not ask. RequireAnyClientCert demands an unverified certificate, which Python's ssl cannot
# do at all (it has no verify callback): refused at start rather than weakened in silence.
_VERIFY = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Paths that answer without credentials: liveness and readiness probes (Docker, Kubernetes)
# carry none, and they reveal nothing but "up" and "ready".
PROBE_PATHS = frozenset({"/-/healthy", "/-/ready"})
# exporter-toolkit fields this server accepts but cannot apply.
_NOT_APPLIED = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersion = "TLS12"
    max_version: TLSVersion = "TLS13"
    # exporter-toolkit fields accepted for compatibility; not applied (see _NOT_APPLIED).
    cipher_suites: list[str] = Field(default_factory=list)
    curve_preferences: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True


class HTTPServerConfig(_Strict):
    headers: dict[str, str] = Field(default_factory=dict)
    http2: bool = True  # accepted for compatibility; aiohttp serves HTTP/1.1


class WebConfig(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, SecretStr] = Field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Parse and check the file; raise SettingsError with one clear line (no secrets)."""
    where = f"--web.config.file: {path}"
    try:
        raw: Any = read_yaml_file(path)
    except OSError as error:
        raise SettingsError(f"{where}: cannot read ({error.strerror})") from None
    except YamlTooLarge as error:
        raise SettingsError(f"{where}: {error}") from None
    except (UnicodeDecodeError, yaml.YAMLError):
        raise SettingsError(f"{where}: invalid YAML") from None
    try:
        config = WebConfig.model_validate(raw or {})
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SettingsError(f"{where}: {loc}: {first['msg']}") from None
    base = path.parent
    tls = config.tls_server_config
    if tls is not None:
        for name in _NOT_APPLIED:
            if name in tls.model_fields_set:
                log.warning(
                    "%s: tls_server_config.%s is accepted for exporter-toolkit compatibility "
                    "but not applied: this server uses Python's ssl defaults",
                    where,
                    name,
                )
        config = config.model_copy(
            update={
                "tls_server_config": tls.model_copy(
                    update={
                        "cert_file": base / tls.cert_file,
                        "key_file": base / tls.key_file,
                        "client_ca_file": base / tls.client_ca_file if tls.client_ca_file else None,
                    }
                )
            }
        )
        ssl_context(config)  # fail now, at start, on unreadable certificates
    if config.basic_auth_users:
        _bcrypt(where)
        for user, hashed in config.basic_auth_users.items():
            if not _BCRYPT_HASH.match(hashed.get_secret_value()):
                log.warning(
                    "%s: basic_auth_users: the value for a user is not a bcrypt hash; that user "
                    "can never log in (user %r)",
                    where,
                    user[:64],
                )
    return config


def ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    tls = config.tls_server_config
    if tls is None:
        return None
    where = "--web.config.file: tls_server_config"
    if tls.client_auth_type in ("RequireAnyClientCert", "RequireClientCert"):
        raise SettingsError(
            f"{where}: client_auth_type {tls.client_auth_type} (an unverified client certificate) "
            "is not possible with Python's ssl; use RequireAndVerifyClientCert with client_ca_file"
        )
    if tls.client_ca_file is not None and tls.client_auth_type == "NoClientCert":
        raise SettingsError(f"{where}: client_ca_file is set but client_auth_type is NoClientCert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:  # read even when unused, as exporter-toolkit does
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError) as error:
        raise SettingsError(f"--web.config.file: cannot load TLS files: {error}") from None
    context.verify_mode = _VERIFY[tls.client_auth_type]
    if context.verify_mode != ssl.CERT_NONE and tls.client_ca_file is None:
        raise SettingsError(
            f"--web.config.file: client_auth_type {tls.client_auth_type} needs client_ca_file"
        )
    return context


def _bcrypt(where: str) -> Any:
    try:
        import bcrypt
    except ImportError:
        raise SettingsError(
            f"{where}: basic_auth_users needs the bcrypt package "
            "(pip install 'zoom-qos-exporter[auth]')"
        ) from None
    return bcrypt


_COST = re.compile(r"^\$2[abxy]?\$(\d{2})\$")
_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$")
# bcrypt runs on its own single thread, never the default pool that renders and publishes;
# this many compares may wait for it, and beyond that a request is answered 429 at once.
BCRYPT_QUEUE = 8


class AuthBusy(Exception):
    """Too many password checks are waiting: answer 429, not later."""


def _dummy_hash(bcrypt: Any, users: dict[str, SecretStr]) -> str:
    """A throwaway hash as costly as the dearest configured one, for unknown user names."""
    costs = [_COST.match(h.get_secret_value()) for h in users.values()]
    rounds = max((int(m.group(1)) for m in costs if m), default=10)
    rounds = min(max(rounds, 4), 31)
    return str(bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=rounds)).decode())


class BasicAuthChecker:
    """Checks `Authorization: Basic` against bcrypt hashes, caching successful checks.

    An unknown user name costs one bcrypt compare, as a wrong password does, so response time
    does not tell which names exist (exporter-toolkit's web/handler.go does the same). Compares
    run one at a time on a thread of their own (CPU-heavy; never the default pool, which
    renders /metrics and publishes cycles); when `BCRYPT_QUEUE` are already waiting, `allowed`
    raises AuthBusy at once instead of queueing more.
    """

    def __init__(self, users: dict[str, SecretStr]) -> None:
        self._users = users
        self._bcrypt = _bcrypt("--web.config.file") if users else None
        self._dummy = _dummy_hash(self._bcrypt, users) if users else ""
        self._verified: set[tuple[str, bytes]] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bcrypt")
        self._pending = 0  # compares running or waiting

    async def allowed(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        hashed = self._users.get(user)
        if hashed is None:
            # Compare against a throwaway hash anyway, to prevent user enumeration by timing.
            await self._compare(password, self._dummy)
            return False
        # The cache holds a digest keyed by the stored hash, never the password itself.
        key = (
            user,
            hashlib.sha256(hashed.get_secret_value().encode() + password.encode()).digest(),
        )
        if key in self._verified:
            return True
        ok = await self._compare(password, hashed.get_secret_value())
        if ok:
            self._verified.add(key)
        return ok

    async def _compare(self, password: str, hashed: str) -> bool:
        if self._pending > BCRYPT_QUEUE:
            raise AuthBusy
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._check, password, hashed)
        finally:
            self._pending -= 1

    def _check(self, password: str, hashed: str) -> bool:
        if self._bcrypt is None:
            return False
        try:
            return bool(self._bcrypt.checkpw(password.encode(), hashed.encode()))
        except ValueError:  # a malformed hash in the file
            return False


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_probe(request: web.Request) -> bool:
    """Whether the router sent the request to a probe path (decided by the matched route, not
    by the raw path, so no spelling of another path gets past auth)."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PROBE_PATHS


def middlewares(config: WebConfig) -> list[Any]:
    """aiohttp middlewares for basic auth and extra response headers."""
    out: list[Any] = []
    if config.basic_auth_users:
        checker = BasicAuthChecker(config.basic_auth_users)

        @web.middleware
        async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                allowed = _is_probe(request) or await checker.allowed(
                    request.headers.get("Authorization", "")
                )
            except AuthBusy:
                return web.Response(
                    status=429, text="Too many login attempts\n", headers={"Retry-After": "1"}
                )
            if allowed:
                return await handler(request)
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="zoom-qos-exporter"'},
            )

        out.append(basic_auth)
    headers = config.http_server_config.headers
    if headers:

        @web.middleware
        async def extra_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
            response = await handler(request)
            response.headers.update(headers)
            return response

        out.append(extra_headers)
    return out
