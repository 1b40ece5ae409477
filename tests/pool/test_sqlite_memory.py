"""An in-memory SQLite pool: one database shared by every connection, kept across recycling."""

from __future__ import annotations

import asyncio

import pytest

from kailash_nodes import ConfigError, WorkflowConnectionPool

pytestmark = pytest.mark.sqlite


async def test_memory_database_is_shared_and_survives_recycling() -> None:
    pool = WorkflowConnectionPool(
        database_type="sqlite", database=":memory:", min_connections=1, max_connections=3,
        max_lifetime=0.2, maintenance_interval=0.05,
    )  # fmt: skip
    async with pool.connection() as conn:
        await pool.execute(conn, "CREATE TABLE t (x INTEGER)")
        await pool.execute(conn, "INSERT INTO t VALUES (1)")
    conns = await asyncio.gather(*(pool.acquire() for _ in range(3)))
    for c in conns:  # every connection sees the same database
        assert (await pool.execute(c, "SELECT x FROM t"))["data"] == [{"x": 1}]
        await pool.release(c)
    first = set(pool.engine.health_scores())
    await asyncio.sleep(0.6)  # every connection is replaced by lifetime at least once
    async with pool.connection() as conn:
        assert (await pool.execute(conn, "SELECT x FROM t"))["data"] == [{"x": 1}]
    assert not first & set(pool.engine.health_scores())
    await pool.close()


def test_memory_database_needs_a_connection_kept_open() -> None:
    with pytest.raises(ConfigError, match=r"in-memory SQLite .*got min_connections=0"):
        WorkflowConnectionPool(database_type="sqlite", min_connections=0)
    with pytest.raises(ConfigError, match=r"max_connections >= 2 .* max_connections=1\)"):
        WorkflowConnectionPool(database_type="sqlite", min_connections=1, max_connections=1)
