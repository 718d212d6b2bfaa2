"""`python -m exporter.healthcheck`: GET /-/healthy of the exporter on this host; exit 0 on 200.

For container health checks (the Dockerfile's HEALTHCHECK) and anything else that runs beside
the exporter. The address is `--web.listen-address`, else `ZOOM_EXPORTER_LISTEN_ADDRESS`, else
0.0.0.0:9924; a wildcard host is reached on loopback. HTTPS is spoken when `--web.config.file`
(or `ZOOM_EXPORTER_WEB_CONFIG_FILE`) has a `tls_server_config`; without a web config file,
plain HTTP is tried first and HTTPS second, so the check also works when only the exporter was
given the file. The certificate is not verified: the peer is this host. No credentials are
sent: `/-/healthy` must answer without them. Prints one line on stderr; exit 1 on anything but
200. Standard library and PyYAML only, so that it starts fast.
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9924"
PATH = "/-/healthy"
TIMEOUT = 3.0  # seconds; below Docker's default health check timeout of 30 s
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


class CheckError(Exception):
    """The check could not run (bad address, unreadable web config); the message says why."""


def target(listen_address: str) -> tuple[str, int]:
    """The host and port to connect to for a listen address: "0.0.0.0:9924" -> 127.0.0.1."""
    host, sep, port_text = listen_address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise CheckError(f"listen address {listen_address!r} is not host:port")
    host = host.strip("[]")
    return WILDCARDS.get(host, host), int(port_text)


def uses_tls(web_config: Path) -> bool:
    """Whether the exporter-toolkit web config turns TLS on."""
    try:
        content = yaml.safe_load(web_config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CheckError(f"cannot read the web config {web_config}: {error}") from None
    return isinstance(content, dict) and bool(content.get("tls_server_config"))


def get(host: str, port: int, tls: bool, timeout: float = TIMEOUT) -> int:
    """The status of GET /-/healthy; raises OSError or http.client.HTTPException."""
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # loopback: the peer is the exporter on this host
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", PATH, headers={"User-Agent": "zoom-qos-exporter-healthcheck"})
        return connection.getresponse().status
    finally:
        connection.close()


def url(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}{PATH}"


def check(listen_address: str, web_config: Path | None, timeout: float = TIMEOUT) -> str:
    """One line saying the exporter is healthy; raises CheckError saying why it is not."""
    host, port = target(listen_address)
    schemes = [uses_tls(web_config)] if web_config is not None else [False, True]
    failures = []
    for tls in schemes:
        where = url(host, port, tls)
        try:
            status = get(host, port, tls, timeout)
        except (OSError, http.client.HTTPException) as error:
            failures.append(f"{where}: {type(error).__name__}: {error}".rstrip(": "))
            if isinstance(error, ConnectionRefusedError):
                break  # nothing listens: no point in trying HTTPS
            continue
        if status == 200:
            return f"healthy: {where} answered 200"
        raise CheckError(f"unhealthy: {where} answered {status}")
    raise CheckError("unhealthy: " + "; ".join(failures))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.healthcheck",
        description="Exit 0 if the exporter on this host answers 200 on /-/healthy.",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="HOST:PORT",
        default=os.environ.get("ZOOM_EXPORTER_LISTEN_ADDRESS") or DEFAULT_LISTEN_ADDRESS,
        help="the exporter's listen address (default: $ZOOM_EXPORTER_LISTEN_ADDRESS or "
        f"{DEFAULT_LISTEN_ADDRESS})",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config",
        metavar="PATH",
        type=Path,
        default=os.environ.get("ZOOM_EXPORTER_WEB_CONFIG_FILE") or None,
        help="the exporter's web config: HTTPS if it has tls_server_config (default: "
        "$ZOOM_EXPORTER_WEB_CONFIG_FILE; without one, HTTP then HTTPS)",
    )
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT, metavar="SECONDS", help="per attempt"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        line = check(args.listen_address, args.web_config, args.timeout)
    except CheckError as error:
        print(error, file=sys.stderr)
        return 1
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
