"""An outside attack on several accounts per exporter (issue 13): regression tests for what
it found. Each failed before its fix."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from test_accounts import clean_env, settings_for, zoo_of  # noqa: F401 (fixtures)

from conftest import FakeClock
from exporter.daemon import Daemon
from exporter.settings import Settings


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
