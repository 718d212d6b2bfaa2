"""`--web.config.file`: TLS and basic auth, in the Prometheus exporter-toolkit file format.

Supported keys: `tls_server_config` (cert_file, key_file, client_auth_type, client_ca_file,
min_version, max_version), `http_server_config.headers`, and `basic_auth_users` (bcrypt hashes;
needs the `bcrypt` package, the `auth` extra). The file is read once at start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from exporter.settings import SettingsError

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
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
_VERIFY = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersion = "TLS12"
    max_version: TLSVersion = "TLS13"


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
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"{where}: cannot read ({error.strerror})") from None
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
    return config


def ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    tls = config.tls_server_config
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:
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


class BasicAuthChecker:
    """Checks `Authorization: Basic` against bcrypt hashes, caching successful checks."""

    def __init__(self, users: dict[str, SecretStr]) -> None:
        self._users = users
        self._bcrypt = _bcrypt("--web.config.file") if users else None
        self._verified: set[tuple[str, bytes]] = set()

    async def allowed(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        if not sep or hashed is None:
            return False
        # The cache holds a digest keyed by the stored hash, never the password itself.
        key = (
            user,
            hashlib.sha256(hashed.get_secret_value().encode() + password.encode()).digest(),
        )
        if key in self._verified:
            return True
        ok = await asyncio.to_thread(self._check, password, hashed.get_secret_value())
        if ok:
            self._verified.add(key)
        return ok

    def _check(self, password: str, hashed: str) -> bool:
        if self._bcrypt is None:
            return False
        try:
            return bool(self._bcrypt.checkpw(password.encode(), hashed.encode()))
        except ValueError:  # a malformed hash in the file
            return False


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middlewares(config: WebConfig) -> list[Any]:
    """aiohttp middlewares for basic auth and extra response headers."""
    out: list[Any] = []
    if config.basic_auth_users:
        checker = BasicAuthChecker(config.basic_auth_users)

        @web.middleware
        async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if await checker.allowed(request.headers.get("Authorization", "")):
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
