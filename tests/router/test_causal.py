"""Causal consistency along workflow edges (docs/router.md#workflow-runs).

Real servers: the PostgreSQL primary and its streaming standby (replay paused on the
standby where a test needs the replica to stay behind), MariaDB and SQLite with a second
pool on the same database standing in for a replica (the time window, no positions).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.runtime import Node, WorkflowBuilder
from tests.conftest import server_dsn

Results = dict[str, dict[str, Any]]


class Stack:
    """A runtime with a primary pool, a replica pool and a router, all registered."""

    def __init__(self, primary: str, replica: str, **router_options: Any) -> None:
        self.runtime = LocalRuntime()
        for name, dsn in (("db_pool", primary), ("replica_pool", replica)):
            pool = WorkflowConnectionPool(
                name=name, connection_string=dsn, min_connections=2, max_connections=6
            )
            self.runtime.register_node(name, pool)
        self.router = QueryRouterNode(
            name="router", connection_pool="db_pool", read_replicas=["replica_pool"],
            pattern_learning=False, **{"replica_check_interval": 30.0, **router_options},
        )  # fmt: skip
        self.runtime.register_node("router", self.router)

    async def run(self, wf: WorkflowBuilder) -> tuple[Results, str]:
        return await self.runtime.execute_async(wf.build())

    async def q(self, query: str, params: Any = None) -> dict[str, Any]:
        """Run ``query`` outside any run (no session, no token)."""
        return await self.router.process({"query": query, "parameters": params})

    async def routing(self) -> dict[str, Any]:
        metrics: dict[str, Any] = (await self.router.get_metrics())["router_metrics"]
        return metrics

    def sessions(self) -> int:
        engine = self.router.engine
        assert engine is not None
        return len(engine.sessions.sessions)


def step(wf: WorkflowBuilder, stack: Stack, node_id: str, query: str, *params: Any) -> str:
    return wf.add_node(node_id, stack.router, query=query, parameters=list(params))


def edge(wf: WorkflowBuilder, before: str, after: str) -> None:
    wf.add_connection(before, "row_count", after, f"after_{before}")


def target(result: Mapping[str, Any]) -> str:
    assert result["success"], result
    value: str = result["routing_metadata"]["target"]
    return value


def replica_admin_dsn() -> str:
    """The superuser on the standby: the primary's admin credentials, the standby's port."""
    admin, replica = (
        urlsplit(server_dsn("KN_PG_ADMIN_DSN")),
        urlsplit(server_dsn("KN_PG_REPLICA_DSN")),
    )
    netloc = f"{admin.netloc.rpartition('@')[0]}@{replica.hostname}:{replica.port}"
    return urlunsplit(admin._replace(netloc=netloc))


@asynccontextmanager
async def replay_paused() -> AsyncIterator[None]:
    """Pause WAL replay on the shared standby; always resumed on the way out."""
    conn = await asyncpg.connect(replica_admin_dsn())
    try:
        await conn.execute("SELECT pg_wal_replay_pause()")
        paused = "SELECT pg_get_wal_replay_pause_state() = 'paused'"
        while not await conn.fetchval(paused):  # noqa: ASYNC110  # polls the server
            await asyncio.sleep(0.005)
        yield
    finally:
        try:
            await conn.execute("SELECT pg_wal_replay_resume()")
        finally:
            await conn.close()


@pytest.fixture
async def pg_table(table: str) -> AsyncIterator[str]:
    """A table with row 1, made on the primary and already replayed by the standby."""
    conn = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    replica = await asyncpg.connect(server_dsn("KN_PG_REPLICA_DSN"))
    try:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'one')")
        lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        replayed = "SELECT pg_last_wal_replay_lsn() >= $1"
        while not await replica.fetchval(replayed, lsn):  # noqa: ASYNC110  # polls the server
            await asyncio.sleep(0.01)
        yield table
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
        await replica.close()


@asynccontextmanager
async def pg_stack(**router_options: Any) -> AsyncIterator[Stack]:
    stack = Stack(server_dsn("KN_PG_DSN"), server_dsn("KN_PG_REPLICA_DSN"), **router_options)
    async with stack.runtime:
        yield stack


# ---------------------------------------------------------------- parallelism


def sleep_query(name: str) -> tuple[str, str]:
    if name == "postgresql":
        return "SELECT pg_sleep(0.4)", "KN_PG_DSN"
    return "SELECT SLEEP(0.4) AS s", "KN_MYSQL_DSN"


@pytest.mark.parametrize(
    "backend_name",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
async def test_independent_nodes_of_one_level_run_their_statements_at_the_same_time(
    backend_name: str,
) -> None:
    query, env = sleep_query(backend_name)
    dsn = server_dsn(env)
    stack = Stack(dsn, dsn)
    async with stack.runtime:
        wf = WorkflowBuilder()
        step(wf, stack, "a", query)
        step(wf, stack, "b", query)
        await stack.run(wf)  # connections opened, statements seen: measure the second run
        start = time.perf_counter()
        results, _ = await stack.run(wf)
        wall = time.perf_counter() - start
        print(f"\n{backend_name}: a level of two 0.4 s statements took {wall:.3f} s")
        assert all(r["success"] for r in results.values()), results
        # A functional check, not a benchmark: serialized, the level takes 0.8 s.
        assert wall < 0.7
        assert stack.sessions() == 0  # plain statements of a run make no session


@pytest.mark.postgres
async def test_parallel_writers_of_one_level_run_concurrently(pg_table: str) -> None:
    """Node a's UPDATE waits for a row lock that only node b releases, after its own
    INSERT: with statements of a run taking turns, b's INSERT would wait for a forever."""
    t = pg_table
    holder = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    watcher = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    try:
        async with pg_stack() as stack:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(f"UPDATE {t} SET v = 'held' WHERE id = 1")

            class Releaser(Node):
                async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
                    blocked = (
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE $1"
                    )  # node a's UPDATE is waiting for the row lock
                    while not await watcher.fetchval(blocked, f"UPDATE {t}%"):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                    try:
                        return await asyncio.wait_for(
                            stack.router.process(
                                {"query": f"INSERT INTO {t} VALUES (2, 'b')", "parameters": []}
                            ),
                            timeout=5.0,
                        )
                    finally:
                        await tx.commit()

            wf = WorkflowBuilder()
            step(wf, stack, "a", f"UPDATE {t} SET v = 'a' WHERE id = 1")
            wf.add_node("b", Releaser(name="b"))
            step(wf, stack, "both", f"SELECT id, v FROM {t} ORDER BY id")
            edge(wf, "a", "both")
            edge(wf, "b", "both")
            results, _ = await stack.run(wf)
        assert results["a"]["success"] and results["b"]["success"], results
        assert results["both"]["data"] == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    finally:
        await holder.close()
        await watcher.close()


