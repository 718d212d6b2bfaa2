"""The deploy files, checked with the tools an operator would use, as far as CI can without a
Docker engine or a cluster: hadolint and a replay of the Dockerfile's install steps, `docker-compose
config`, promtool and a real Prometheus on the compose stack's config, kustomize and Kubernetes
schemas, systemd-analyze, and the version every file names.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from conftest import ROOT, free_port, http_get, stop_process, wait_for
from exporter import __version__, healthcheck

DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE = f"zoom-qos-exporter:{__version__}"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A command-line tool from the dev venv (PyPI) or the system (Debian); fail if missing."""
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/test, which installs it")
    return found


def run(*argv: str, **options: Any) -> subprocess.CompletedProcess[str]:
    options.setdefault("timeout", 300)
    result = subprocess.run(argv, capture_output=True, text=True, **options)
    if result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, split into stages at FROM
    (instructions before the first FROM, the global ARGs, form stage 0)."""
    stages: list[list[Instruction]] = [[]]
    logical = ""
    for line in path.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        keyword, _, args = (logical + line).strip().partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of a CMD/ENTRYPOINT/HEALTHCHECK CMD; fails on the shell form."""
    assert args.startswith("["), f"not in exec form: {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def docker_env(stage: list[Instruction]) -> dict[str, str]:
    """ENV KEY=VALUE pairs (quotes removed, ${PATH} left out)."""
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_pins_labels_and_runs_unprivileged() -> None:
    stages = dockerfile_stages()
    global_args = {i.args.partition("=")[0]: i.args.partition("=")[2] for i in stages[0]}
    base = global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), f"unpinned base image {base}"
    runtime = stages[-1]
    args = {
        i.args.partition("=")[0]: i.args.partition("=")[2] for i in runtime if i.keyword == "ARG"
    }
    assert args["VERSION"] == __version__
    labels = " ".join(i.args for i in runtime if i.keyword == "LABEL")
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    (user,) = [i.args for i in runtime if i.keyword == "USER"]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"  # numeric: runAsNonRoot
    (healthcheck,) = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    assert exec_form(healthcheck.partition(" CMD ")[2])[-2:] == ["-m", "exporter.healthcheck"]
    exec_form(next(i.args for i in runtime if i.keyword == "ENTRYPOINT"))
    env = docker_env(runtime)
    assert env["ZOOM_EXPORTER_STORAGE_PATH"] == "/var/lib/zoom-qos-exporter"
    volumes = [json.loads(i.args) for i in runtime if i.keyword == "VOLUME"]
    assert volumes == [[env["ZOOM_EXPORTER_STORAGE_PATH"]]]
    build_runs = " ".join(i.args for i in stages[1] if i.keyword == "RUN")
    assert '".[auth]"' in build_runs, "the image must have the auth extra (bcrypt)"


@dataclass
class Replay:
    """The Dockerfile's install steps, run on this machine: its /opt/... venv under `root`."""

    root: Path
    env: dict[str, str]  # the image's ENV, paths moved under root
    entrypoint: list[str]
    healthcheck: list[str]

    def start(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> Served:
        port = free_port()
        log = tmp / f"replay-{port}.log"
        full = {**self.env, "ZOOM_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}", **(env or {})}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [*self.entrypoint, *args], stdout=sink, stderr=subprocess.STDOUT, env=full, cwd=tmp
            )
        return Served(process, port, log, full)

    def health(
        self, served: Served, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.healthcheck,
            capture_output=True,
            text=True,
            env={**served.env, **(env or {})},
            cwd=self.root,
            timeout=30,
        )


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str]


def replay_dockerfile(root: Path) -> Replay:
    """Replay the build stage (WORKDIR, COPY, RUN) with every absolute path moved under `root`,
    then take the runtime stage's ENV, ENTRYPOINT and HEALTHCHECK the same way."""
    build, runtime = dockerfile_stages()[1], dockerfile_stages()[-1]

    def moved(text: str) -> str:
        return re.sub(r"(?<![\w.])/(opt|src|var)/", lambda m: f"{root}/{m.group(1)}/", text)

    bin_dir = root / "bin"  # `python` as the image has it: this interpreter
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    cwd = root
    for ins in build:
        if ins.keyword == "WORKDIR":
            cwd = Path(moved(ins.args))
            cwd.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = shlex.split(ins.args)
            assert not any(s.startswith("--") for s in sources), ins
            target = cwd / dest if not dest.startswith("/") else Path(moved(dest))
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(origin, target / origin.name if dest.endswith("/") else target)
        elif ins.keyword == "RUN":
            run(
                "bash",
                "-euo",
                "pipefail",
                "-c",
                moved(ins.args),
                cwd=cwd,
                env={**os.environ, "PATH": path},
                timeout=600,
            )
    env = {k: moved(v) for k, v in docker_env(runtime).items() if k != "PATH"}
    venv_bin = Path(moved("/opt/zoom-qos-exporter/bin"))
    env["PATH"] = f"{venv_bin}{os.pathsep}{os.environ['PATH']}"
    env["HOME"] = str(root)
    for variable in ("ZOOM_EXPORTER_STORAGE_PATH",):
        Path(env[variable]).mkdir(parents=True, exist_ok=True)
    entrypoint = exec_form(next(i.args for i in runtime if i.keyword == "ENTRYPOINT"))
    entrypoint[0] = (
        str(venv_bin / entrypoint[0]) if "/" not in entrypoint[0] else moved(entrypoint[0])
    )
    healthcheck_args = next(i.args for i in runtime if i.keyword == "HEALTHCHECK")
    healthcheck = [moved(a) for a in exec_form(healthcheck_args.partition(" CMD ")[2])]
    return Replay(root, env, entrypoint, healthcheck)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    return replay_dockerfile(tmp_path_factory.mktemp("image"))


