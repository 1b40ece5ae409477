"""Faults on real servers: killed backends and a restarted server, under load.

In-flight calls must get a typed error; the pool must recover by itself; nothing leaks; no
acquire waits past its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from kailash_nodes import ConnectionFailed, PoolTimeout, QueryError, WorkflowConnectionPool
from tests.conftest import pg_ctl, server_dsn

ACQUIRE_TIMEOUT = 2.0
TYPED = (ConnectionFailed, QueryError, PoolTimeout)


class Load:
    """Callers in a loop of acquire → select → release, recording outcomes."""

    def __init__(self, pool: WorkflowConnectionPool, callers: int) -> None:
        self.pool = pool
        self.callers = callers
        self.outcomes: Counter[str] = Counter()
        self.untyped: list[BaseException] = []
        self.longest_acquire = 0.0
        self._stop = asyncio.Event()

    async def _caller(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    self.longest_acquire = max(self.longest_acquire, time.monotonic() - start)
                    res = await self.pool.execute(conn, "SELECT 1 AS one")
                    self.outcomes["ok" if res["success"] else "sql-error"] += 1
            except TYPED as exc:
                if isinstance(exc, PoolTimeout):
                    self.longest_acquire = max(self.longest_acquire, time.monotonic() - start)
                self.outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
            except Exception as exc:  # anything untyped is a failure of the test
                self.untyped.append(exc)
            await asyncio.sleep(0)

    async def run_while(self, fault: Callable[[], Awaitable[None]], settle: float) -> None:
        """Run the callers, inject ``fault`` once they are busy, keep going ``settle`` s."""
        tasks = [asyncio.create_task(self._caller()) for _ in range(self.callers)]
        await asyncio.sleep(0.3)
        await fault()
        await asyncio.sleep(settle)
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), ACQUIRE_TIMEOUT + 5)


async def _assert_recovered(pool: WorkflowConnectionPool, load: Load) -> None:
    print(f"outcomes: {dict(load.outcomes)}, longest acquire {load.longest_acquire:.3f}s")
    assert not load.untyped, load.untyped[:3]
    assert load.longest_acquire < ACQUIRE_TIMEOUT + 1.0
    state = pool.engine.state()
    assert state["active_connections"] == 0 and state["waiting_requests"] == 0
    ok_before = load.outcomes["ok"]
    for _ in range(20):  # the pool works again without any caller action
        async with pool.connection() as conn:
            assert (await pool.execute(conn, "SELECT 1 AS one"))["data"] == [{"one": 1}]
    assert ok_before > 0


@pytest.mark.postgres
async def test_terminating_every_backend_under_load_recovers_without_leaks(
    pg_admin_dsn: str,
) -> None:
    dsn = server_dsn("KN_PG_DSN")
    name = f"fault_{uuid.uuid4().hex[:8]}"
    pool = WorkflowConnectionPool(
        name=name, connection_string=dsn, min_connections=4, max_connections=8,
        timeout=ACQUIRE_TIMEOUT,
    )  # fmt: skip
    await pool.initialize()
    admin = await asyncpg.connect(pg_admin_dsn)
    count_q = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    try:

        async def kill_all() -> None:
            for _ in range(3):
                n = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    name,
                )
                assert n > 0
                await asyncio.sleep(0.2)

        load = Load(pool, callers=16)
        await load.run_while(kill_all, settle=1.0)
        assert load.outcomes["ConnectionFailed"] > 0  # in-flight calls saw a typed error
        await _assert_recovered(pool, load)
        assert pool.engine.stats.connections_recycled > 0
        # no leaked server sessions: the server sees exactly the pool's connections
        total = pool.engine.state()["total_connections"]
        await asyncio.sleep(0.2)
        assert await admin.fetchval(count_q, name) == total
        await pool.close()
        await asyncio.sleep(0.2)
        assert await admin.fetchval(count_q, name) == 0
    finally:
        await admin.close()
        await pool.close()


@pytest.mark.mysql
async def test_killing_every_mysql_connection_under_load_recovers() -> None:
    import aiomysql

    from kailash_nodes.config import parse_dsn

    dsn = server_dsn("KN_MYSQL_DSN")
    _, f = parse_dsn(dsn)
    pool = WorkflowConnectionPool(
        name=f"fault_{uuid.uuid4().hex[:8]}", connection_string=dsn, min_connections=4,
        max_connections=8, timeout=ACQUIRE_TIMEOUT,
    )  # fmt: skip
    await pool.initialize()
    admin = await aiomysql.connect(
        host=f["host"], port=f["port"], user=f["user"], password=f["password"], autocommit=True
    )
    try:

        async def kill_all() -> None:
            for _ in range(3):
                # the pool's own server sessions only (other clients may share the server)
                ids = [e.conn._conn.thread_id() for e in pool.engine.entries()]
                assert ids
                async with admin.cursor() as cur:
                    for pid in ids:
                        with contextlib.suppress(Exception):  # already gone
                            await cur.execute(f"KILL {int(pid)}")
                await asyncio.sleep(0.2)

        load = Load(pool, callers=16)
        await load.run_while(kill_all, settle=1.0)
        assert load.outcomes["ConnectionFailed"] > 0
        await _assert_recovered(pool, load)
    finally:
        admin.close()
        await pool.close()


@pytest.mark.postgres
@pytest.mark.slow
async def test_server_restart_under_load_recovers_without_caller_action() -> None:
    ctl = pg_ctl("pg-primary")
    dsn = server_dsn("KN_PG_DSN")
    pool = WorkflowConnectionPool(
        name=f"restart_{uuid.uuid4().hex[:8]}", connection_string=dsn, min_connections=4,
        max_connections=8, timeout=ACQUIRE_TIMEOUT,
    )  # fmt: skip
    await pool.initialize()
    try:

        async def restart() -> None:
            await asyncio.to_thread(
                subprocess.run,
                [*ctl, "-m", "fast", "-w", "-t", "60", "restart"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        load = Load(pool, callers=16)
        await load.run_while(restart, settle=2.0)
        assert load.outcomes["ConnectionFailed"] > 0
        await _assert_recovered(pool, load)
    finally:
        await pool.close()
