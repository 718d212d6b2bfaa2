"""Many Zoom accounts in one exporter, many exporters with no account twice (issue 13).

The settings of an `accounts:` list, the shards, the composed exposition, and the daemon
polling several accounts of the simulator over real sockets: labels, no cross-talk, one
account failing each way while the others stay fresh, a reload that adds and removes accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from pydantic import ValidationError

from conftest import FakeClock, clear_exporter_env
from exporter.daemon import Daemon
from exporter.metrics.accounts import compose
from exporter.metrics.collectors import registry_for
from exporter.metrics.exposition import Exposition
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.metrics.snapshot import Snapshot
from exporter.runtime import AccountRuntime
from exporter.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_shard,
    shard_of,
)
from exporter.simulator import RateLimits, Scenario, Simulator

# -- settings ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_exporter_env(monkeypatch, "ACME_")


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


ACCOUNTS_YAML = """
plan: business
accounts:
  - name: eu
    account_id_env: ACME_EU_ACCOUNT
    client_id_env: ACME_EU_CLIENT
    client_secret_env: ACME_EU_SECRET
    meeting_ids: [111, "222"]
  - name: us.test-1
    account_id: us-account
    client_id: us-client
    client_secret_file: us-secret
    plan: pro
    daily_request_budget: 900
    discovery: false
    webinar_ids: "333"
"""


def test_an_accounts_list_reads_env_references_and_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_EU_ACCOUNT", "eu-account")
    monkeypatch.setenv("ACME_EU_CLIENT", "eu-client")
    monkeypatch.setenv("ACME_EU_SECRET", "eu-secret")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write(secrets / "us-secret", "us-secret\n")
    config = write(tmp_path / "config.yml", ACCOUNTS_YAML, 0o644)
    settings = load_settings(config_file=config, secrets_dir=secrets)
    eu, us = settings.zoom_accounts()
    assert (eu.name, eu.account_id, eu.client_id) == ("eu", "eu-account", "eu-client")
    assert eu.client_secret.get_secret_value() == "eu-secret"
    assert eu.meeting_ids == ("111", "222") and eu.discovery is True
    assert eu.plan == "business" and eu.limits.daily_budget == 30_000
    assert (us.name, us.account_id, us.plan, us.discovery) == (
        "us.test-1",
        "us-account",
        "pro",
        False,
    )
    assert us.client_secret.get_secret_value() == "us-secret" and us.webinar_ids == ("333",)
    assert us.limits.daily_budget == 900 and us.limits.heavy_per_second == 10


def test_without_a_list_the_single_account_is_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOM_EXPORTER_ACCOUNT_ID", "a")
    monkeypatch.setenv("ZOOM_EXPORTER_CLIENT_ID", "c")
    monkeypatch.setenv("ZOOM_EXPORTER_CLIENT_SECRET", "s")
    (only,) = load_settings().zoom_accounts()
    assert (only.name, only.account_id, only.client_id) == ("default", "a", "c")


INLINE = """
accounts:
  - name: inline
    account_id: a
    client_id: c
    client_secret: very-secret-value
