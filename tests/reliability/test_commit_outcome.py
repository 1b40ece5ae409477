"""What a statement whose answer was lost is reported as, and a COMMIT's bookkeeping.

A fault proxy between the pool and the server cuts the connection just before or just
after a statement reaches the server, on the real PostgreSQL and MariaDB: a COMMIT (or a
write outside a transaction) is then "outcome unknown" and the row says which it was; a
read, or a statement inside a transaction, plainly failed. Through the router, a session
whose COMMIT outcome is unknown is unpinned, and a COMMIT the server answered is reported
as it answered even when reading the WAL position after it fails (#12, defect 4).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import CommitOutcomeUnknown, ConnectionFailed, OutcomeUnknown
from tests.conftest import server_dsn
from tests.reliability.conftest import ProxyFactory
from tests.reliability.proxy import FaultProxy

SERVERS = [
    pytest.param("KN_PG_DSN", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("KN_MYSQL_DSN", marks=pytest.mark.mysql, id="mysql"),
]


class Db:
    """A table on one server, a pool straight to it and a pool through a fault proxy."""

    def __init__(
        self, dsn: str, direct: WorkflowConnectionPool, cut: WorkflowConnectionPool,
        proxy: FaultProxy,
    ) -> None:  # fmt: skip
        self.dsn = dsn
        self.direct = direct
        self.cut = cut
        self.proxy = proxy
        self.table = f"kn_co_{uuid.uuid4().hex[:10]}"

    async def run(self, query: str) -> Any:
        async with self.direct.connection() as conn:
            res = await self.direct.execute(conn, query)
        assert res["success"], res
        return res["data"]

    async def rows(self) -> int:
        data = await self.run(f"SELECT count(*) AS n FROM {self.table}")
        return int(data[0]["n"])

    async def rows_settle(self, expected: int) -> int:
        """Return the row count once it is ``expected`` (the server may still be committing
        what it got just before the cut), or whatever it is after 5 s."""
        for _ in range(100):
            n = await self.rows()
            if n == expected:
                return n
            await asyncio.sleep(0.05)
        return n


@pytest.fixture(params=SERVERS)
async def db(request: pytest.FixtureRequest, make_proxy: ProxyFactory) -> AsyncIterator[Db]:
    dsn = server_dsn(request.param)
    proxy = await make_proxy(dsn)
    direct = WorkflowConnectionPool(name=f"d{uuid.uuid4().hex[:6]}", connection_string=dsn)
    cut = WorkflowConnectionPool(
        name=f"c{uuid.uuid4().hex[:6]}", connection_string=proxy.dsn(dsn),
        min_connections=1, max_connections=3,
    )  # fmt: skip
    db = Db(dsn, direct, cut, proxy)
    await db.run(f"CREATE TABLE {db.table} (id int, v varchar(20))")
    try:
        yield db
    finally:
        await db.run(f"DROP TABLE IF EXISTS {db.table}")
        await cut.close()
        await direct.close()


async def _lost(db: Db, conn: Any, query: str) -> ConnectionFailed:
    with pytest.raises(ConnectionFailed) as info:
        await db.cut.execute(conn, query)
    return info.value


async def _in_transaction(db: Db) -> Any:
    conn = await db.cut.acquire()
    for query in ("BEGIN", f"INSERT INTO {db.table} VALUES (1, 'x')"):
        assert (await db.cut.execute(conn, query))["success"]
    return conn


async def test_commit_whose_answer_is_lost_after_the_server_got_it_is_unknown(db: Db) -> None:
    conn = await _in_transaction(db)
    db.proxy.cut_on_statement(r"^\s*COMMIT", forward=True)
    exc = await _lost(db, conn, "COMMIT")
    assert isinstance(exc, CommitOutcomeUnknown), repr(exc)
    assert "may or may not have committed" in str(exc)
    assert (await db.cut.release(conn))["status"] == "recycled"
    assert await db.rows_settle(1) == 1  # it did commit


async def test_commit_cut_before_the_server_got_it_is_unknown_and_rolled_back(db: Db) -> None:
    conn = await _in_transaction(db)
    db.proxy.cut_on_statement(r"^\s*COMMIT", forward=False)
    exc = await _lost(db, conn, "COMMIT")
    assert isinstance(exc, CommitOutcomeUnknown), repr(exc)
    await db.cut.release(conn)
    assert await db.rows() == 0


async def test_write_outside_a_transaction_lost_in_flight_is_outcome_unknown(db: Db) -> None:
    async with db.cut.connection() as conn:
        db.proxy.cut_on_statement(rf"INSERT INTO {db.table}", forward=True)
        exc = await _lost(db, conn, f"INSERT INTO {db.table} VALUES (7, 'auto')")
        assert type(exc) is OutcomeUnknown, repr(exc)
    assert await db.rows_settle(1) == 1  # applied once, reported as unknown, not failed


async def test_statement_lost_inside_a_transaction_plainly_failed(db: Db) -> None:
    conn = await _in_transaction(db)
    db.proxy.cut_on_statement(rf"INSERT INTO {db.table}", forward=True)
    exc = await _lost(db, conn, f"INSERT INTO {db.table} VALUES (2, 'y')")
    assert type(exc) is ConnectionFailed, repr(exc)  # the transaction died with it
    await db.cut.release(conn)
    assert await db.rows() == 0


async def test_lost_read_and_statement_never_sent_plainly_failed(db: Db) -> None:
    async with db.cut.connection() as conn:
        db.proxy.cut_on_statement(r"SELECT 42", forward=True)
        assert type(await _lost(db, conn, "SELECT 42 AS answer")) is ConnectionFailed
        # the connection is known closed now: this write cannot have been sent
        never = await _lost(db, conn, f"INSERT INTO {db.table} VALUES (3, 'z')")
        assert type(never) is ConnectionFailed, repr(never)
    assert await db.rows() == 0
    state = db.cut.engine.state()
    assert state["active_connections"] == 0


# ---------------------------------------------------------------------- through the router


@asynccontextmanager
async def _router(
    primary: str, replica: str | None = None, **options: Any
) -> AsyncIterator[QueryRouterNode]:
    runtime = LocalRuntime()
    runtime.register_node(
        "db_pool",
        WorkflowConnectionPool(
            name="db_pool", connection_string=primary, min_connections=1, max_connections=4
        ),
    )
    replicas = []
    if replica is not None:
        runtime.register_node(
            "replica_pool",
            WorkflowConnectionPool(name="replica_pool", connection_string=replica, timeout=2),
        )
        replicas = ["replica_pool"]
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", read_replicas=replicas,
        replica_check_interval=0.2, **options,
    )  # fmt: skip
    runtime.register_node("router", router)
    async with runtime:
        yield router


async def _q(router: QueryRouterNode, query: str, session: str | None = None) -> Any:
    inputs: dict[str, Any] = {"query": query}
    if session is not None:
        inputs["session_id"] = session
    return await router.process(inputs)


async def _no_leak(router: QueryRouterNode) -> None:
    metrics = await router.get_metrics()
    assert (metrics["pinned_sessions"], metrics["active_transactions"]) == (0, 0)
    engine = router.engine
    assert engine is not None
    assert engine.primary.state()["active_connections"] == 0


async def test_router_unpins_a_session_whose_commit_outcome_is_unknown(db: Db) -> None:
    proxy, t = db.proxy, db.table
    async with _router(proxy.dsn(db.dsn)) as router:
        for query in ("BEGIN", f"INSERT INTO {t} VALUES (1, 'x')"):
            assert (await _q(router, query, "s"))["success"]
        proxy.cut_on_statement(r"^\s*COMMIT", forward=True)
        with pytest.raises(CommitOutcomeUnknown):
            await _q(router, "COMMIT", "s")
        await _no_leak(router)
        # the session goes on, on a new connection: nothing is refused after an end
        assert (await _q(router, "BEGIN", "s"))["success"]
        assert (await _q(router, f"INSERT INTO {t} VALUES (2, 'y')", "s"))["success"]
        assert (await _q(router, "COMMIT", "s"))["success"]
        await _no_leak(router)
    assert await db.rows_settle(2) == 2


async def test_router_never_retries_a_write_whose_outcome_is_unknown(db: Db) -> None:
    proxy, t = db.proxy, db.table
    async with _router(proxy.dsn(db.dsn)) as router:
        proxy.cut_on_statement(rf"INSERT INTO {t}", forward=True)
        with pytest.raises(OutcomeUnknown):
            await _q(router, f"INSERT INTO {t} VALUES (5, 'once')")
        await _no_leak(router)
    assert await db.rows_settle(1) == 1
    await asyncio.sleep(0.2)
    assert await db.rows() == 1  # written once: not repeated


# ---------------------------------------------------------------------- defect 4


@pytest.fixture
async def pg(make_proxy: ProxyFactory) -> AsyncIterator[tuple[QueryRouterNode, FaultProxy, Db]]:
    """A router whose primary is behind a fault proxy, with the real streaming replica."""
    dsn = server_dsn("KN_PG_DSN")
    proxy = await make_proxy(dsn)
    direct = WorkflowConnectionPool(name=f"d{uuid.uuid4().hex[:6]}", connection_string=dsn)
    db = Db(dsn, direct, direct, proxy)
    await db.run(f"CREATE TABLE {db.table} (id int PRIMARY KEY, v text)")
    try:
        async with _router(proxy.dsn(dsn), server_dsn("KN_PG_REPLICA_DSN")) as router:
            yield router, proxy, db
    finally:
        await db.run(f"DROP TABLE IF EXISTS {db.table}")
        await direct.close()


@pytest.mark.postgres
async def test_commit_is_a_success_when_reading_the_wal_position_after_it_fails(
    pg: tuple[QueryRouterNode, FaultProxy, Db],
) -> None:
    router, proxy, db = pg
    t = db.table
    for query in ("BEGIN", f"INSERT INTO {t} VALUES (1, 'x')"):
        assert (await _q(router, query, "s"))["success"]
    rule = proxy.cut_on_statement(r"pg_current_wal", forward=False)  # after COMMIT's answer
    res = await _q(router, "COMMIT", "s")
    assert rule.fired == 1
    assert res["success"] is True, res
    assert await db.rows() == 1
    await _no_leak(router)  # the session is not pinned to the dead connection
    assert (await _q(router, "BEGIN", "s"))["success"]  # and its next BEGIN works
    assert (await _q(router, "ROLLBACK", "s"))["success"]
    # the position is read later from another connection: the session sees its row
    seen = await _q(router, f"SELECT v FROM {t} WHERE id = 1", "s")
    assert seen["data"] == [{"v": "x"}]
    await _no_leak(router)


@pytest.mark.postgres
async def test_session_write_is_a_success_when_reading_the_wal_position_after_it_fails(
    pg: tuple[QueryRouterNode, FaultProxy, Db],
) -> None:
    router, proxy, db = pg
    t = db.table
    rule = proxy.cut_on_statement(r"pg_current_wal", forward=False)
    res = await _q(router, f"INSERT INTO {t} VALUES (2, 'auto')", "w")
    assert rule.fired == 1
    assert res["success"] is True and res["row_count"] == 1, res
    seen = await _q(router, f"SELECT v FROM {t} WHERE id = 2", "w")  # read-your-writes holds
    assert seen["data"] == [{"v": "auto"}], seen
    engine = router.engine
    assert engine is not None
    session = engine.sessions.sessions["w"]
    assert session.write_lsn > 0 and not session.lsn_pending
    await _no_leak(router)
