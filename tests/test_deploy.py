"""The deploy files, checked with the tools an operator would use, as far as CI can without a
Docker engine or a cluster: hadolint and a replay of the Dockerfile's install steps, `docker-compose
config`, promtool and a real Prometheus on the compose stack's config, kustomize and Kubernetes
schemas, systemd-analyze, and the version every file names.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from conftest import (
    ROOT,
    Exporter,
    free_port,
    http_get,
    require_binary,
    run_prometheus,
    stop_process,
    wait_for,
)
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


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for stage in dockerfile_stages()
        for ins in stage
        if ins.keyword == "COPY" and not ins.args.startswith("--from")
        for source in shlex.split(ins.args)[:-1]
    ]
    assert {"pyproject.toml", "README.md", "LICENSE", "exporter"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        hits = [p for p in patterns if fnmatch.fnmatch(source, p.removeprefix("**/"))]
        assert not hits, f"{source} is copied but .dockerignore excludes it ({hits})"
    assert {"tests", ".venv", ".git", "**/.env"} <= set(patterns)


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
        return re.sub(r"(?<![\w.])/(opt|src|var|etc)\b", lambda m: f"{root}/{m.group(1)}", text)

    bin_dir = root / "bin"  # `python` as the image has it: this interpreter
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    cwd = root
    for ins in build:
        if ins.keyword == "WORKDIR":
            cwd = Path(moved(ins.args))
            assert cwd.is_relative_to(root), f"{ins} would leave the temporary root"
            cwd.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = shlex.split(ins.args)
            assert not any(s.startswith("--") for s in sources), ins
            target = cwd / dest if not dest.startswith("/") else Path(moved(dest))
            assert target.is_relative_to(root), f"{ins} would leave the temporary root"
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


class StopWaiting(BaseException):
    """The exporter answered, and not 200: waiting longer will not change that. (A
    BaseException, so that wait_for does not take it for "not reachable yet".)"""


def wait_healthy(
    replay: Replay, served: Served, env: dict[str, str] | None = None, timeout: float = 30
) -> str:
    def healthy() -> str | None:
        if served.process.poll() is not None:
            raise AssertionError(f"exporter exited: {served.log.read_text()}")
        result = replay.health(served, env)
        if " answered " in result.stderr and result.returncode != 0:  # an HTTP answer, not 200
            raise StopWaiting(result.stderr)
        return result.stderr if result.returncode == 0 else None

    try:
        return wait_for(healthy, timeout=timeout, interval=0.3, what="the image's health check")
    except (AssertionError, StopWaiting):
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


def test_image_health_check_with_tls_and_basic_auth(replay: Replay, tmp_path: Path) -> None:
    config = web_config(tmp_path, auth=True)
    served = replay.start(
        tmp_path, "--web.config.file", str(config), env={"ZOOM_EXPORTER_DEMO": "true"}
    )
    try:
        told = {"ZOOM_EXPORTER_WEB_CONFIG_FILE": str(config)}
        line = wait_healthy(replay, served, told, timeout=10)
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


# ---------------------------------------------------------------------------------------------
# Prometheus: the compose stack's config, loaded and scraping for real
# ---------------------------------------------------------------------------------------------

PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"


def test_promtool_check_config() -> None:
    result = run(require_binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert "SUCCESS: 2 rule files found" in result.stdout, result.stdout
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    loaded = sorted(PROMETHEUS_DIR / name for name in config["rule_files"])
    assert loaded == sorted(PROMETHEUS_DIR.glob("*.rules.yml")), "every rule file is loaded"


def test_zoom_exporter_down_does_not_depend_on_the_job_name() -> None:
    (expr,) = [
        str(rule["expr"])
        for path in PROMETHEUS_DIR.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "ZoomExporterDown"
    ]
    assert "job=" not in expr and "job=~" not in expr, expr
    assert "absent(zoom_up)" in expr


def test_prometheus_scrapes_the_exporter_with_the_stacks_job(
    demo_exporter: Exporter, tmp_path: Path
) -> None:
    """deploy/prometheus/prometheus.yml as the compose stack runs it, but with the demo
    exporter as the target, a 1 s interval and no Alertmanager: the job scrapes, the rule
    files load from beside the config, and ZoomExporterDown clears."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for path in PROMETHEUS_DIR.glob("*.rules.yml"):
        shutil.copy(path, tmp_path / path.name)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config.pop("alerting")
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [demo_exporter.url.removeprefix("http://")]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    run(require_binary("promtool"), "check", "config", str(path))
    prom = run_prometheus(tmp_path, config)
    try:
        name = job["job_name"]
        assert name == "zoom-qos-exporter"
        prom.wait_query(f'up{{job="{name}"}} == 1', timeout=30)
        prom.wait_query(f'zoom_up{{job="{name}"}} == 1', timeout=30)
        prom.wait_query("zoom:threshold_latency_seconds", timeout=30)  # the rules loaded
        wait_for(
            lambda: (
                prom.query('up{job="zoom-qos-exporter"} == 1')
                and not prom.query('ALERTS{alertname="ZoomExporterDown"}')
            ),
            timeout=30,
            what="ZoomExporterDown to clear while the exporter is scraped",
        )
    finally:
        stop_process(prom.process)