"""


def test_an_inline_secret_needs_a_private_file(tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.yml", INLINE, 0o644)
    with pytest.raises(SettingsError) as error:
        load_settings(config_file=shared)
    assert f"{shared}:6: accounts[0].client_secret: account 'inline'" in str(error.value)
    assert "chmod 600" in str(error.value)
    assert "very-secret-value" not in str(error.value)
    private = write(tmp_path / "private.yml", INLINE, 0o600)
    (account,) = load_settings(config_file=private).zoom_accounts()
    assert account.client_secret.get_secret_value() == "very-secret-value"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            "- {name: a, account_id_env: X, client_id_env: Y, client_secret_env: NOPE_UNSET}",
            ":2: accounts[0].client_secret_env: account 'a': NOPE_UNSET is not set",
        ),
        (
            "- {name: a, account_id: x, client_id: y, client_secret_file: gone}",
            ":2: accounts[0].client_secret_file: account 'a': needs --secrets.dir",
        ),
        (
            "- {name: 'bad name', account_id: x, client_id: y, client_secret_env: S}",
            ":2: accounts[0].name: ",
        ),
        (
            "- {name: a, account_id: x, client_id: y, client_secret_env: S}\n" * 2,
            "used twice",
        ),
        ("- {name: a, client_id: y, client_secret_env: S}", "account 'a': give account_id"),
        (
            "- {name: a, account_id: x, account_id_env: X, client_id: y, client_secret_env: S}",
            "got account_id, account_id_env",
        ),
        (
            "- {name: a, account_id: x, client_id: y, client_secret_file: ../etc/passwd}",
            "inside --secrets.dir",
        ),
        (
            "- {name: a, account_id: x, client_id: y, client_secret_env: S, plan: gold}",
            ":2: accounts[0].plan: ",
        ),
        (
            "- {name: a, account_id: x, client_id: y, client_secret_env: S, colour: red}",
            "unknown setting",
        ),
    ],
)
def test_a_bad_account_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: str, expected: str
) -> None:
    monkeypatch.setenv("X", "x")
    monkeypatch.setenv("Y", "y")
    monkeypatch.setenv("S", "s")
    config = write(tmp_path / "c.yml", "accounts:\n" + entries + "\n", 0o600)
    with pytest.raises(SettingsError) as error:
        load_settings(config_file=config)
    assert expected in str(error.value)


def test_validation_errors_carry_the_entry_path() -> None:
    """What the settings helper maps to file:line: ('accounts', 1, 'plan')."""
    ok = {"name": "a", "account_id": "x", "client_id": "y", "client_secret_env": "S"}
    with pytest.raises(ValidationError) as error:
        Settings(accounts=[ok, {**ok, "name": "b", "plan": "gold"}])
    assert error.value.errors()[0]["loc"] == ("accounts", 1, "plan")


# -- shards --------------------------------------------------------------------------------


def test_three_shards_cover_ten_accounts_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", "s")
    names = [f"customer-{n}" for n in range(10)]
    accounts = [
        {"name": n, "account_id": n, "client_id": n, "client_secret_env": "S"} for n in names
    ]
    polled: dict[str, list[int]] = {n: [] for n in names}
    for index in range(3):
        replica = Settings(accounts=accounts, shard=f"{index}/3")
        for account in replica.my_accounts():
            polled[account.name].append(index)
    assert all(len(replicas) == 1 for replicas in polled.values()), polled
    assert len({r[0] for r in polled.values()}) > 1  # the work is spread, not all on one
    # Stable: the same name falls to the same replica in every process (sha256, not hash()).
    assert [shard_of(n, 3) for n in names] == [polled[n][0] for n in names]
    assert (
        shard_of("customer-0", 3)
        == int.from_bytes(__import__("hashlib").sha256(b"customer-0").digest()[:8], "big") % 3
    )


@pytest.mark.parametrize("value", ["3/3", "-1/3", "1/0", "1", "a/b", "1/3/4"])
def test_a_bad_shard_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(value)
    with pytest.raises(SettingsError) as error:
        load_settings({"shard": value, "demo": True})
    assert "ZOOM_EXPORTER_SHARD" in str(error.value)


# -- the composed exposition ---------------------------------------------------------------


def _merged(snapshots: list[Snapshot]) -> bytes:
    """prometheus_client's text of several accounts' families, one header per family."""
    families: dict[str, Metric] = {}
    for snapshot in snapshots:
        for family in registry_for(snapshot).collect():
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
            families[family.name].samples.extend(family.samples)

    class Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)


async def _snapshot(seed: int, account: str) -> Snapshot:
    """A real cycle's snapshot of a simulated account."""
    from conftest import poller, simulator, zoom_client

    clock = FakeClock()
    async with simulator(Scenario(seed=seed, clock=clock)) as sim, aiohttp.ClientSession() as s:
        client = zoom_client(s, sim.api_url, sim.oauth_url, clock=clock)

        class Keep:
            async def publish(self, snapshot: Snapshot, health: object) -> None:
                pass

        report = await poller(client, Keep(), clock=clock, interval=60.0).run_cycle()  # type: ignore[arg-type]
    return Snapshot(report.snapshot.meetings, account=account)