# ---------------------------------------------------------------- read-your-writes


def writer_then_reader(stack: Stack, t: str, key: int) -> WorkflowBuilder:
    wf = WorkflowBuilder()
    step(wf, stack, "w", f"INSERT INTO {t} VALUES ($1, $2)", key, f"v{key}")
    step(wf, stack, "r", f"SELECT v FROM {t} WHERE id = $1", key)
    edge(wf, "w", "r")
    return wf


def with_a_bystander(stack: Stack, t: str, key: int) -> WorkflowBuilder:
    """`writer_then_reader` plus n -> x, where x counts the table but is fed by n only."""
    wf = writer_then_reader(stack, t, key)
    step(wf, stack, "n", "SELECT 1 AS one")
    step(wf, stack, "x", f"SELECT count(*) AS n FROM {t}")
    edge(wf, "n", "x")
    return wf


@pytest.mark.postgres
async def test_a_node_fed_by_a_writer_sees_its_row_every_time(pg_table: str) -> None:
    async with pg_stack() as stack:
        targets = []
        for key in range(100, 150):
            results, _ = await stack.run(writer_then_reader(stack, pg_table, key))
            assert results["r"]["data"] == [{"v": f"v{key}"}], (key, results["r"])
            targets.append(target(results["r"]))
        assert "replica:replica_pool" in targets  # the standby served once it had replayed


