"""The driver contract: every member of Driver and DriverConnection, on every real backend.

A new backend must pass this suite. Register it in ``kailash_nodes/drivers/__init__.py``
(``_MODULES``), add its server to ``TARGETS`` below (and, if it has a server connection
limit, how the server itself states it, to ``SERVER_VIEW``), and run ``tests/drivers``;
nothing else here names a backend. Each
test runs against the driver directly (``driver.connect`` and the connection it returns),
with statements written with ``?`` and rewritten to the driver's placeholder style as the
pool does. Real servers only: SQLite always, PostgreSQL primary and its streaming replica,
and MariaDB from ``KN_PG_DSN`` / ``KN_PG_REPLICA_DSN`` / ``KN_MYSQL_DSN``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes.config import ConnectParams, PoolConfig
from kailash_nodes.drivers import (
    FETCH_MODES,
    ConnectionLimit,
    Driver,
    DriverConnection,
    ReplicaStatus,
    get_driver,
)
from kailash_nodes.errors import ConnectionFailed, QueryError, ResultTooLarge
from kailash_nodes.sql import bind, classify, rewrite
from tests.conftest import server_dsn

# target -> (DSN environment variable or None for a file database, role, mark)
TARGETS = {
    "sqlite": (None, "embedded", "sqlite"),
    "postgresql": ("KN_PG_DSN", "primary", "postgres"),
    "postgresql-replica": ("KN_PG_REPLICA_DSN", "replica", "replica"),
    "mysql": ("KN_MYSQL_DSN", "primary", "mysql"),
}
# How each server with a connection limit states its settings, read without the driver's
# catalog query: ``max_connections``, ``reserved`` and ``sessions``; and whether the server
# tells our sessions apart by application name (then ``?`` is that name and ``sessions``
# leaves ours out) or ``sessions`` counts every session, ours too.
SERVER_VIEW = {
    "postgres": (
        "SELECT (SELECT setting::int FROM pg_settings WHERE name = 'max_connections') "
        "AS max_connections, (SELECT setting::int FROM pg_settings "
        "WHERE name = 'superuser_reserved_connections') AS reserved, (SELECT count(*)::int "
        "FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND application_name <> ?) AS sessions",
        True,
    ),
    "mysql": (
        "SELECT CAST(VARIABLE_VALUE AS UNSIGNED) AS max_connections, 0 AS reserved, "
        "(SELECT COUNT(*) FROM information_schema.processlist) AS sessions "
        "FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME = 'MAX_CONNECTIONS'",
        False,
    ),
}
TIMEOUT = 10.0
THREE_ROWS = "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3"


@dataclass
class Target:
    """One server under test: its driver, how to open a connection, and its role."""

    name: str
    role: str  # "primary", "replica" or "embedded" (no server)
    params: ConnectParams
    driver: Driver
    opened: list[DriverConnection]

    @property
    def writable(self) -> bool:
        return self.role != "replica"

    async def connect(self, cache_size: int = 16) -> DriverConnection:
        conn = await self.driver.connect(self.params, cache_size)
        self.opened.append(conn)
        return conn

    def sql(self, query: str, params: Any = None) -> tuple[str, tuple[Any, ...]]:
        """Rewrite ``?`` placeholders to the driver's style, as the pool does."""
        rq = rewrite(query, self.driver.placeholder_style)
        return rq.text, bind(rq, params)


@pytest.fixture(
    params=[pytest.param(n, marks=getattr(pytest.mark, t[2])) for n, t in TARGETS.items()]
)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    name: str = request.param
    env, role, _ = TARGETS[name]
    dsn = f"sqlite:///{tmp_path / 'contract.db'}" if env is None else server_dsn(env)
    params = PoolConfig.from_options({"connection_string": dsn, "name": "contract"}).connect
    t = Target(name, role, params, get_driver(params.backend), [])
    yield t
    for conn in t.opened:
        if not conn.is_closed():
            await conn.close(TIMEOUT)


@pytest.fixture
async def table(target: Target) -> AsyncIterator[str]:
    """A real (not temporary) table with ids 1..3 on a writable target, dropped after."""
    if not target.writable:
        pytest.skip("a replica takes no writes")
    name = f"kn_contract_{uuid.uuid4().hex[:10]}"
    conn = await target.connect()
    await conn.execute_script(
        f"CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(20)); "
        f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        TIMEOUT,
    )
    yield name
    cleanup = await target.connect()
    await cleanup.execute_script(f"DROP TABLE {name}", TIMEOUT)


