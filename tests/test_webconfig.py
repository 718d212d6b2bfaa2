"""--web.config.file: TLS and basic auth on a real exporter process, and clear errors."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from conftest import Exporter, start_exporter, stop_process, wait_for
from exporter.settings import SettingsError
from exporter.web.webconfig import load_web_config


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