@pytest.mark.postgres
async def test_with_replay_paused_a_node_fed_by_a_writer_reads_the_primary(pg_table: str) -> None:
    async with pg_stack(consistency_timeout=0.05) as stack, replay_paused():
        before = (await stack.routing())["consistency_fallbacks"]
        for key in range(200, 250):
            results, _ = await stack.run(writer_then_reader(stack, pg_table, key))
            assert results["r"]["data"] == [{"v": f"v{key}"}], (key, results["r"])
            assert target(results["r"]) == "primary"
        assert (await stack.routing())["consistency_fallbacks"] - before == 50


@pytest.mark.postgres
async def test_a_node_not_downstream_of_a_write_keeps_reading_the_replica(pg_table: str) -> None:
    """Level 1: writer w and reader n; level 2: r fed by w, x fed by n only. x runs after
    the write, but is not downstream of it: the lagging standby serves it."""
    t = pg_table
    async with pg_stack(consistency_timeout=0.05) as stack, replay_paused():
        results, _ = await stack.run(with_a_bystander(stack, t, 300))
        assert target(results["r"]) == "primary" and results["r"]["data"] == [{"v": "v300"}]
        assert target(results["x"]) == "replica:replica_pool"
        assert results["x"]["data"] == [{"n": 1}]  # the standby had not replayed the write


@pytest.mark.postgres
async def test_the_token_travels_along_every_edge_of_a_chain(pg_table: str) -> None:
    """w -> a -> b: b is downstream of w through a node that wrote nothing."""
    t = pg_table
    async with pg_stack(consistency_timeout=0.05) as stack, replay_paused():
        wf = writer_then_reader(stack, t, 400)
        step(wf, stack, "b", f"SELECT v FROM {t} WHERE id = $1", 400)
        edge(wf, "r", "b")
        results, _ = await stack.run(wf)
        assert target(results["b"]) == "primary" and results["b"]["data"] == [{"v": "v400"}]


@pytest.mark.postgres
async def test_a_transaction_spread_over_chained_nodes_shares_one_connection(
    pg_table: str,
) -> None:
    """BEGIN, INSERT, a read inside, COMMIT in four chained nodes, without session_id; the
    node after the COMMIT sees the row (the COMMIT's token went to the committing node)."""
    t = pg_table
    async with pg_stack(consistency_timeout=0.05) as stack, replay_paused():
        wf = WorkflowBuilder()
        step(wf, stack, "begin", "BEGIN")
        step(wf, stack, "insert", f"INSERT INTO {t} VALUES (500, 'tx')")
        step(wf, stack, "inside", f"SELECT count(*) AS n FROM {t}")
        step(wf, stack, "commit", "COMMIT")
        step(wf, stack, "after", f"SELECT v FROM {t} WHERE id = 500")
        for before, after in [
            ("begin", "insert"), ("insert", "inside"), ("inside", "commit"), ("commit", "after"),
        ]:  # fmt: skip
            edge(wf, before, after)
        results, run_id = await stack.run(wf)
        in_tx = [results[n] for n in ("begin", "insert", "inside", "commit")]
        assert all(r["success"] for r in in_tx), in_tx
        assert {r["routing_metadata"]["session_id"] for r in in_tx} == {run_id}
        assert len({r["connection_id"] for r in in_tx}) == 1
        assert results["inside"]["data"] == [{"n": 2}]  # its own uncommitted row
        assert target(results["after"]) == "primary"  # the standby is paused
        assert results["after"]["data"] == [{"v": "tx"}]
        metrics = await stack.router.get_metrics()
        assert metrics["pinned_sessions"] == 0 and metrics["active_transactions"] == 0
        committed = await stack.q(f"SELECT v FROM {t} WHERE id = 500 /* route:primary */")
        assert committed["data"] == [{"v": "tx"}]