# ---------------------------------------------------------------------- facts


def test_driver_facts_are_declared_and_consistent(target: Target) -> None:
    d = target.driver
    assert get_driver(d.name) is d and d.name == target.params.backend
    assert d.placeholder_style in ("numeric", "format", "qmark")
    assert classify("SELECT 1", d.dialect).replica_safe  # a dialect kailash_nodes.sql knows
    for fact in (d.can_prepare, d.undoes_timed_out, d.routines_change_session, d.tracks_positions):
        assert isinstance(fact, bool)
    assert d.max_useful_connections is None or d.max_useful_connections > 0
    if target.role == "embedded":  # no server limit to read: the driver states one
        assert d.max_useful_connections == 16  # docs/backends.md: SQLite's cap


async def test_a_connection_starts_clean(target: Target) -> None:
    conn = await target.connect()
    assert not conn.is_closed() and not conn.in_transaction() and not conn.session_changed()
    assert conn.server_prepare in (True, False)
    assert not (conn.server_prepare and not target.driver.can_prepare)


# ---------------------------------------------------------------------- statements


async def test_fetch_shapes_rows_for_every_mode(target: Target) -> None:
    conn = await target.connect()
    text, args = target.sql(THREE_ROWS)
    assert set(FETCH_MODES) == {"all", "one", "many"}
    assert await conn.fetch(text, args, "all", 100, TIMEOUT) == ([{"n": 1}, {"n": 2}, {"n": 3}], 3)
    assert await conn.fetch(text, args, "one", 100, TIMEOUT) == ({"n": 1}, 1)
    assert await conn.fetch(text, args, "many", 2, TIMEOUT) == ([{"n": 1}, {"n": 2}], 2)
    empty, eargs = target.sql(f"SELECT n FROM ({THREE_ROWS}) AS t WHERE n > ?", [9])
    assert await conn.fetch(empty, eargs, "one", 100, TIMEOUT) == (None, 0)
    assert await conn.fetch(empty, eargs, "all", 100, TIMEOUT) == ([], 0)


async def test_fetch_counts_the_rows_a_write_affected(target: Target, table: str) -> None:
    conn = await target.connect()
    text, args = target.sql(f"UPDATE {table} SET v = ? WHERE id >= ?", ["z", 2])
    assert await conn.fetch(text, args, "all", 100, TIMEOUT) == ([], 2)
    text, args = target.sql(f"SELECT v FROM {table} WHERE id = ?", [3])
    assert await conn.fetch(text, args, "one", 100, TIMEOUT) == ({"v": "z"}, 1)


async def test_execute_script_runs_every_statement(target: Target) -> None:
    conn = await target.connect()
    data, _ = await conn.execute_script("SELECT 1; SELECT 2", TIMEOUT)
    assert data == []
    text, args = target.sql("SELECT 5 AS five")
    assert await conn.fetch(text, args, "all", 100, TIMEOUT) == ([{"five": 5}], 1)


async def test_fetch_limited_refuses_a_result_past_max_rows(target: Target) -> None:
    conn = await target.connect()
    text, args = target.sql(THREE_ROWS)
    assert await conn.fetch_limited(text, args, "all", 100, 3, TIMEOUT) == (
        [{"n": 1}, {"n": 2}, {"n": 3}],
        3,
    )
    with pytest.raises(ResultTooLarge):
        await conn.fetch_limited(text, args, "all", 100, 2, TIMEOUT)
    assert not conn.in_transaction()  # as it was: the cursor's own transaction is over
    assert await conn.fetch(text, args, "one", 100, TIMEOUT) == ({"n": 1}, 1)


async def test_a_cursor_reads_in_batches_and_leaves_the_connection_as_it_was(
    target: Target,
) -> None:
    conn = await target.connect()
    text, args = target.sql(THREE_ROWS)
    assert conn.can_stream(text) and not conn.can_stream("DELETE FROM t")
    cursor = await conn.open_cursor(text, args, TIMEOUT)
    assert await cursor.fetch(2, TIMEOUT) == [{"n": 1}, {"n": 2}]
    assert await cursor.fetch(2, TIMEOUT) == [{"n": 3}]
    assert await cursor.fetch(2, TIMEOUT) == []
    await cursor.close(TIMEOUT, commit=True)
    assert not conn.in_transaction()
    cursor = await conn.open_cursor(text, args, TIMEOUT)  # closed before the end
    assert await cursor.fetch(1, TIMEOUT) == [{"n": 1}]
    await cursor.close(TIMEOUT, commit=False)
    assert await conn.fetch(text, args, "one", 100, TIMEOUT) == ({"n": 1}, 1)