async def test_the_composed_exposition_is_what_prometheus_client_writes() -> None:
    snapshots = [await _snapshot(1, "eu"), await _snapshot(2, "us")]
    assert all(s.meetings for s in snapshots)
    rendered = [Exposition.render(s) for s in snapshots]
    composed = compose(rendered)
    text = composed.form(openmetrics=False)
    assert text.plain == _merged(snapshots)
    assert text.plain.count(b"# HELP zoom_meeting_participants ") == 1
    assert gzip.decompress(text.body(b"", compressed=True)) == text.plain
    om = composed.form(openmetrics=True)
    assert gzip.decompress(om.body(b"# EOF\n", compressed=True)) == om.plain + b"# EOF\n"
    # Each account's deflated lines are laid in as they are: never rendered nor deflated again.
    body = text.deflated[0]
    for exposition in rendered:
        pieces = [p.deflated for _name, p in exposition.families if p.size]
        assert pieces and all(piece in body for piece in pieces)


def test_laid_pieces_carry_zlibs_crc() -> None:
    """The composed body's gzip trailer needs the CRC of pieces laid one after another,
    combined from each piece's own (zlib's crc32_combine, which Python lacks)."""
    import random
    import zlib

    from exporter.metrics.exposition import Form, Piece

    rng = random.Random(1952)  # RFC 1952, gzip
    for length in (0, 1, 2, 3, 255, 4096, 65_537, 1 << 20):
        a = rng.randbytes(rng.randrange(0, 3000))
        b = rng.randbytes(length)
        form = Form.assemble([Piece.of([a]), Piece.of([b])])
        assert form.crc == zlib.crc32(a + b) and form.size == len(a) + len(b)


# -- the daemon against several simulated accounts ------------------------------------------

SERIES = re.compile(rb'^(\w+)\{account="([^"]*)"(.*)$', re.M)


def accounts_of(body: bytes, metric: str) -> dict[str, set[bytes]]:
    """account -> the label strings of `metric`'s series."""
    out: dict[str, set[bytes]] = {}
    for name, account, rest in SERIES.findall(body):
        if name.decode() == metric:
            out.setdefault(account.decode(), set()).add(rest)
    return out


def meeting_ids(body: bytes) -> dict[str, set[str]]:
    return {
        account: {re.search(rb'meeting_id="([^"]*)"', r).group(1).decode() for r in rest}  # type: ignore[union-attr]
        for account, rest in accounts_of(body, "zoom_meeting_participants").items()
    }


class Zoo:
    """A simulator serving `count` accounts (acct-0 ... ), each its own seed and secret."""

    def __init__(self, sim: Simulator, names: list[str]) -> None:
        self.sim = sim
        self.names = names

    def account(self, name: str) -> Any:
        return self.sim.account(f"{name}-id")

    def entries(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "account_id": f"{name}-id",
                "client_id": f"{name}-client",
                "client_secret_env": f"ACME_{index}_SECRET",
            }
            for index, name in enumerate(self.names)
        ]