# ---------------------------------------------------------------------------------------------
# docker compose
# ---------------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "docker-compose.yml"


def compose_config(env_file: Path) -> dict[str, Any]:
    """`docker-compose config` with only `env_file` for the variables (not the caller's
    environment, nor a real deploy/.env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOOM_", "GRAFANA_"))}
    result = run(
        tool("docker-compose"),
        "--env-file",
        str(env_file),
        "-f",
        str(COMPOSE),
        "config",
        env=env,
        cwd=ROOT,
    )
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_config_is_valid_and_every_mounted_file_exists(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    config = compose_config(empty)
    services = config["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    mounts: dict[str, dict[str, Path]] = {}
    for name, service in services.items():
        mounts[name] = {}
        for volume in service.get("volumes", []):
            source, target, *_ = volume.split(":") if isinstance(volume, str) else (
                volume["source"], volume["target"])  # fmt: skip
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
                assert Path(source).resolve().is_relative_to(ROOT), source
                mounts[name][target] = Path(source)
            else:
                assert source in config["volumes"], f"{name}: undeclared volume {source}"
    # Prometheus reads the config it is given, and finds the rule files beside it.
    command = services["prometheus"]["command"]
    (config_flag,) = [c for c in command if c.startswith("--config.file=")]
    in_container = Path(config_flag.partition("=")[2])
    (host_dir,) = [
        src for dst, src in mounts["prometheus"].items() if Path(dst) == in_container.parent
    ]
    assert (host_dir / in_container.name).resolve() == PROMETHEUS_CONFIG
    # its targets are the stack's services
    prom = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (scrape,) = prom["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == ["exporter:9924"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    # Alertmanager gets our config
    command = services["alertmanager"]["command"]
    (am_flag,) = [c for c in command if c.startswith("--config.file=")]
    assert (
        mounts["alertmanager"][am_flag.partition("=")[2]].resolve()
        == DEPLOY / "alertmanager" / "alertmanager.yml"
    )
    # Grafana: the provisioning files, and the dashboards where the provider looks for them
    grafana = {dst: src.resolve() for dst, src in mounts["grafana"].items()}
    provisioning = ROOT / "grafana" / "provisioning"
    assert grafana["/etc/grafana/provisioning/datasources"] == provisioning / "datasources"
    assert grafana["/etc/grafana/provisioning/dashboards"] == provisioning / "dashboards"
    (provider_file,) = (provisioning / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert grafana[provider["options"]["path"]] == ROOT / "grafana" / "dashboards"
    (datasource_file,) = (provisioning / "datasources").glob("*.yml")
    (datasource,) = yaml.safe_load(datasource_file.read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource.get("isDefault") is not True, "must not fight an existing default"
    # The exporter keeps its state on a named volume, and the image's tag is the version.
    exporter = services["exporter"]
    assert exporter["image"] == IMAGE
    state = exporter["environment"]["ZOOM_EXPORTER_STORAGE_PATH"]
    assert any(v.split(":")[1] == state for v in exporter["volumes"] if not v.startswith("/"))
    assert exporter["read_only"] is True


def entrypoint_decision(tmp: Path, secret: str) -> str:
    """Run the compose exporter's entrypoint script with a stand-in zoom-qos-exporter."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    shell, flag, script, arg0 = services["exporter"]["entrypoint"]
    stand_in = tmp / "bin" / "zoom-qos-exporter"
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text('#!/bin/sh\necho "args: $*"\n')
    stand_in.chmod(0o755)
    env = {"PATH": f"{stand_in.parent}:/usr/bin:/bin", "ZOOM_EXPORTER_CLIENT_SECRET": secret}
    result = run(shell, flag, script.replace("$$", "$"), arg0, "--log.level=debug", env=env)
    return result.stdout.strip()