async def test_a_rejected_statement_is_a_query_error_and_the_connection_stays(
    target: Target,
) -> None:
    conn = await target.connect()
    with pytest.raises(QueryError) as info:
        await conn.fetch("SELEC 1", (), "all", 100, TIMEOUT)
    assert type(info.value) is QueryError and info.value.error_type
    assert not conn.is_closed()
    await conn.ping(TIMEOUT)


async def test_in_transaction_follows_begin_and_rollback_undoes(target: Target) -> None:
    conn = await target.connect()
    await conn.fetch("BEGIN", (), "all", 100, TIMEOUT)
    assert conn.in_transaction()
    await conn.rollback(TIMEOUT)
    assert not conn.in_transaction()


async def test_rollback_undoes_a_write(target: Target, table: str) -> None:
    conn = await target.connect()
    await conn.fetch("BEGIN", (), "all", 100, TIMEOUT)
    text, args = target.sql(f"DELETE FROM {table} WHERE id = ?", [1])
    assert (await conn.fetch(text, args, "all", 100, TIMEOUT))[1] == 1
    await conn.rollback(TIMEOUT)
    other = await target.connect()
    text, args = target.sql(f"SELECT COUNT(*) AS c FROM {table}")
    assert await other.fetch(text, args, "one", 100, TIMEOUT) == ({"c": 3}, 1)


async def test_a_write_on_a_replica_is_refused(target: Target) -> None:
    if target.role != "replica":
        pytest.skip("only a replica refuses writes")
    conn = await target.connect()
    with pytest.raises(QueryError):
        await conn.execute_script("CREATE TABLE kn_contract_never (id INT)", TIMEOUT)
    await conn.ping(TIMEOUT)


# ---------------------------------------------------------------------- statement cache


async def test_statement_cache_methods(target: Target) -> None:
    conn = await target.connect(cache_size=2)
    texts = [target.sql(f"SELECT {i} AS n")[0] for i in range(3)]
    prepared = await conn.prepare(texts[0], TIMEOUT)
    assert prepared is conn.server_prepare  # prepared now exactly when the server keeps it
    assert conn.has_statement(texts[0]) is conn.server_prepare
    assert await conn.prepare(texts[0], TIMEOUT) is False  # cached already, or no prepare
    for text in texts[1:]:
        await conn.fetch(text, (), "all", 100, TIMEOUT)
    cached = conn.server_prepare or conn.client_statement_cache  # a cache per connection
    assert conn.cached_statements() == (2 if cached else 0)  # LRU bound 2
    assert not conn.has_statement(texts[0])  # least recently used went first
    assert conn.has_statement(texts[2]) is cached
    # only server-side statements can be dropped (sqlite3 keeps its own: 0 dropped)
    assert conn.forget_statements([texts[2]]) == (1 if conn.server_prepare else 0)
    assert conn.forget_statements(None) == (1 if conn.server_prepare else 0)
    assert conn.cached_statements() == (2 if conn.client_statement_cache else 0)
    # applied at once, except where the size is fixed at connect (SQLite: 2 is not 1)
    assert conn.resize_statement_cache(0) is not conn.client_statement_cache
    assert conn.server_prepare is False
    assert await conn.prepare(texts[0], TIMEOUT) is False
    assert await conn.fetch(texts[0], (), "all", 100, TIMEOUT) == ([{"n": 0}], 1)


# ---------------------------------------------------------------------- connection life


async def test_ping_and_reset_keep_a_connection_usable(target: Target) -> None:
    conn = await target.connect()
    await conn.ping(TIMEOUT)
    if await conn.reset(TIMEOUT):  # False: this backend replaces a dirty connection
        assert not conn.in_transaction() and not conn.session_changed()
        await conn.ping(TIMEOUT)


