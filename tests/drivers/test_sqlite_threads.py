"""SQLite's worker threads: terminate ends them without a future of the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import get_driver

pytestmark = pytest.mark.sqlite


def _threads_after(limit: float, count: int) -> int:
    deadline = time.monotonic() + limit
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


def test_terminate_just_before_the_loop_closes_ends_the_thread_cleanly(tmp_path: Path) -> None:
    params = PoolConfig.from_options({"connection_string": f"sqlite:///{tmp_path / 'a.db'}"})
    driver = get_driver("sqlite")
    before = threading.active_count()

    async def open_and_drop() -> None:
        conn = await driver.connect(params.connect, 16)
        await conn.fetch("SELECT 1", (), "all", 1, None)
        conn.terminate()  # the loop closes right after: nothing may call back into it

    asyncio.run(open_and_drop())
    # An "Event loop is closed" in the worker would be an unhandled thread exception,
    # which pytest turns into an error (filterwarnings = error).
    assert _threads_after(5.0, before) == before


async def test_terminate_interrupts_a_running_statement(tmp_path: Path) -> None:
    params = PoolConfig.from_options({"connection_string": f"sqlite:///{tmp_path / 'b.db'}"})
    conn = await get_driver("sqlite").connect(params.connect, 16)
    endless = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT max(n) FROM c"
    running = asyncio.ensure_future(conn.fetch(endless, (), "all", 1, None))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    conn.terminate()
    with pytest.raises(Exception):  # noqa: B017  # interrupted: any error, not a hang
        await asyncio.wait_for(running, 5)
    assert time.monotonic() - started < 5 and conn.is_closed()
