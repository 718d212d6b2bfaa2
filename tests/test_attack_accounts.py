"""An outside attack on several accounts per exporter (issue 13): regression tests for what
it found. Each failed before its fix."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_accounts import clean_env, settings_for, zoo_of  # noqa: F401 (fixtures)

from conftest import FakeClock
from exporter.daemon import Daemon
from exporter.settings import Settings, SettingsError, load_settings


def with_accounts(settings: Settings, entries: list[dict[str, Any]]) -> Settings:
    new = Settings(**{**settings.model_dump(exclude={"accounts"}), "accounts": entries})
    new.zoom_accounts()
    return new


async def test_an_account_removed_and_added_again_keeps_todays_spend(
    zoo_of: Callable[..., Any],  # noqa: F811
) -> None:
    """Removing an account and adding it back (a mistaken edit undone, a rename reverted)
    must not forget what it spent today: Zoom's daily cap does not forget it either."""
    async with zoo_of(2, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        entries = zoo.entries()
        current = {"settings": settings_for(zoo)}
        daemon = Daemon(lambda: current["settings"], current["settings"], session)
        for runtime in daemon.accounts():
            await runtime.poller.run_cycle()
        spent = zoo.account("acct-1").quota_used
        assert spent > 0 and daemon.account("acct-1").budget.used(time.time()) == spent
        current["settings"] = with_accounts(current["settings"], entries[:1])
        assert await daemon.reload() is None
        assert set(daemon.runtimes) == {"acct-0"}
        current["settings"] = with_accounts(current["settings"], entries)
        assert await daemon.reload() is None
        assert daemon.account("acct-1").budget.used(time.time()) == spent


async def test_an_account_removed_keeps_its_spend_in_the_state_file_for_the_day(
    zoo_of: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Removed, then the exporter restarts with the account back: its spend is in the file."""
    import json
    import os

    async with zoo_of(2, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        entries = zoo.entries()
        current = {"settings": settings_for(zoo, storage_path=tmp_path)}
        daemon = Daemon(lambda: current["settings"], current["settings"], session)
        for runtime in daemon.accounts():
            await runtime.poller.run_cycle()
        spent = zoo.account("acct-1").quota_used
        assert spent > 0
        current["settings"] = with_accounts(current["settings"], entries[:1])
        assert await daemon.reload() is None
        await daemon.account("acct-0").poller.run_cycle()
        await daemon.flush()
        saved = json.loads((tmp_path / "state.json").read_text())
        assert saved["accounts"]["acct-1"]["budget"]["used"] == spent
        assert daemon.state_file is not None and daemon.state_file._lock is not None
        os.close(daemon.state_file._lock)  # the process ends
        again = with_accounts(current["settings"], entries)
        restarted = Daemon(lambda: again, again, session)
        assert restarted.account("acct-1").budget.used(time.time()) == spent


def alias_bomb(levels: int) -> str:
    """meeting_ids whose aliases expand to 9**levels ids: a few hundred bytes."""
    lines = ["meeting_ids:", '  - &a0 ["1", "2", "3", "4", "5", "6", "7", "8", "9"]']
    for level in range(1, levels):
        lines.append(f"  - &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    """A billion laughs in the settings file: refused at once (expanded, 9**9 ids took a
    minute and 2 GiB; on a SIGHUP reload, on the event loop: polling stopped meanwhile)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(7))  # 4.8 million ids
    with pytest.raises(SettingsError, match="aliases are expanded"):
        load_settings(config_file=bomb, require_credentials=False)
    fine = tmp_path / "fine.yaml"
    fine.write_text(alias_bomb(3))  # aliases as such are fine
    assert len(load_settings(config_file=fine, require_credentials=False).meeting_ids) == 3


@pytest.mark.parametrize(
    "nesting", ["[" * 50_000 + "]" * 50_000, "{a: " * 5_000 + "1" + "}" * 5_000]
)
def test_deeply_nested_yaml_is_a_settings_error_not_a_crash(tmp_path: Path, nesting: str) -> None:
    """Nesting deeper than the parser's recursion: one clear line, never a traceback (of the
    settings file, and of the web config file)."""
    from exporter.web.webconfig import load_web_config

    deep = tmp_path / "deep.yaml"
    deep.write_text(f"meeting_ids: {nesting}\n")
    with pytest.raises(SettingsError, match="nested too deeply"):
        load_settings(config_file=deep, require_credentials=False)
    deep.write_text(f"http_server_config: {nesting}\n")
    with pytest.raises(SettingsError, match="nested too deeply"):
        load_web_config(deep)


def test_a_huge_settings_file_is_refused_unread(tmp_path: Path) -> None:
    from exporter.settings import MAX_YAML_BYTES

    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 1) + "poll_interval: 30\n")
    with pytest.raises(SettingsError, match="larger than"):
        load_settings(config_file=huge, require_credentials=False)