@pytest.fixture
def zoo_of(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def make(count: int, clock: Any = time.time, **limits: Any) -> AsyncIterator[Zoo]:
        names = [f"acct-{n}" for n in range(count)]
        # Zoom's daily count large enough for a cycle a second all day (see settings_for).
        limits.setdefault("daily_limit", 10_000_000)
        for index, name in enumerate(names):
            monkeypatch.setenv(f"ACME_{index}_SECRET", f"{name}-secret")
        first = names[0]
        sim = Simulator(
            Scenario(seed=11, clock=clock),
            account_id=f"{first}-id",
            client_id=f"{first}-client",
            client_secret=f"{first}-secret",
            **limits,
        )
        for index, name in enumerate(names[1:], start=1):
            sim.add_account(
                f"{name}-id",
                client_id=f"{name}-client",
                client_secret=f"{name}-secret",
                scenario=Scenario(seed=11 + index, clock=clock),
                **limits,
            )
        async with sim:
            yield Zoo(sim, names)

    return make


def settings_for(zoo: Zoo, **more: Any) -> Settings:
    options: dict[str, Any] = {
        "api_url": zoo.sim.api_url,
        "oauth_url": zoo.sim.oauth_url,
        "accounts": zoo.entries(),
        "poll_interval": 1.0,
        "request_timeout": 2.0,
        "max_retries": 0,
        # Budget enough for a cycle a second all day: the planner spreads a smaller one over
        # what is left of the UTC day, so the tests' pace would depend on the time they run.
        "daily_request_budget": 10_000_000,
        **more,
    }
    settings = Settings(**options)
    settings.zoom_accounts()  # resolved now, with the test's environment
    return settings


def scrape(daemon: Daemon) -> bytes:
    body = daemon.store.exposition.form(openmetrics=False).plain
    return body + SelfMetrics(daemon).render(openmetrics=False)


async def until(condition: Callable[[], object], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def live_ids(sim_account: Any) -> set[str]:
    scenario = sim_account.scenario
    now = scenario.now()
    return {str(m.id) for kind in ("meeting", "webinar") for m in scenario.meetings(kind, now)}


@pytest.mark.parametrize("count", [2, 5])
async def test_every_account_is_polled_under_its_own_label(
    zoo_of: Callable[..., Any], count: int
) -> None:
    world = FakeClock()  # the simulated worlds stand still: what was polled is what is live
    async with zoo_of(count, world) as zoo, aiohttp.ClientSession() as session:
        settings = settings_for(zoo)
        daemon = Daemon(lambda: settings, settings, session)
        for runtime in daemon.accounts():
            assert (await runtime.poller.run_cycle()).health.state == "ok"
        await daemon.store.refresh()
        body = scrape(daemon)
        polled = meeting_ids(body)
        assert set(polled) == set(zoo.names)
        for name in zoo.names:  # each account's series hold its own meetings, no other's
            assert polled[name] == live_ids(zoo.account(name)), name
            assert zoo.account(name).stats["oauth_token"] == 1
        # The worlds differ (each has meetings of its own), so the equality above tells them
        # apart: another account's meetings under this label would break it.
        worlds = [live_ids(zoo.account(name)) for name in zoo.names]
        assert all(a - b for a in worlds for b in worlds if a is not b)
        for metric in ("zoom_up", "zoom_exporter_poll_cycles_total", "zoom_exporter_daily_budget"):
            assert set(accounts_of(body, metric)) == set(zoo.names), metric
        assert body.count(b"# HELP zoom_up ") == 1
        assert b"zoom_up{" in body and b"\nzoom_up " not in body
        # Each account spent its own budget: the client's count is the simulator's.
        for runtime in daemon.accounts():
            assert runtime.budget.used(time.time()) == zoo.account(runtime.name).quota_used


async def test_budgets_are_kept_per_account_over_a_simulated_day(
    zoo_of: Callable[..., Any],
) -> None:
    """Two accounts on one accelerated clock, one with a small budget: it stretches its
    interval, the other does not, and neither spends the other's calls."""
    day = 20_776 * 86400.0
    clock = FakeClock(day + 10.0)
    async with (
        zoo_of(2, clock, rate_limits=RateLimits.PRO, daily_limit=5_000) as zoo,
        aiohttp.ClientSession() as session,
    ):
        entries = zoo.entries()
        entries[0]["daily_request_budget"] = 150
        entries[1]["daily_request_budget"] = 2_000
        settings = settings_for(zoo, poll_interval=300.0, max_poll_interval=3600.0)
        settings = Settings(**{**settings.model_dump(exclude={"accounts"}), "accounts": entries})
        daemon = Daemon(lambda: settings, settings, session, clock=clock)
        small, large = daemon.account("acct-0"), daemon.account("acct-1")
        due = {name: clock.now for name in zoo.names}
        cycles = dict.fromkeys(zoo.names, 0)
        while min(due.values()) < day + 86400 - 60:
            name = min(due, key=lambda n: due[n])
            clock.now = max(clock.now, due[name])
            runtime = daemon.account(name)
            await runtime.poller.run_cycle()
            cycles[name] += 1
            due[name] += runtime.poller.effective_interval
        now = clock.now
        assert small.budget.used(now) <= 150 and large.budget.used(now) <= 2_000
        assert small.budget.used(now) == zoo.account("acct-0").quota_used
        assert large.budget.used(now) == zoo.account("acct-1").quota_used
        assert large.budget.used(now) > 5 * small.budget.used(now)
        assert small.poller.effective_interval > large.poller.effective_interval
        assert cycles["acct-1"] > 2 * cycles["acct-0"], cycles


def fail(way: str, account: Any) -> None:
    if way == "credentials":
        account.faults.change_credentials("rotated-elsewhere")
        account.faults.revoke_tokens()
    elif way == "daily_limit":
        account.faults.rate_limit(count=1000, type="Daily-limit", retry_after=3600)
    else:
        account.faults.timeout(count=1000, seconds=30.0)


EXPECTED = {"credentials": "auth_failed", "daily_limit": "daily_limit", "hanging": "unreachable"}


@pytest.mark.parametrize("way", list(EXPECTED))
async def test_one_account_failing_leaves_the_others_fresh(
    zoo_of: Callable[..., Any], way: str
) -> None:
    async with zoo_of(3) as zoo, aiohttp.ClientSession() as session:
        settings = settings_for(zoo)
        daemon = Daemon(lambda: settings, settings, session)
        daemon.start()
        try:
            await until(
                lambda: all(r.health.state == "ok" for r in daemon.accounts()), what="first cycles"
            )
            broken, *healthy = daemon.accounts()
            fail(way, zoo.account(broken.name))
            await until(lambda: broken.health.state == EXPECTED[way], what=f"{way} seen")
            cycles = {r.name: r.health.complete_cycles for r in healthy}
            tokens = {r.name: r.token for r in healthy}
            await until(
                lambda: all(r.health.complete_cycles >= cycles[r.name] + 2 for r in healthy),
                what="the others' cycles",
            )
            body = scrape(daemon)
            up = {a: rest for a, rest in accounts_of(body, "zoom_up").items()}
            assert set(up) == set(zoo.names)
            for runtime in healthy:
                assert runtime.health.state == "ok" and runtime.health.up
                assert runtime.token is tokens[runtime.name]
                assert time.time() - (runtime.health.last_success_timestamp or 0) < 5
                assert zoo.account(runtime.name).stats["oauth_token"] == 1
            assert f'zoom_up{{account="{broken.name}"}} 0.0'.encode() in body
            for runtime in healthy:
                assert f'zoom_up{{account="{runtime.name}"}} 1.0'.encode() in body
            state = f'zoom_exporter_state{{account="{broken.name}",state="{EXPECTED[way]}"}} 1.0'
            assert state.encode() in body
        finally:
            await daemon.stop()


async def test_a_reload_adds_and_removes_accounts_and_keeps_the_others(
    zoo_of: Callable[..., Any],
) -> None:
    async with zoo_of(4, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        entries = zoo.entries()
        current = {"settings": settings_for(zoo)}
        current["settings"] = Settings(
            **{**current["settings"].model_dump(exclude={"accounts"}), "accounts": entries[:3]}
        )
        daemon = Daemon(lambda: current["settings"], current["settings"], session)
        for runtime in daemon.accounts():
            await runtime.poller.run_cycle()
        await daemon.store.refresh()
        # acct-0 hits Zoom's daily limit: its pause must outlive the reload.
        zoo.account("acct-0").faults.rate_limit(count=1, type="Daily-limit", retry_after=3600)
        assert (await daemon.account("acct-0").poller.run_cycle()).health.state == "daily_limit"
        kept: dict[str, AccountRuntime] = {r.name: r for r in daemon.accounts()}
        before = {
            name: (r.token, r.telemetry, r.telemetry.requests.total(), r.budget.used(time.time()))
            for name, r in kept.items()
        }
        assert set(meeting_ids(scrape(daemon))) == {"acct-0", "acct-1", "acct-2"}
        changed = {**entries[1], "daily_request_budget": 1234}
        current["settings"] = Settings(
            **{
                **current["settings"].model_dump(exclude={"accounts"}),
                "accounts": [entries[0], changed, entries[3]],
            }
        )
        assert await daemon.reload() is None
        assert set(daemon.runtimes) == {"acct-0", "acct-1", "acct-3"}
        for name in ("acct-0", "acct-1"):  # the same runtime: tokens, counters, spend kept
            runtime = daemon.account(name)
            token, telemetry, requests, used = before[name]
            assert runtime is kept[name]
            assert runtime.token is token and runtime.telemetry is telemetry
            assert telemetry.requests.total() == requests
            assert runtime.budget.used(time.time()) == used
        assert daemon.account("acct-1").budget.budget == 1234
        calls = zoo.account("acct-0").stats["total"]
        paused = await daemon.account("acct-0").poller.run_cycle()
        assert paused.health.state == "daily_limit"  # still paused: no call made
        assert zoo.account("acct-0").stats["total"] == calls
        assert daemon.account("acct-0").budget.budget == kept["acct-0"].budget.budget
        await daemon.account("acct-3").poller.run_cycle()
        await daemon.store.refresh()
        body = scrape(daemon)
        assert set(meeting_ids(body)) == {"acct-0", "acct-1", "acct-3"}
        assert b'account="acct-2"' not in body  # a removed account's series are gone
        assert zoo.account("acct-2").stats["oauth_token"] == 1  # and it is called no more
        assert zoo.account("acct-0").stats["oauth_token"] == 1  # no new token for the others


# -- the StatefulSet example ----------------------------------------------------------------


def test_the_sharded_kubernetes_example_maps_the_pod_ordinal_to_the_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess

    import yaml
    from test_deploy import KUBERNETES, tool

    base = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, base, ignore=shutil.ignore_patterns("credentials.env"))
    shutil.copy(base / "credentials.env.example", base / "credentials.env")
    shutil.copytree(KUBERNETES.parent / "kubernetes-sharded", tmp_path / "kubernetes-sharded")
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(tmp_path / "kubernetes-sharded")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    manifest = tmp_path / "all.yaml"
    manifest.write_text(out)
    subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(manifest)], check=True, timeout=300
    )
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert not [d for d in docs if d["kind"] == "Deployment"]
    (stateful,) = [d for d in docs if d["kind"] == "StatefulSet"]
    replicas = stateful["spec"]["replicas"]
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["ZOOM_EXPORTER_SHARD"]["value"] == f"$(POD_INDEX)/{replicas}"
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_INDEX") < names.index("ZOOM_EXPORTER_SHARD")  # expanded in order
    (config_map,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    ]
    config = tmp_path / "config.yml"
    config.write_text(config_map["data"]["config.yml"])
    for entry in yaml.safe_load(config.read_text())["accounts"]:
        for key in ("account_id_env", "client_id_env", "client_secret_env"):
            monkeypatch.setenv(entry[key], f"{entry['name']}-{key}")
    # Each pod, ordinal i, polls its share; together they poll every account exactly once.
    polled: list[str] = []
    for index in range(replicas):
        monkeypatch.setenv("ZOOM_EXPORTER_SHARD", f"{index}/{replicas}")
        polled += [a.name for a in load_settings(config_file=config).my_accounts()]
    assert sorted(polled) == sorted(
        e["name"] for e in yaml.safe_load(config.read_text())["accounts"]
    )


