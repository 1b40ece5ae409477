"""The replica monitor and read-your-writes through the driver's catalog reads, on real
servers (SQLite, and the PostgreSQL primary and its streaming replica)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import DriverConnection, catalog_read
from kailash_nodes.errors import QueryError
from kailash_nodes.pool import ConnectionPool
from kailash_nodes.router.consistency import ReadYourWrites
from kailash_nodes.router.replicas import ReplicaSet
from kailash_nodes.router.sessions import Session
from tests.conftest import server_dsn


@pytest.fixture
async def open_pool() -> AsyncIterator[Callable[[str], Any]]:
    """Open engine pools on DSNs; every pool is closed at teardown."""
    pools: list[ConnectionPool] = []

    async def make(dsn: str, **options: Any) -> ConnectionPool:
        options.setdefault("min_connections", 1)
        config = PoolConfig.from_options(
            {"connection_string": dsn, "name": f"r{uuid.uuid4().hex[:6]}", **options}
        )
        pool = ConnectionPool(config)
        await pool.open()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.mark.sqlite
async def test_a_replica_without_status_is_checked_for_liveness_only(
    open_pool: Callable[[str], Any], tmp_path: Path
) -> None:
    pool = await open_pool(f"sqlite:///{tmp_path / 'r.db'}")
    replicas = ReplicaSet({"r": pool}, interval=0.01)
    state = replicas.states[0]
    await replicas.check(state)
    assert (state.checks, state.failures, state.lag, state.replay_lsn) == (1, 0, None, 0)
    assert state.describe(0.0)["healthy"] and replicas.pick(1.0) is state


@pytest.mark.sqlite
async def test_the_monitor_checks_periodically_and_stops_and_restarts(
    open_pool: Callable[[str], Any], tmp_path: Path
) -> None:
    pool = await open_pool(f"sqlite:///{tmp_path / 'r.db'}")
    replicas = ReplicaSet({"r": pool}, interval=0.01)
    state = replicas.states[0]
    replicas.start()
    replicas.start()  # idempotent
    async with asyncio.timeout(5):
        while state.checks < 3:  # noqa: ASYNC110  # polls what a background job changes
            await asyncio.sleep(0.005)
    await replicas.stop()
    stopped_at = state.checks
    await asyncio.sleep(0.05)
    assert state.checks == stopped_at  # stopped: no more checks
    replicas.start()
    async with asyncio.timeout(5):
        while state.checks == stopped_at:  # noqa: ASYNC110  # polls what a background job changes
            await asyncio.sleep(0.005)
    await replicas.stop()
    await replicas.stop()  # a second stop is harmless


@pytest.mark.sqlite
async def test_a_catalog_read_cancelled_midway_leaves_its_connection_to_be_replaced(
    open_pool: Callable[[str], Any], tmp_path: Path
) -> None:
    pool = await open_pool(f"sqlite:///{tmp_path / 'r.db'}")

    async def slow(conn: DriverConnection, timeout: float | None) -> int:
        await conn.ping(1.0)
        await asyncio.sleep(10)
        return 0

    async def refused(conn: DriverConnection, timeout: float | None) -> int:
        await conn.fetch("SELEC 1", (), "all", 1, timeout)
        return 0

    async with pool.connection() as pc:
        with pytest.raises(QueryError):
            await catalog_read(pc, refused, 1.0)
        assert not pc.broken  # a refused read says nothing of the connection
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await catalog_read(pc, slow, 1.0)
        assert pc.broken


@pytest.mark.replica
async def test_a_streaming_replica_reports_lag_and_replay_position(
    open_pool: Callable[[str], Any],
) -> None:
    pool = await open_pool(server_dsn("KN_PG_REPLICA_DSN"))
    replicas = ReplicaSet({"standby": pool}, interval=1.0)
    state = replicas.states[0]
    await replicas.check(state)
    assert state.failures == 0 and state.last_error is None
    assert state.lag is not None and state.lag >= 0.0 and state.replay_lsn > 0


@pytest.mark.replica
async def test_wal_received_but_not_replayed_counts_as_lag_only_until_it_is_replayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The age of the last replayed commit is the lag while replay is stuck; but when the
    # standby replays what it had received within the catch-up pause, the lag is that
    # pause, not the age (which after a quiet spell on the primary can be minutes).
    import asyncpg

    from kailash_nodes.drivers import get_driver, postgres_catalog
    from tests.router.test_causal import replay_paused

    monkeypatch.setattr(postgres_catalog, "CATCH_UP_PAUSE", 1.0, raising=False)  # time to resume
    driver = get_driver("postgresql")
    params = PoolConfig.from_options(
        {"connection_string": server_dsn("KN_PG_REPLICA_DSN"), "name": "lag"}
    ).connect
    conn = await driver.connect(params, 4)
    primary = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    behind = "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn() AS behind"
    try:
        async with replay_paused():
            await asyncio.sleep(2.0)  # the last replayed commit is now >= 2 s old
            await primary.fetchval("SELECT txid_current()")  # a commit the standby receives
            for _ in range(1000):  # until received (guard: 10 s)
                if (await conn.fetch(behind, (), "one", 1, 5.0))[0]["behind"]:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the standby did not receive the commit")
            stuck = await driver.replica_status(conn, 5.0)  # replay stays paused
            assert stuck is not None and stuck.lag is not None and stuck.lag >= 2.0, stuck
            status = asyncio.ensure_future(driver.replica_status(conn, 5.0))
            await asyncio.sleep(0.3)  # its first read is done: now replay what it received
        caught_up = await status
        assert caught_up is not None and caught_up.lag is not None
        assert caught_up.lag < 1.9, caught_up  # the pause (1 s), not the commit's age
        assert stuck.position is not None and caught_up.position is not None
        assert caught_up.position > stuck.position
    finally:
        await primary.close()
        await conn.close(5.0)


@pytest.mark.postgres
async def test_a_primary_given_as_replica_is_banned_as_not_a_standby(
    open_pool: Callable[[str], Any],
) -> None:
    pool = await open_pool(server_dsn("KN_PG_DSN"))
    replicas = ReplicaSet({"primary": pool}, interval=1.0)
    state = replicas.states[0]
    await replicas.check(state)
    assert state.failures == 1 and "not a standby" in str(state.last_error)
    assert replicas.pick(10.0) is None


@pytest.mark.replica
async def test_a_sessions_write_is_seen_once_the_replica_has_replayed_it(
    open_pool: Callable[[str], Any],
) -> None:
    primary = await open_pool(server_dsn("KN_PG_DSN"))
    standby = await open_pool(server_dsn("KN_PG_REPLICA_DSN"))
    state = ReplicaSet({"standby": standby}, interval=1.0).states[0]
    ryw = ReadYourWrites(primary, track_lsn=True, replicas=True, window=1.0, timeout=5.0)
    session = Session("s1")
    table = f"kn_ryw_{uuid.uuid4().hex[:8]}"
    async with primary.connection() as pc:
        await primary.execute(pc, f"CREATE TABLE {table} (id int)")
        try:
            await primary.execute(pc, f"INSERT INTO {table} VALUES (1)")
            await ryw.note_write(session, primary, pc)
        finally:
            await primary.execute(pc, f"DROP TABLE {table}")
    assert session.write_lsn > 0 and not session.lsn_pending
    ryw.note_unknown_write(session)
    assert session.lsn_pending
    assert await ryw.position_known(session)  # read again on a primary connection
    assert not session.lsn_pending
    async with standby.connection() as pc:
        assert await ryw.caught_up(state, pc, session.write_lsn)
    assert state.replay_lsn >= session.write_lsn and ryw.waits == 1


@pytest.mark.sqlite
async def test_without_positions_a_write_keeps_the_session_on_the_primary(
    open_pool: Callable[[str], Any], tmp_path: Path
) -> None:
    primary = await open_pool(f"sqlite:///{tmp_path / 'p.db'}")
    ryw = ReadYourWrites(primary, track_lsn=False, replicas=True, window=5.0, timeout=1.0)
    session = Session("s1")
    async with primary.connection() as pc:
        await ryw.note_write(session, primary, pc)
    assert session.write_lsn == 0 and not session.lsn_pending
    assert session.primary_until > 0 and await ryw.position_known(session)