ENTRY = "    account_id: a\n    client_id: b\n    client_secret_env: ACME_SECRET\n"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("discovery: false\n", "config.yml:1: discovery"),
        (f"accounts:\n  - name: eu\n{ENTRY}    discovery: false\n", "accounts[0].discovery"),
        (
            f"discovery: false\naccounts:\n  - name: eu\n{ENTRY}    meeting_ids: [1]\n"
            f"  - name: us\n{ENTRY}",
            "config.yml:8: accounts[1]: account 'us'",
        ),
    ],
)
def test_an_account_with_nothing_to_poll_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str
) -> None:
    """Discovery off and no meeting listed: the account made no call at all, not even for a
    token, and reported zoom_up 1 and state ok, with credentials Zoom would have refused."""
    for name, value in {"ACCOUNT_ID": "a", "CLIENT_ID": "b", "CLIENT_SECRET": "c"}.items():
        monkeypatch.setenv(f"ZOOM_EXPORTER_{name}", value)
    monkeypatch.setenv("ACME_SECRET", "s")
    config = tmp_path / "config.yml"
    config.write_text(text)
    for require in (True, False):  # the daemon's load, and --config.check
        with pytest.raises(SettingsError, match="nothing to poll") as error:
            load_settings(config_file=config, require_credentials=require)
        assert where in str(error.value)
    monkeypatch.setenv("ZOOM_EXPORTER_MEETING_IDS", "123")
    if "accounts" not in text:
        assert load_settings(config_file=config).zoom_accounts()[0].meeting_ids == ("123",)


async def test_a_reload_wakes_only_the_accounts_it_changes(
    zoo_of: Callable[..., Any],  # noqa: F811
) -> None:
    """Every reload used to wake every account for a cycle at once: a SIGHUP storm (a config
    tool touching the file each second) or adding one account to fifty made all of them poll
    again and again, far faster than their interval, against their daily caps."""
    from test_accounts import until

    async with zoo_of(3) as zoo, aiohttp.ClientSession() as session:
        entries = zoo.entries()
        base = settings_for(zoo, poll_interval=600.0)
        current = {"settings": with_accounts(base, entries[:2])}
        daemon = Daemon(lambda: current["settings"], current["settings"], session)
        daemon.start()
        try:
            await until(
                lambda: all(r.health.complete_cycles == 1 for r in daemon.accounts()), "first"
            )
            still = daemon.account("acct-0")
            calls = zoo.account("acct-0").stats["total"]
            for _ in range(5):  # a storm of reloads that change nothing
                current["settings"] = with_accounts(base, entries[:2])
                assert await daemon.reload() is None
            changed = {**entries[1], "webinar_ids": ["1"]}
            current["settings"] = with_accounts(base, [entries[0], changed, entries[2]])
            assert await daemon.reload() is None
            await until(
                lambda: (
                    daemon.account("acct-1").health.complete_cycles == 2
                    and daemon.account("acct-2").health.complete_cycles == 1
                ),
                "the changed account's and the new account's cycles",
            )
            assert still.health.complete_cycles == 1
            assert zoo.account("acct-0").stats["total"] == calls
        finally:
            await daemon.stop()