async def test_the_web_serves_every_account_and_the_status_page_groups_them(
    zoo_of: Callable[..., Any],
) -> None:
    from aiohttp.test_utils import TestServer

    from exporter.web.app import create_app

    async with zoo_of(2, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        settings = settings_for(zoo)
        daemon = Daemon(lambda: settings, settings, session)
        app = create_app(daemon.store, self_metrics=SelfMetrics(daemon))
        async with TestServer(app, host="127.0.0.1") as server:
            ready = await session.get(server.make_url("/-/ready"))
            assert ready.status == 503  # no account has finished a cycle
            zoo.account("acct-1").faults.change_credentials("elsewhere")
            for runtime in daemon.accounts():
                await runtime.poller.run_cycle()
            assert (await session.get(server.make_url("/-/ready"))).status == 200
            metrics = await session.get(
                server.make_url("/metrics"), headers={"Accept-Encoding": "gzip"}
            )
            body = (await metrics.read()).decode()
            assert metrics.headers["Content-Encoding"] == "gzip"  # decoded by aiohttp
            assert 'zoom_up{account="acct-0"} 1.0' in body
            assert 'zoom_up{account="acct-1"} 0.0' in body
            assert body.count("# HELP zoom_meeting_participants ") == 1
            page = await (await session.get(server.make_url("/"))).text()
            eu, us = page.index('id="account-acct-0"'), page.index('id="account-acct-1"')
            assert eu < us
            assert "Zoom refused the credentials" in page[us:]
            assert "Zoom refused the credentials" not in page[eu:us]
            assert "Weekly Sync" in page[eu:us]  # the first world's seed meeting, in its section


async def test_the_shared_session_has_no_connection_cap() -> None:
    """aiohttp's default pool of 100 connections would let 25 accounts whose API hangs (4
    concurrent calls each) stall every other account; each account's concurrency bounds it."""
    from exporter.daemon import http_session

    async with http_session() as session:
        assert session.connector is not None and session.connector.limit == 0


async def test_the_state_file_is_keyed_by_account_and_reads_the_old_format(
    zoo_of: Callable[..., Any], tmp_path: Path
) -> None:
    import json

    from exporter.zoom.limits import utc_day

    today = utc_day(time.time())
    storage = tmp_path / "state"
    storage.mkdir()
    old = {"version": 1, "budget": {"day": today, "used": 123}, "saved_at": time.time()}
    (storage / "state.json").write_text(json.dumps(old))
    async with zoo_of(2, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        single = Settings(
            api_url=zoo.sim.api_url,
            oauth_url=zoo.sim.oauth_url,
            account_id="acct-0-id",
            client_id="acct-0-client",
            client_secret="acct-0-secret",
            storage_path=storage,
        )
        daemon = Daemon(lambda: single, single, session)
        assert daemon.account().name == "default"
        assert daemon.account().budget.used(time.time()) == 123  # the old format is default's
        await daemon.account().poller.run_cycle()
        await daemon.flush()
        saved = json.loads((storage / "state.json").read_text())
        assert set(saved["accounts"]) == {"default"}
        assert saved["accounts"]["default"]["budget"]["used"] > 123
    storage = tmp_path / "state2"  # another directory: the first daemon holds its lock
    storage.mkdir()
    (storage / "state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "accounts": {
                    "acct-0": {"budget": {"day": today, "used": 7}},
                    "acct-1": {"budget": {"day": today, "used": 70}},
                },
            }
        )
    )
    async with zoo_of(2, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        settings = settings_for(zoo, storage_path=storage)
        daemon = Daemon(lambda: settings, settings, session)
        now = time.time()
        assert daemon.account("acct-0").budget.used(now) == 7
        assert daemon.account("acct-1").budget.used(now) == 70


async def test_a_burst_of_publishes_is_composed_once_more_not_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter.metrics import accounts as module
    from exporter.metrics.store import SnapshotStore

    stores = {name: SnapshotStore() for name in ("a", "b", "c")}
    for name, store in stores.items():
        store.exposition = Exposition.render(Snapshot(account=name))
    target = module.AccountsStore()
    target.set_stores(stores)
    calls: list[int] = []
    real = module.compose

    def counted(expositions: Any) -> Any:
        calls.append(len(expositions))
        time.sleep(0.05)  # long enough for the whole burst to arrive meanwhile
        return real(expositions)

    monkeypatch.setattr(module, "compose", counted)
    await asyncio.gather(*(target.refresh() for _ in range(20)))
    assert 1 <= len(calls) <= 2, calls
    stores["b"].exposition = Exposition.render(Snapshot(account="b2"))
    await target.refresh()  # a later publish is always composed
    assert b'account="b2"' in target.exposition.form(openmetrics=False).plain


def test_credentials_beside_an_accounts_list_are_said_to_be_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter.settings import settings_warnings

    monkeypatch.setenv("S", "s")
    entry = {"name": "a", "account_id": "x", "client_id": "y", "client_secret_env": "S"}
    settings = Settings(accounts=[entry], account_id="top", client_secret="hidden")
    (warning,) = settings_warnings(settings)
    assert "ZOOM_EXPORTER_ACCOUNT_ID, ZOOM_EXPORTER_CLIENT_SECRET unused" in warning
    assert "hidden" not in warning
    demo = Settings(accounts=[entry], demo=True)
    assert any("accounts list is unused" in w for w in settings_warnings(demo))


# -- the real process: flags, the config file, SIGHUP -------------------------------------


def test_the_shard_flag_reaches_the_settings() -> None:
    from exporter.cli import _overrides, build_parser

    args = build_parser().parse_args(["--shard", "2/5", "--demo"])
    assert _overrides(args)["shard"] == "2/5"
    assert load_settings(_overrides(args)).shard_index == (2, 5)


async def test_sighup_adds_and_removes_accounts_in_the_running_process(
    zoo_of: Callable[..., Any], tmp_path: Path
) -> None:
    import json
    import signal

    from conftest import http_get, start_exporter, stop_process, wait_for

    async with zoo_of(3) as zoo:
        entries = zoo.entries()
        config = tmp_path / "config.yml"
        common = {
            "api_url": zoo.sim.api_url,
            "oauth_url": zoo.sim.oauth_url,
            "poll_interval": 1,
            "daily_request_budget": 10_000_000,
        }
        config.write_text(json.dumps({**common, "accounts": entries[:2]}))
        env = {f"ACME_{i}_SECRET": f"{name}-secret" for i, name in enumerate(zoo.names)}
        exporter = start_exporter(tmp_path, "--config.file", str(config), env=env)

        def up() -> dict[str, str]:
            status, _, body = http_get(exporter.url + "/metrics")
            assert status == 200
            return dict(re.findall(r'^zoom_up\{account="([^"]+)"\} (\S+)$', body.decode(), re.M))

        async def until_up(accounts: set[str], what: str) -> None:
            def check() -> bool:
                if exporter.process.poll() is not None:
                    raise AssertionError(exporter.log.read_text())
                seen = up()
                return set(seen) == accounts and all(v == "1.0" for v in seen.values())

            await asyncio.to_thread(wait_for, check, timeout=30, what=what)

        try:
            await until_up({"acct-0", "acct-1"}, "two accounts up")
            tokens = zoo.account("acct-0").stats["oauth_token"]
            config.write_text(json.dumps({**common, "accounts": [entries[0], entries[2]]}))
            exporter.process.send_signal(signal.SIGHUP)
            await until_up({"acct-0", "acct-2"}, "acct-1 gone, acct-2 up")
            assert zoo.account("acct-0").stats["oauth_token"] == tokens  # its token was kept
            calls = zoo.account("acct-1").stats["total"]
            others = zoo.account("acct-0").stats["total"]
            await asyncio.to_thread(  # the simulator answers on this loop: wait in a thread
                wait_for,
                lambda: zoo.account("acct-0").stats["total"] >= others + 6,
                timeout=30,
                what="more cycles of acct-0",
            )
            assert zoo.account("acct-1").stats["total"] == calls  # acct-1 is no longer polled
        finally:
            assert stop_process(exporter.process) == 0


async def test_an_account_tasks_log_lines_name_the_account() -> None:
    import logging

    from exporter import logfmt

    record = logging.LogRecord("exporter", logging.INFO, __file__, 1, "cycle done", None, None)
    record.kv = {"state": "ok"}

    async def in_task() -> str:
        logfmt.ACCOUNT.set("emea")
        return logfmt.LogfmtFormatter().format(record)

    line = await asyncio.create_task(in_task())
    assert line.endswith('msg="cycle done" account=emea state=ok')
    assert "account=" not in logfmt.LogfmtFormatter().format(record)  # not outside the task


def test_overlapping_cycles_share_the_collector() -> None:
    """Accounts' cycles overlap: the collector stays off until the last one ends, and comes
    back on then (the first to end used to turn it on under the other)."""
    import gc

    from exporter.polling.poller import Collector

    assert gc.isenabled()
    collector = Collector()
    collector.acquire()  # account A's cycle
    collector.acquire()  # account B's, while A's runs
    assert not gc.isenabled() and collector.sweeping
    collector.release()  # A ends first
    assert not gc.isenabled() and collector.sweeping
    collector.release()  # B ends
    assert gc.isenabled() and not collector.sweeping
    gc.disable()  # a test that turned the collector off keeps it off
    try:
        collector.acquire()
        assert not collector.sweeping
        collector.release()
        assert not gc.isenabled()
    finally:
        gc.enable()
