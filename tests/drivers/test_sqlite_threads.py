"""SQLite's worker threads: terminate ends them without a future of the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import get_driver
from kailash_nodes.errors import ConnectionFailed

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
    assert _threads_after(5.0, before) <= before  # an earlier test's thread may end meanwhile


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


def test_a_cancelled_statement_then_closing_the_pool_lets_the_loop_close(
    tmp_path: Path,
) -> None:
    """A caller cancelled mid-statement: the pool terminates that connection; its worker
    thread then hands the interrupted statement's error to the event loop. The pool's
    close waits for that (Driver.drain), so a loop closed right after never sees the
    thread die with "Event loop is closed" (pytest turns that into an error)."""
    from kailash_nodes.pool import ConnectionPool

    config = PoolConfig.from_options({"connection_string": f"sqlite:///{tmp_path / 'c.db'}"})
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    caught: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: caught.append(args.exc_value)
    before = threading.active_count()

    async def cancel_then_close() -> None:
        pool = ConnectionPool(config)
        pc = await pool.acquire()
        running = asyncio.ensure_future(pool.execute(pc, slow))
        await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await pool.release(pc)  # a connection cancelled mid-statement is terminated
        await pool.close()

    try:
        for _ in range(5):
            asyncio.run(cancel_then_close())
        assert _threads_after(5.0, before) <= before  # an earlier test's thread may end meanwhile
    finally:
        threading.excepthook = hook
    assert caught == []


async def test_closed_connections_leave_nothing_to_drain(tmp_path: Path) -> None:
    """A pool that recycles connections for a long time does not accumulate the events
    the driver keeps for threads still ending: closed ones are forgotten."""
    from kailash_nodes.drivers import sqlite as sqlite_driver

    params = PoolConfig.from_options({"connection_string": f"sqlite:///{tmp_path / 'd.db'}"})
    driver = get_driver("sqlite")
    for _ in range(50):
        conn = await driver.connect(params.connect, 16)
        await conn.close(5.0)
    assert len(sqlite_driver._ENDING) == 0  # a completed close forgets its thread at once
    terminated = await driver.connect(params.connect, 16)
    terminated.terminate()
    await driver.drain(5.0)
    assert len(sqlite_driver._ENDING) == 0


@pytest.mark.parametrize("end", ["terminate", "close"])
async def test_a_statement_after_the_thread_was_told_to_end_fails_at_once(
    tmp_path: Path, end: str
) -> None:
    """The driver queues reads on the worker thread itself (SQLiteConnection.fetch): one
    queued behind the thread's end would never be answered. It must fail, typed."""
    params = PoolConfig.from_options({"connection_string": f"sqlite:///{tmp_path / 'd.db'}"})
    conn = await get_driver("sqlite").connect(params.connect, 16)
    await conn.fetch("SELECT 1", (), "all", 1, None)
    if end == "terminate":
        conn.terminate()
    else:
        await conn.close(5.0)
    for timeout in (None, 1.0):
        with pytest.raises(ConnectionFailed, match="closed"):
            await asyncio.wait_for(conn.fetch("SELECT 1", (), "all", 1, timeout), 3)