async def test_the_last_cycles_spend_reaches_the_state_file_when_writes_overlap(
    zoo_of: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With several accounts, a cycle often ends while the previous write still runs: that
    cycle's numbers were dropped (the file kept older spend until some later cycle, which on
    a long interval is minutes away: a crash meanwhile forgot it), and each overlap logged
    that the write "has not finished", as if the disk hung."""
    import json
    import logging
    import threading

    from test_accounts import until

    async with zoo_of(3, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        settings = settings_for(zoo, storage_path=tmp_path)
        daemon = Daemon(lambda: settings, settings, session)
        assert daemon.state_file is not None
        save = daemon.state_file.save
        gate = threading.Event()

        def slow_disk(state: dict[str, Any]) -> bool:
            gate.wait(10)  # each write waits until the test lets it finish
            return save(state)

        daemon.state_file.save = slow_disk  # type: ignore[method-assign]
        caplog.set_level(logging.WARNING, logger="exporter")
        try:
            for runtime in daemon.accounts():  # three cycles end while the first write runs
                await runtime.poller.run_cycle()
        finally:
            gate.set()

        def saved() -> dict[str, int]:
            try:
                accounts = json.loads((tmp_path / "state.json").read_text())["accounts"]
            except (OSError, ValueError, KeyError):
                return {}
            return {name: entry["budget"]["used"] for name, entry in accounts.items()}

        spent = {name: zoo.account(name).quota_used for name in zoo.names}
        assert all(spent.values())
        await until(lambda: saved() == spent, "every account's spend in the file")
        assert "has not finished" not in caplog.text


PASTED = "Zx9SuperSecretValue123"  # what a Zoom client secret looks like


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        (f"    client_secret_env: {PASTED}\n", "config.yml:5: accounts[0].client_secret_env"),
        (f"    client_secret_file: {PASTED}\n", "config.yml:5: accounts[0].client_secret_file"),
        (f"    client_secret_env: X\n    {PASTED}: 1\n", "config.yml:6: accounts[0].a key"),
    ],
)
def test_a_secret_pasted_where_its_name_belongs_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, where: str
) -> None:
    """The secret itself given as client_secret_env (or _file, or as a key): the error quoted
    it, onto the terminal, into the logs of a crash-looping pod."""
    from exporter import cli

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    config = tmp_path / "config.yml"
    config.write_text(f"accounts:\n  - name: eu\n    account_id: a\n    client_id: b\n{entry}")
    with pytest.raises(SettingsError) as error:
        load_settings(config_file=config, secrets_dir=secrets)
    assert where in str(error.value)
    assert PASTED not in str(error.value)
    args = ["--config.file", str(config), "--secrets.dir", str(secrets)]
    assert cli.main(args) != 0  # what a crash-looping pod logs
    err = capsys.readouterr().err
    assert where in err and PASTED not in err


def account(name: str, account_id: str, client_id: str, more: str = "") -> str:
    return (
        f"  - name: {name}\n    account_id: {account_id}\n    client_id: {client_id}\n"
        f"    client_secret_env: ACME_SECRET\n{more}"
    )


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (account("eu", "acc1", "app1") + account("EU", "acc2", "app2"), "differ only in case"),
        (account("eu", "acc1", "app1") + account("eu2", "acc1", "app1"), "the same app"),
        (account("eu", "acc1", "app1") + account("eu2", "acc1", "app2"), "both with discovery"),
    ],
)
def test_one_zoom_account_listed_twice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: str, message: str
) -> None:
    """The same Zoom account under two names (a copy-pasted entry, a name retyped in another
    case) was polled twice: every meeting exported twice (sums doubled) and each entry with a
    budget of its own against the account's one daily cap, which the two overran together."""
    monkeypatch.setenv("ACME_SECRET", "s")
    config = tmp_path / "config.yml"
    config.write_text("accounts:\n" + entries)
    with pytest.raises(SettingsError, match=message) as error:
        load_settings(config_file=config)
    assert "config.yml:" in str(error.value)
    # One account, two apps, each polling meetings of its own: allowed.
    split = account("eu", "acc1", "app1", "    discovery: false\n    meeting_ids: [1]\n")
    config.write_text("accounts:\n" + split + account("eu2", "acc1", "app2"))
    assert len(load_settings(config_file=config).zoom_accounts()) == 2