def wait_healthy(replay: Replay, served: Served, env: dict[str, str] | None = None) -> str:
    def healthy() -> str | None:
        if served.process.poll() is not None:
            raise AssertionError(f"exporter exited: {served.log.read_text()}")
        result = replay.health(served, env)
        return result.stderr if result.returncode == 0 else None

    try:
        return wait_for(healthy, timeout=30, interval=0.3, what="the image's health check")
    except AssertionError:
        last = replay.health(served, env)
        log = served.log.read_text()
        raise AssertionError(
            f"health check: {last.returncode} {last.stderr}\nlog:\n{log}"
        ) from None


def test_dockerfile_install_serves_and_passes_its_health_check(
    replay: Replay, tmp_path: Path
) -> None:
    venv = Path(replay.entrypoint[0]).parent.parent
    assert str(venv).startswith(str(replay.root))
    python = venv / "bin" / "python"
    # the auth extra is in; the package comes from the wheel, not from this checkout
    code = "import bcrypt, exporter; print(exporter.__file__)"
    location = run(str(python), "-c", code, cwd=tmp_path).stdout.strip()
    assert location.startswith(str(venv)), location
    served = replay.start(tmp_path, env={"ZOOM_EXPORTER_DEMO": "true"})
    try:
        line = wait_healthy(replay, served)
        assert line.strip().startswith("healthy: http://127.0.0.1:"), line
        assert len(line.strip().splitlines()) == 1
        status, _, body = http_get(f"http://127.0.0.1:{served.port}/metrics")
        assert status == 200 and f'version="{__version__}"' in body.decode()
    finally:
        stop_process(served.process)
    result = replay.health(served)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Connection refused" in result.stderr


def self_signed(tmp: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp / "server.key"), "-out", str(tmp / "server.crt")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def web_config(tmp: Path, *, auth: bool) -> Path:
    self_signed(tmp)
    text = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    if auth:
        hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
        text += f"basic_auth_users:\n  alice: '{hashed}'\n"
    path = tmp / "web.yml"
    path.write_text(text)
    return path


def test_image_health_check_speaks_tls(replay: Replay, tmp_path: Path) -> None:
    """TLS from --web.config.file, which only the exporter is given: the check finds HTTPS."""
    config = web_config(tmp_path, auth=False)
    served = replay.start(
        tmp_path, "--web.config.file", str(config), env={"ZOOM_EXPORTER_DEMO": "true"}
    )
    try:
        line = wait_healthy(replay, served)
        assert line.strip().startswith("healthy: https://127.0.0.1:"), line
        told = replay.health(served, {"ZOOM_EXPORTER_WEB_CONFIG_FILE": str(config)})
        assert told.returncode == 0 and "https://" in told.stderr, told.stderr
    finally:
        stop_process(served.process)


@pytest.mark.xfail(reason="needs the privacy branch: health endpoints without auth", strict=False)
def test_image_health_check_with_tls_and_basic_auth(replay: Replay, tmp_path: Path) -> None:
    config = web_config(tmp_path, auth=True)
    served = replay.start(
        tmp_path, "--web.config.file", str(config), env={"ZOOM_EXPORTER_DEMO": "true"}
    )
    try:
        line = wait_healthy(replay, served, {"ZOOM_EXPORTER_WEB_CONFIG_FILE": str(config)})
        assert line.strip().startswith("healthy: https://"), line
    finally:
        stop_process(served.process)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:9924", ("127.0.0.1", 9924)),
        (":9924", ("127.0.0.1", 9924)),
        ("[::]:9000", ("::1", 9000)),
        ("10.1.2.3:9924", ("10.1.2.3", 9924)),
    ],
)
def test_health_check_target(listen: str, expected: tuple[str, int]) -> None:
    assert healthcheck.target(listen) == expected


def test_health_check_fails_on_anything_but_200(tmp_path: Path) -> None:
    """A server that answers 503: exit 1, one line naming the status."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter.healthcheck", f"--web.listen-address=:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert result.stderr.strip() == f"unhealthy: http://127.0.0.1:{port}/-/healthy answered 503"
