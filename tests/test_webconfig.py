"""--web.config.file: TLS and basic auth on a real exporter process, and clear errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from pydantic import SecretStr

from conftest import Exporter, free_port, start_exporter, stop_process, wait_for
from exporter.metrics.store import SnapshotStore
from exporter.settings import SettingsError
from exporter.web.app import create_app
from exporter.web.webconfig import BasicAuthChecker, WebConfig, load_web_config, ssl_context


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "server.crt", tmp / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def fetch(url: str, context: ssl.SSLContext | None = None, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Exporter, ssl.SSLContext]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, _ = self_signed(tmp)
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    (tmp / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        f"basic_auth_users:\n  alice: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    exporter = start_exporter(tmp, "--demo", "--web.config.file", str(tmp / "web.yml"))
    exporter.url = exporter.url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cert))
    try:
        wait_for(lambda: fetch(exporter.url + "/-/healthy", context, "alice:s3cret-pass") == 200,
                 timeout=30, what="TLS exporter")  # fmt: skip
        yield exporter, context
    finally:
        stop_process(exporter.process)


def test_tls_and_basic_auth(secured: tuple[Exporter, ssl.SSLContext]) -> None:
    exporter, context = secured
    assert fetch(exporter.url + "/metrics", context, "alice:s3cret-pass") == 200
    assert fetch(exporter.url + "/metrics", context, "alice:wrong") == 401
    assert fetch(exporter.url + "/metrics", context, "mallory:s3cret-pass") == 401
    assert fetch(exporter.url + "/metrics", context) == 401
    plain = exporter.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(plain + "/metrics")
    assert "s3cret-pass" not in exporter.log.read_text()


def test_probes_need_no_credentials_the_rest_does(
    secured: tuple[Exporter, ssl.SSLContext],
) -> None:
    exporter, context = secured
    assert fetch(exporter.url + "/-/healthy", context) == 200
    wait_for(lambda: fetch(exporter.url + "/-/ready", context) == 200, what="ready without auth")
    for path in ("/", "/metrics", "/-/healthyx", "/nope"):
        assert fetch(exporter.url + path, context) == 401, path
        assert fetch(exporter.url + path, context, "alice:wrong") == 401, path
    assert fetch(exporter.url + "/", context, "alice:s3cret-pass") == 200
    # a Kubernetes httpGet probe with scheme HTTPS: no credentials, no certificate check
    probe = ssl.create_default_context()
    probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
    assert fetch(exporter.url + "/-/healthy", probe) == 200
    assert fetch(exporter.url + "/-/ready", probe) == 200


def test_toolkit_fields_not_applied_are_a_logged_warning(
    secured: tuple[Exporter, ssl.SSLContext],
) -> None:
    exporter, _ = secured
    warnings = [line for line in exporter.log.read_text().splitlines() if "cipher_suites" in line]
    assert len(warnings) == 1 and "level=warning" in warnings[0], warnings
    assert "not applied" in warnings[0]


def test_extra_headers(secured: tuple[Exporter, ssl.SSLContext]) -> None:
    exporter, context = secured
    request = urllib.request.Request(exporter.url + "/-/healthy")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"alice:s3cret-pass").decode())
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        assert response.headers["X-Frame-Options"] == "deny"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "TLS files"),
        ("tls_server_config: {cert_file: a}\n", "key_file"),
        ("basic_auth_users: [1, 2]\n", "basic_auth_users"),
        ("unknown_key: 1\n", "unknown_key"),
        ("a: [\n", "invalid YAML"),
    ],
)
def test_bad_web_config_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(content)
    with pytest.raises(SettingsError, match=message):
        load_web_config(path)


def test_cli_bad_web_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--web.config.file", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--web.config.file" in result.stderr


# In-process servers: the app and middlewares of the daemon, served through TLS.

USERS_FILE = "basic_auth_users:\n  alice: '{hashed}'\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("certs")
    self_signed(tmp)
    return tmp


@contextlib.asynccontextmanager
async def serve_tls(
    config: WebConfig, store: SnapshotStore
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    runner = web.AppRunner(create_app(store, web_config=config))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context(config)).start()
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as session:
            yield f"https://127.0.0.1:{port}", session
    finally:
        await runner.cleanup()


def web_config(certs: Path, extra: str = "") -> WebConfig:
    path = certs / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + extra)
    return load_web_config(path)


AUTH = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}


@pytest.mark.parametrize("auth_on", [True, False], ids=["basic-auth", "no-auth"])
async def test_probes_through_tls_with_and_without_auth(certs: Path, auth_on: bool) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    config = web_config(certs, USERS_FILE.format(hashed=hashed) if auth_on else "")
    store = SnapshotStore()
    guarded = 401 if auth_on else 200
    async with serve_tls(config, store) as (url, session):
        assert (await session.get(url + "/-/healthy")).status == 200
        assert (await session.head(url + "/-/healthy")).status == 200
        assert (await session.get(url + "/-/ready")).status == 503  # no cycle yet: not ready
        store.ready.set()
        assert (await session.get(url + "/-/ready")).status == 200
        for path in ("/", "/metrics"):
            assert (await session.get(url + path)).status == guarded, path
            assert (await session.get(url + path, headers=AUTH)).status == 200, path
        # only the routes themselves are open: no other method, no other spelling
        assert (await session.post(url + "/-/healthy")).status == (401 if auth_on else 405)
        assert (await session.get(url + "/-/healthy/x")).status == (401 if auth_on else 404)
        assert (await session.get(url + "/-/ready", headers=AUTH)).status == 200


async def test_unknown_user_and_wrong_password_both_cost_a_bcrypt_compare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)).decode()
    checker = BasicAuthChecker({"alice": SecretStr(hashed)})
    assert checker._dummy.startswith("$2b$05$")  # as costly as the configured hash
    compared: list[str] = []
    check = checker._check

    def spy(password: str, against: str) -> bool:
        assert threading.current_thread().name.startswith("bcrypt")  # its own thread, not the pool
        compared.append(against)
        return check(password, against)

    monkeypatch.setattr(checker, "_check", spy)

    def header(credentials: str) -> str:
        return "Basic " + base64.b64encode(credentials.encode()).decode()

    assert not await checker.allowed(header("mallory:pw"))
    assert not await checker.allowed(header("alice:wrong"))
    assert compared == [checker._dummy, hashed]
    results = await asyncio.gather(*(checker.allowed(header(f"u{i}:pw")) for i in range(4)))
    assert results == [False] * 4 and len(compared) == 6
    assert await checker.allowed(header("alice:pw"))
    assert await checker.allowed(header("alice:pw"))  # cached: no second compare
    assert len(compared) == 7


def client_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "client.crt", tmp / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=some-client", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_request_client_cert_admits_clients_with_and_without_one(
    certs: Path, tmp_path: Path
) -> None:
    """As in exporter-toolkit: RequestClientCert needs no client_ca_file and verifies nothing,
    so a certificate from no known CA is no reason to refuse the connection."""
    config = web_config(certs, "  client_auth_type: RequestClientCert\n")
    cert, key = client_cert(tmp_path)
    with_cert = ssl.create_default_context()
    with_cert.check_hostname, with_cert.verify_mode = False, ssl.CERT_NONE
    with_cert.load_cert_chain(cert, key)
    async with serve_tls(config, SnapshotStore()) as (url, session):
        assert (await session.get(url + "/-/healthy")).status == 200
        assert (await session.get(url + "/-/healthy", ssl=with_cert)).status == 200


async def test_require_and_verify_client_cert_refuses_an_unknown_one(
    certs: Path, tmp_path: Path
) -> None:
    config = web_config(
        certs, "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
    )
    cert, key = client_cert(tmp_path)
    with_cert = ssl.create_default_context()
    with_cert.check_hostname, with_cert.verify_mode = False, ssl.CERT_NONE
    with_cert.load_cert_chain(cert, key)
    async with serve_tls(config, SnapshotStore()) as (url, session):
        with pytest.raises(aiohttp.ClientError):
            await session.get(url + "/-/healthy")  # no certificate
        with pytest.raises(aiohttp.ClientError):
            await session.get(url + "/-/healthy", ssl=with_cert)  # not from client_ca_file


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.mark.parametrize(
    ("extra", "verify_mode", "warned"),
    [
        ("", ssl.CERT_NONE, []),
        (
            "  cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
            "  curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n",
            ssl.CERT_NONE,
            ["cipher_suites", "curve_preferences", "prefer_server_cipher_suites"],
        ),
        ("  client_auth_type: RequestClientCert\n", ssl.CERT_NONE, []),
        (
            "  client_auth_type: RequestClientCert\n  client_ca_file: server.crt\n",
            ssl.CERT_NONE,
            [],
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.crt\n",
            ssl.CERT_OPTIONAL,
            [],
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n",
            ssl.CERT_REQUIRED,
            [],
        ),
    ],
    ids=["plain", "not-applied", "request", "request-with-ca", "verify-if-given", "verify"],
)
def test_good_toolkit_files(
    certs: Path,
    caplog: pytest.LogCaptureFixture,
    extra: str,
    verify_mode: ssl.VerifyMode,
    warned: list[str],
) -> None:
    path = certs / "good.yml"
    path.write_text(TLS + extra)
    with caplog.at_level(logging.WARNING, logger="exporter.web.webconfig"):
        config = load_web_config(path)
    context = ssl_context(config)
    assert context is not None and context.verify_mode == verify_mode
    assert [
        m for r in caplog.records for m in warned if f"tls_server_config.{m} " in r.message
    ] == (warned)
    assert len(caplog.records) == len(warned)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  client_auth_type: RequireAnyClientCert\n", "not possible with Python's ssl"),
        (
            "  client_auth_type: RequireClientCert\n  client_ca_file: server.crt\n",
            "not possible with Python's ssl",
        ),
        ("  client_ca_file: server.crt\n", "client_ca_file is set but client_auth_type is No"),
        ("  client_auth_type: VerifyClientCertIfGiven\n", "needs client_ca_file"),
        ("  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
        ("  client_auth_type: Sometimes\n", "client_auth_type"),
        ("  cipher_suites: TLS_AES_128_GCM_SHA256\n", "cipher_suites"),
        ("  prefer_server_cipher_suites: maybe\n", "prefer_server_cipher_suites"),
        ("  client_auth_type: RequestClientCert\n  client_ca_file: none.crt\n", "TLS files"),
    ],
)
def test_bad_toolkit_files(certs: Path, extra: str, message: str) -> None:
    path = certs / "bad.yml"
    path.write_text(TLS + extra)
    with pytest.raises(SettingsError, match=message) as caught:
        load_web_config(path)
    assert "\n" not in str(caught.value)