@pytest.mark.postgres
async def test_outside_a_run_reads_carry_no_token(pg_table: str) -> None:
    async with pg_stack(consistency_timeout=0.05) as stack, replay_paused():
        await stack.q(f"INSERT INTO {pg_table} VALUES (600, 'out')")
        res = await stack.q(f"SELECT count(*) AS n FROM {pg_table}")
        assert target(res) == "replica:replica_pool" and res["data"] == [{"n": 1}]
        assert stack.sessions() == 0


@pytest.mark.postgres
async def test_an_explicit_session_in_a_node_carries_its_write_downstream(pg_table: str) -> None:
    t = pg_table
    async with pg_stack(consistency_timeout=0.05) as stack, replay_paused():
        wf = WorkflowBuilder()
        sid = f"s-{uuid.uuid4().hex[:6]}"
        wf.add_node("w", stack.router, query=f"INSERT INTO {t} VALUES (700, 's')", session_id=sid)
        step(wf, stack, "r", f"SELECT v FROM {t} WHERE id = 700")
        edge(wf, "w", "r")
        results, _ = await stack.run(wf)
        assert target(results["r"]) == "primary" and results["r"]["data"] == [{"v": "s"}]
        await stack.router.process({"operation": "end_session", "session_id": sid})


# ---------------------------------------------------------------- no positions: windows


@pytest.mark.parametrize(
    "env",
    [pytest.param("KN_MYSQL_DSN", marks=pytest.mark.mysql, id="mysql"), "sqlite"],
)
async def test_without_positions_only_downstream_nodes_read_the_primary_after_a_write(
    env: str, table: str, tmp_path: Path
) -> None:
    """MySQL and SQLite: a write opens a window on the primary for the nodes downstream of
    the writer; the others keep reading the "replica" (here the same database)."""
    dsn = f"sqlite:///{tmp_path / 'c.db'}" if env == "sqlite" else server_dsn(env)
    stack = Stack(dsn, dsn)
    async with stack.runtime:
        assert (await stack.q(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"))["success"]
        try:
            results, _ = await stack.run(with_a_bystander(stack, table, 1))
            assert target(results["r"]) == "primary" and results["r"]["data"] == [{"v": "v1"}]
            assert target(results["x"]) == "replica:replica_pool"
        finally:
            await stack.q(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
@pytest.mark.mysql
async def test_a_token_of_one_primary_does_not_hold_back_reads_of_another(pg_table: str) -> None:
    """A PostgreSQL write upstream: a MariaDB router's read downstream has nothing to wait
    for (WAL positions of one server mean nothing to another)."""
    mysql = server_dsn("KN_MYSQL_DSN")
    async with pg_stack(consistency_timeout=0.05) as stack:
        for name, dsn in (("my_pool", mysql), ("my_replica", mysql)):
            stack.runtime.register_node(
                name, WorkflowConnectionPool(name=name, connection_string=dsn)
            )
        other = QueryRouterNode(
            name="my_router", connection_pool="my_pool", read_replicas=["my_replica"],
            pattern_learning=False, replica_check_interval=30.0,
        )  # fmt: skip
        stack.runtime.register_node("my_router", other)
        await stack.runtime.start()
        wf = WorkflowBuilder()
        step(wf, stack, "w", f"INSERT INTO {pg_table} VALUES (800, 'pg')")
        wf.add_node("r", other, query="SELECT 1 AS one", parameters=[])
        edge(wf, "w", "r")
        results, _ = await stack.run(wf)
        assert target(results["r"]) == "replica:my_replica"
        assert (await other.get_metrics())["router_metrics"]["consistency_waits"] == 0