async def test_a_renamed_account_keeps_todays_spend(
    zoo_of: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Renaming an entry (the same Zoom account under a new label) started its spend at 0,
    on a reload and after a restart: the planner then spent the day's budget a second time
    against Zoom's one daily cap."""
    import os

    async with zoo_of(2, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        entries = zoo.entries()
        current = {"settings": settings_for(zoo, storage_path=tmp_path)}
        daemon = Daemon(lambda: current["settings"], current["settings"], session)
        for runtime in daemon.accounts():
            await runtime.poller.run_cycle()
        spent = zoo.account("acct-1").quota_used
        assert spent > 0
        renamed = [entries[0], {**entries[1], "name": "americas"}]
        current["settings"] = with_accounts(current["settings"], renamed)
        assert await daemon.reload() is None
        assert daemon.account("americas").budget.used(time.time()) == spent
        # The old name given to another Zoom account: that one has spent nothing.
        reused = {**entries[0], "name": "acct-1", "account_id": "elsewhere"}
        current["settings"] = with_accounts(current["settings"], [*renamed, reused])
        assert await daemon.reload() is None
        assert daemon.account("acct-1").budget.used(time.time()) == 0
        current["settings"] = with_accounts(current["settings"], renamed)
        assert await daemon.reload() is None
        await daemon.account("americas").poller.run_cycle()
        spent = zoo.account("acct-1").quota_used
        await daemon.flush()
        assert daemon.state_file is not None and daemon.state_file._lock is not None
        os.close(daemon.state_file._lock)  # the process ends
        again = with_accounts(current["settings"], [entries[0], {**entries[1], "name": "amer"}])
        restarted = Daemon(lambda: again, again, session)
        assert restarted.account("amer").budget.used(time.time()) == spent
        assert restarted.account("acct-0").budget.used(time.time()) == (
            zoo.account("acct-0").quota_used
        )


def test_config_check_of_an_accounts_list_names_what_is_unset_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config.check of an accounts list said ZOOM_EXPORTER_ACCOUNT_ID, _CLIENT_ID and
    _CLIENT_SECRET were not set (which the list makes unused) and not which of its own
    credentials were."""
    from exporter import cli

    monkeypatch.setenv("ACME_SECRET", "s")
    config = tmp_path / "config.yml"
    config.write_text(
        "accounts:\n"
        + account("eu", "acc1", "app1")
        + account("us", "acc2", "app2").replace("ACME_SECRET", "ACME_UNSET")
    )
    assert cli.main(["--config.file", str(config), "--config.check", "--shard", "0/1"]) == 0
    out = capsys.readouterr().out
    assert "ZOOM_EXPORTER_" not in out
    assert "2 accounts, 2 of them on shard 0/1: eu, us" in out
    assert "not available here (not checked): us.client_secret" in out


@pytest.mark.parametrize("kind", ["fifo", "device"])
async def test_a_secret_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """client_secret_file naming a FIFO blocked the read forever (a reload: on the event
    loop, so polling and every probe stopped), and one linked to /dev/zero read until the
    memory ran out."""
    import asyncio
    import contextlib
    import os

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    target = secrets / "eu-secret"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    config = tmp_path / "config.yml"
    config.write_text(
        "accounts:\n  - name: eu\n    account_id: a\n    client_id: b\n"
        "    client_secret_file: eu-secret\n"
    )
    load = asyncio.to_thread(load_settings, config_file=config, secrets_dir=secrets)
    try:
        with pytest.raises(SettingsError, match="eu-secret: cannot read \\(not a regular file\\)"):
            await asyncio.wait_for(load, timeout=10)
        if kind == "fifo":  # the web config file too (read at startup)
            from exporter.web.webconfig import load_web_config

            with pytest.raises(SettingsError, match="not a regular file"):
                await asyncio.wait_for(asyncio.to_thread(load_web_config, target), timeout=10)
    finally:
        if kind == "fifo":  # a reader stuck on it (before the fix) reads an end of file
            with contextlib.suppress(OSError):  # ENXIO: nobody reads it
                os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("poll_interval: 1e400\n", "config.yml:1: poll_interval"),  # YAML's float overflow: inf
        ("poll_interval: 1e9\n", "config.yml:1: poll_interval"),
        ("max_poll_interval: .inf\n", "config.yml:1: max_poll_interval"),
        ("max_staleness: .inf\n", "config.yml:1: max_staleness"),
    ],
)
def test_an_interval_that_never_ends_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str
) -> None:
    """poll_interval: 1e400 (infinite) or 1e9 polled once and never again, while zoom_up
    stayed 1 and /-/ready 200: the exporter calls itself stuck only after three intervals.
    An infinite max_poll_interval let the planner stretch to the same; an infinite
    max_staleness kept a meeting's last data for ever."""
    from exporter.metrics.store import stale_after

    for name, value in {"ACCOUNT_ID": "a", "CLIENT_ID": "b", "CLIENT_SECRET": "c"}.items():
        monkeypatch.setenv(f"ZOOM_EXPORTER_{name}", value)
    config = tmp_path / "config.yml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=r"finite|less than or equal") as error:
        load_settings(config_file=config)
    assert where in str(error.value)
    config.write_text("poll_interval: 86400\nmax_poll_interval: 86400\n")
    settings = load_settings(config_file=config)
    assert stale_after(settings.longest_poll_interval) < 4 * 86400  # found stuck, in days


async def test_a_name_pointed_at_another_zoom_account_starts_afresh(
    zoo_of: Callable[..., Any],  # noqa: F811
) -> None:
    """An entry kept its name but got another Zoom account's credentials: the runtime kept
    the old account's daily-limit pause (the new account was not polled until 00:00 UTC)
    and its spend."""
    async with zoo_of(3, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        entries = zoo.entries()
        current = {"settings": settings_for(zoo)}
        current["settings"] = with_accounts(current["settings"], entries[:2])
        daemon = Daemon(lambda: current["settings"], current["settings"], session)
        zoo.account("acct-1").faults.rate_limit(count=1, type="Daily-limit", retry_after=3600)
        assert (await daemon.account("acct-1").poller.run_cycle()).health.state == "daily_limit"
        moved = {**entries[2], "name": "acct-1"}  # acct-2's account, under the name acct-1
        current["settings"] = with_accounts(current["settings"], [entries[0], moved])
        assert await daemon.reload() is None
        report = await daemon.account("acct-1").poller.run_cycle()
        assert report.health.state == "ok"
        assert zoo.account("acct-2").stats["total"] > 0
        used = daemon.account("acct-1").budget.used(time.time())
        assert used == zoo.account("acct-2").quota_used


@pytest.mark.parametrize("value", ["²/3", "٣/5", "1/3\n0/3", "1/99999999999999999999"])
def test_a_shard_of_other_digits_is_refused(value: str) -> None:
    """str.isdigit() let "²/3" through to int() (a Python error message as the reason) and
    took "٣/5" (Arabic-Indic three) for 3/5."""
    from exporter.settings import parse_shard

    with pytest.raises(ValueError, match=r"must be i/n, e\.g\. 0/3"):
        parse_shard(value)
    assert parse_shard(" 1 / 3 ") == (1, 3)


async def test_a_failing_state_file_shows_in_the_metrics(
    zoo_of: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """While the state file cannot be written, a restart would forget the day's spend: the
    exporter counts its writes by result, and the failed ones show (they were only logged,
    once)."""
    import asyncio
    import shutil

    from exporter.metrics.selfmetrics import SelfMetrics

    def writes(daemon: Daemon) -> dict[str, float]:
        body = SelfMetrics(daemon, clock=time.monotonic_ns).render(openmetrics=False)
        return {
            result: float(line.rsplit(b" ", 1)[1])
            for result in ("ok", "failed")
            for line in body.splitlines()
            if line.startswith(
                f'zoom_exporter_state_file_writes_total{{result="{result}"}}'.encode()
            )
        }

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async with zoo_of(1, FakeClock()) as zoo, aiohttp.ClientSession() as session:
        settings = settings_for(zoo, storage_path=tmp_path)
        daemon = Daemon(lambda: settings, settings, session)
        assert daemon.state_file_writes == (0, 0)
        daemon.save_soon()
        await until(lambda: daemon.state_file_writes == (1, 0))
        assert writes(daemon) == {"ok": 1.0, "failed": 0.0}
        # Something takes the file's place: a directory that is not empty cannot be replaced.
        (tmp_path / "state.json").unlink()
        (tmp_path / "state.json").mkdir()
        (tmp_path / "state.json" / "keep").write_text("x")
        daemon.save_soon()
        await until(lambda: daemon.state_file_writes == (1, 1))
        assert writes(daemon) == {"ok": 1.0, "failed": 1.0}
        shutil.rmtree(tmp_path / "state.json")
        daemon.save_soon()
        await until(lambda: daemon.state_file_writes == (2, 1))


async def test_without_a_state_file_no_writes_are_counted() -> None:
    from exporter.metrics.selfmetrics import SelfMetrics, StoreView
    from exporter.metrics.store import SnapshotStore
    from exporter.zoom.telemetry import ApiTelemetry

    body = SelfMetrics(StoreView(SnapshotStore(), ApiTelemetry())).render(openmetrics=False)
    assert b"zoom_exporter_state_file_writes" not in body