@pytest.mark.parametrize("how", ["close", "terminate"])
async def test_a_closed_connection_says_so_and_fails_typed(target: Target, how: str) -> None:
    conn = await target.connect()
    if how == "close":
        await conn.close(TIMEOUT)
    else:
        conn.terminate()
    assert conn.is_closed()
    with pytest.raises(ConnectionFailed):
        await conn.ping(TIMEOUT)
    conn.terminate()  # a second stop is harmless
    await conn.close(TIMEOUT)
    started = time.monotonic()
    assert await target.driver.drain(TIMEOUT) is None  # what a pool's close awaits
    assert time.monotonic() - started < TIMEOUT


# ---------------------------------------------------------------------- catalog reads


async def test_replica_status_says_what_the_server_is(target: Target) -> None:
    conn = await target.connect()
    status = await target.driver.replica_status(conn, TIMEOUT)
    if status is None:  # a backend without replica status: the round trip checked liveness
        assert not target.driver.tracks_positions
        return
    assert isinstance(status, ReplicaStatus)
    assert status.standby is (target.role == "replica")
    if status.standby:
        assert status.position is not None and status.position > 0
        assert status.lag is not None and status.lag >= 0.0


async def test_replica_status_of_a_dead_connection_fails_typed(target: Target) -> None:
    conn = await target.connect()
    conn.terminate()
    with pytest.raises(ConnectionFailed):
        await target.driver.replica_status(conn, TIMEOUT)


async def test_write_position_advances_after_a_write(target: Target, table: str) -> None:
    conn = await target.connect()
    before = await target.driver.write_position(conn, TIMEOUT)
    if not target.driver.tracks_positions:
        assert before is None
        return
    assert before is not None and before > 0
    text, args = target.sql(f"INSERT INTO {table} VALUES (?, ?)", [4, "d"])
    await conn.fetch(text, args, "all", 100, TIMEOUT)
    after = await target.driver.write_position(conn, TIMEOUT)
    assert after is not None and after > before


async def test_replay_position_reaches_the_primarys_write_position(target: Target) -> None:
    driver, conn = target.driver, await target.connect()
    replayed = await driver.replay_position(conn, TIMEOUT)
    if target.role != "replica":  # a primary replays nothing; no positions: nothing
        assert replayed is None
        return
    primary = Target("primary", "primary", _primary_params(), driver, target.opened)
    written = await driver.write_position(await primary.connect(), TIMEOUT)
    assert written is not None and replayed is not None
    await _until(lambda: _replayed_past(driver, conn, written), seconds=10.0)


async def test_connection_limit_matches_the_servers_settings(target: Target) -> None:
    driver, conn = target.driver, await target.connect()
    name = target.params.application_name
    limit = await driver.connection_limit(conn, TIMEOUT, application_name=name, own_connections=1)
    if driver.max_useful_connections is not None:  # no server limit: nothing to read
        assert limit is None
        return
    assert isinstance(limit, ConnectionLimit)
    view = await target.connect()  # ours too: two of our connections are open now
    sql, by_name = SERVER_VIEW[driver.dialect]
    text, args = target.sql(sql, [name] if by_name else None)
    for _ in range(20):  # other tests share the server: retry until two reads agree
        limit = await driver.connection_limit(
            conn, TIMEOUT, application_name=name, own_connections=2
        )
        row, _ = await view.fetch(text, args, "one", 1, TIMEOUT)
        again = await driver.connection_limit(
            conn, TIMEOUT, application_name=name, own_connections=2
        )
        if limit == again:
            break
    assert isinstance(row, dict) and limit is not None
    assert (limit.max_connections, limit.reserved) == (row["max_connections"], row["reserved"])
    # "others" leaves our connections out: by application name where the server keeps
    # one per session, else by subtracting own_connections (both of ours)
    assert limit.others == int(row["sessions"]) - (0 if by_name else 2) >= 0


# ---------------------------------------------------------------------- helpers


def _primary_params() -> ConnectParams:
    dsn = server_dsn("KN_PG_DSN")
    return PoolConfig.from_options({"connection_string": dsn, "name": "contract"}).connect


async def _replayed_past(driver: Driver, conn: DriverConnection, position: int) -> bool:
    replayed = await driver.replay_position(conn, TIMEOUT)
    return replayed is not None and replayed >= position


async def _until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110  # polls what a background job changes
            await asyncio.sleep(0.01)