def test_compose_runs_the_demo_without_credentials(tmp_path: Path) -> None:
    assert entrypoint_decision(tmp_path, "") == "args: --demo --log.level=debug"
    assert entrypoint_decision(tmp_path, "s3cret") == "args: --log.level=debug"
    # and the variables reach the exporter from deploy/.env (here: the example)
    env = compose_config(DEPLOY / ".env.example")["services"]["exporter"]["environment"]
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key, value in example.items():
        if key.startswith("ZOOM_EXPORTER_"):
            assert env[key] == value, key
    assert subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------

KUBERNETES = DEPLOY / "kubernetes"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Pod Security Standards, "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards)
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


@pytest.fixture(scope="module")
def kustomized(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`kubectl kustomize` of the base, with credentials.env made from the example as an
    operator would (the real one is git-ignored)."""
    base = tmp_path_factory.mktemp("kustomize") / "kubernetes"
    shutil.copytree(KUBERNETES, base, ignore=shutil.ignore_patterns("credentials.env"))
    shutil.copy(base / "credentials.env.example", base / "credentials.env")
    out = run(tool("kubectl"), "kustomize", str(base)).stdout
    (base.parent / "all.yaml").write_text(out)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def test_kustomize_output_passes_kubernetes_validate_strict(
    kustomized: list[dict[str, Any]], tmp_path: Path
) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text(yaml.safe_dump_all(kustomized))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    skipped = [line for line in lines if line.startswith("WARN")]
    assert len(passed) == len([r for r in kustomized if r["kind"] not in CRD_KINDS])
    # No schema ships for the Prometheus Operator's kinds: they are checked below instead.
    assert {re.search(r"kind (\w+)", line).group(1) for line in skipped} == CRD_KINDS  # type: ignore[union-attr]
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))]


def pod_security_restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the Pod Security "restricted" level would refuse in a pod spec."""
    bad = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(key)
    pod_context = pod.get("securityContext", {})
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            bad.append(f"volume {volume['name']}: {kinds}")
    if pod_context.get("sysctls"):
        bad.append("sysctls")
    containers = pod.get("initContainers", []) + pod["containers"]
    for container in containers:
        name = container["name"]
        context = container.get("securityContext", {})
        if context.get("privileged"):
            bad.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = context.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            bad.append(f"{name}: runAsNonRoot must be true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
        if context.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount")
    return bad


def test_pod_security_restricted(kustomized: list[dict[str, Any]]) -> None:
    (deployment,) = by_kind(kustomized, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod_security_restricted_violations(pod) == []
    # and the checker does catch what the base avoids
    loose = json.loads(json.dumps(pod))
    del loose["securityContext"]["seccompProfile"]
    loose["containers"][0]["securityContext"]["capabilities"] = {}
    assert len(pod_security_restricted_violations(loose)) == 2
    (namespace,) = by_kind(kustomized, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(
        r["metadata"].get("namespace") == namespace["metadata"]["name"]
        for r in kustomized
        if r["kind"] != "Namespace"
    )


def test_kubernetes_base_wiring(kustomized: list[dict[str, Any]]) -> None:
    (deployment,) = by_kind(kustomized, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # the config file: a ConfigMap, mounted where --config.file points
    (flag,) = [a for a in container["args"] if a.startswith("--config.file=")]
    config_path = Path(flag.partition("=")[2])
    config_mount = mounts[str(config_path.parent)]
    config_map_name = volumes[config_mount["name"]]["configMap"]["name"]
    (config_map,) = [
        c for c in by_kind(kustomized, "ConfigMap") if c["metadata"]["name"] == config_map_name
    ]
    assert config_path.name in config_map["data"]
    assert "subPath" not in config_mount, "a subPath mount never sees an edited ConfigMap"
    # the state directory: writable, not the root filesystem
    env = {e["name"]: e.get("value") for e in container["env"]}
    state_mount = mounts[env["ZOOM_EXPORTER_STORAGE_PATH"]]
    assert not state_mount.get("readOnly")
    assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[state_mount["name"]])
    # credentials: the generated Secret (name with kustomize's hash suffix)
    (secret,) = by_kind(kustomized, "Secret")
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert {
        "ZOOM_EXPORTER_ACCOUNT_ID",
        "ZOOM_EXPORTER_CLIENT_ID",
        "ZOOM_EXPORTER_CLIENT_SECRET",
    } <= set(secret["data"])
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/kubernetes/credentials.env"], cwd=ROOT
    )
    assert ignored.returncode == 0, "credentials.env must be git-ignored"
    # Service -> pod, ServiceMonitor -> Service
    (service,) = by_kind(kustomized, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    (monitor,) = by_kind(kustomized, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    # dashboards for the Grafana sidecar: every dashboard, unchanged
    dashboards = {
        key: value
        for c in by_kind(kustomized, "ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key, value in c["data"].items()
    }
    files = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert dashboards == {p.name: p.read_text() for p in files}


def test_kubernetes_config_is_valid_settings() -> None:
    from exporter.settings import load_settings

    for path in (KUBERNETES / "config.yml", DEPLOY / "config.example.yml"):
        load_settings({"demo": True}, config_file=path)


def rule_groups() -> list[dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return [
        group
        for name in config["rule_files"]
        for group in yaml.safe_load((PROMETHEUS_DIR / name).read_text())["groups"]
    ]


def test_prometheus_rule_carries_the_same_rules(
    kustomized: list[dict[str, Any]], tmp_path: Path
) -> None:
    (rule,) = by_kind(kustomized, "PrometheusRule")
    assert rule["spec"]["groups"] == rule_groups()
    # and promtool accepts them as they are
    path = tmp_path / "from-prometheusrule.rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    run(require_binary("promtool"), "check", "rules", str(path))


def test_generated_kubernetes_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-k8s"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------

SYSTEMD = DEPLOY / "systemd"
UNIT = SYSTEMD / "zoom-qos-exporter.service"
SECURITY_TARGET = 2.5


def unit_values(key: str) -> list[str]:
    return [
        line.partition("=")[2]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


@pytest.fixture(scope="module")
def installed(replay: Replay) -> Path:
    """A real install under a temporary root, as deploy/README.md does it under /: the venv
    at /opt/zoom-qos-exporter (the same steps as the Dockerfile, replayed already), the
    sysusers.d and tmpfiles.d files applied with --root, the config, the unit, and the parts
    of systemd that `verify` looks for (its units, and `kill` for ExecReload=)."""
    root = replay.root
    assert (root / "opt" / "zoom-qos-exporter" / "bin" / "zoom-qos-exporter").is_file()
    for directory in ("usr/lib/systemd", "usr/bin", "etc/sysusers.d", "etc/tmpfiles.d",
                      "etc/systemd/system"):  # fmt: skip
        (root / directory).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib"):
        if not (root / link).exists():
            (root / link).symlink_to(f"usr/{link}")
    systemd_units = Path("/usr/lib/systemd/system")
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree(systemd_units, root / "usr/lib/systemd/system", symlinks=True)
    kill = shutil.which("kill", path="/usr/bin:/bin")
    assert kill, "kill (procps) is missing"
    shutil.copy(kill, root / "usr/bin/kill")
    shutil.copy(SYSTEMD / "sysusers.d" / "zoom-qos-exporter.conf", root / "etc/sysusers.d")
    shutil.copy(SYSTEMD / "tmpfiles.d" / "zoom-qos-exporter.conf", root / "etc/tmpfiles.d")
    # deploy/README.md's own commands, with --root
    readme = (DEPLOY / "README.md").read_text()
    for command in ("systemd-sysusers ", "systemd-tmpfiles --create "):
        (line,) = [line for line in readme.splitlines() if line.startswith(command)]
        argv = shlex.split(line)
        files = [f"{root}{a}" if a.startswith("/") else a for a in argv[1:]]
        run(tool(argv[0]), f"--root={root}", *files)
    shutil.copy(DEPLOY / "config.example.yml", root / "etc/zoom-qos-exporter/config.yml")
    shutil.copy(UNIT, root / "etc/systemd/system")
    return root


def test_sysusers_and_tmpfiles_make_the_user_and_directories(installed: Path) -> None:
    passwd = (installed / "etc/passwd").read_text()
    (entry,) = [line for line in passwd.splitlines() if line.startswith("zoom-qos-exporter:")]
    uid, gid = int(entry.split(":")[2]), int(entry.split(":")[3])
    assert 0 < uid < 1000 and entry.endswith(":/usr/sbin/nologin")
    etc = (installed / "etc/zoom-qos-exporter").stat()
    assert (etc.st_uid, etc.st_gid, etc.st_mode & 0o777) == (0, gid, 0o750)
    env = (installed / "etc/zoom-qos-exporter/env").stat()
    assert (env.st_uid, env.st_mode & 0o777) == (0, 0o600)
    state = (installed / "var/lib/zoom-qos-exporter").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o750)
    assert unit_values("User") == ["zoom-qos-exporter"]
    assert unit_values("StateDirectory") == ["zoom-qos-exporter"]
    assert unit_values("Environment") == ["ZOOM_EXPORTER_STORAGE_PATH=%S/zoom-qos-exporter"]
    assert unit_values("EnvironmentFile") == ["/etc/zoom-qos-exporter/env"]
    assert unit_values("ExecReload") == ["kill -HUP $MAINPID"]
    # prometheus_client's process_* metrics read /proc/stat (boot time), which
    # ProcSubset=pid hides; the Exporter health dashboard shows process_resident_memory_bytes.
    assert unit_values("ProcSubset") in ([], ["all"])


def test_systemd_analyze_verify_against_the_install(installed: Path) -> None:
    analyze = tool("systemd-analyze")
    result = run(analyze, "verify", f"--root={installed}", UNIT.name)
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
    # The check is real: without the venv's program, verify fails.
    program = installed / "opt/zoom-qos-exporter/bin/zoom-qos-exporter"
    hidden = program.with_name("hidden")
    program.rename(hidden)
    try:
        missing = subprocess.run(
            [analyze, "verify", f"--root={installed}", UNIT.name], capture_output=True, text=True
        )
    finally:
        hidden.rename(program)
    assert missing.returncode != 0 and "is not executable" in missing.stderr


def test_installed_program_runs_the_units_command_line(
    installed: Path, replay: Replay, tmp_path: Path
) -> None:
    """ExecStart= as the unit has it (paths under the temporary root), with the installed
    example config: it serves (in demo mode, no credentials here)."""
    (exec_start,) = unit_values("ExecStart")
    argv = [
        re.sub(r"(?<![\w.])/(opt|etc)/", f"{installed}/\\1/", a) for a in shlex.split(exec_start)
    ]
    program = Replay(installed, replay.env, argv, replay.healthcheck)
    served = program.start(tmp_path, env={"ZOOM_EXPORTER_DEMO": "true"})
    try:
        wait_healthy(program, served)
    finally:
        stop_process(served.process)


def test_systemd_analyze_security_score() -> None:
    result = run(tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:]
    score = float(match.group(1))
    print(f"systemd-analyze security: {score}")
    assert score <= SECURITY_TARGET, result.stdout


# ---------------------------------------------------------------------------------------------
# One version everywhere
# ---------------------------------------------------------------------------------------------


def test_one_version_for_build_info_package_and_image() -> None:
    import importlib.metadata

    assert importlib.metadata.version("zoom-qos-exporter") == __version__
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "exporter.__version__"}
    images = re.compile(r"zoom-qos-exporter:(\d[\w.+-]*)")
    files = [
        DOCKERFILE,
        COMPOSE,
        KUBERNETES / "deployment.yaml",
        ROOT / "README.md",
        DEPLOY / "README.md",
    ]
    for path in files:
        tags = set(images.findall(path.read_text()))
        assert tags == {__version__}, f"{path.relative_to(ROOT)} names {tags}"
    assert (
        "license" in pyproject["project"]
        and (ROOT / "LICENSE").read_text().count("Apache License") >= 1
    )
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires == ["setuptools>=77"]
