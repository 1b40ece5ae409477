"""The runtime pre-warming router nodes: real PostgreSQL (primary and standby) and SQLite."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import ParameterError
from kailash_nodes.runtime import Node, WorkflowBuilder
from tests.conftest import server_dsn


class Stack:
    """A runtime with a primary pool, an optional replica pool and a router, all registered."""

    def __init__(self, dsn: str, *, prewarm: bool = True, replica: str | None = None) -> None:
        self.runtime = LocalRuntime(prewarm=prewarm, prewarm_timeout=5.0)  # generous: no races
        self.pool = WorkflowConnectionPool(
            name="db_pool", connection_string=dsn, min_connections=1, max_connections=4
        )
        self.runtime.register_node("db_pool", self.pool)
        replicas = []
        if replica is not None:
            self.runtime.register_node(
                "replica_pool",
                WorkflowConnectionPool(
                    name="replica_pool", connection_string=replica, min_connections=1,
                    max_connections=4,
                ),
            )  # fmt: skip
            replicas = ["replica_pool"]
        self.router = QueryRouterNode(
            name="router", connection_pool="db_pool", pattern_learning=False,
            read_replicas=replicas, replica_check_interval=30.0,  # no check during a run
        )  # fmt: skip
        self.runtime.register_node("router", self.router)

    async def close(self) -> None:
        for name in ("router", "replica_pool", "db_pool"):
            if name in self.runtime.nodes:
                await self.runtime.get_node(name).close()

    async def prewarm_metrics(self) -> dict[str, Any]:
        metrics = await self.router.get_metrics()
        prewarm: dict[str, Any] = metrics["prewarm"]
        return prewarm


def chain(router: QueryRouterNode, steps: Mapping[str, str], key: int = 1) -> WorkflowBuilder:
    """One router node per step, each after the one before (fed its row count)."""
    wf = WorkflowBuilder()
    ids = list(steps)
    for node_id in ids:
        wf.add_node(node_id, router, query=steps[node_id], parameters=[key])
    for before, after in itertools.pairwise(ids):
        wf.add_connection(before, "row_count", after, "rows_before")
    return wf


def steps_for(table: str) -> dict[str, str]:
    return {
        "a": f"SELECT id FROM {table} WHERE id = $1",
        "b": f"SELECT id, v FROM {table} WHERE id = $1",
        "c": f"SELECT v FROM {table} WHERE id = ?",
    }


@pytest.fixture
async def pg_table(table: str) -> AsyncIterator[str]:
    """A table with one row, made outside any router (so routers under test start fresh)."""
    conn = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    try:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'one')")
        yield table
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


def hits(results: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    return {n: r["routing_metadata"]["cache_hit"] for n, r in results.items()}


@pytest.mark.postgres
async def test_prewarmed_nodes_hit_the_cache_on_their_first_run_in_a_fresh_router(
    pg_table: str,
) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))
    try:  # not started: the first node starts the router while the next one is pre-warmed
        results, _ = await stack.runtime.execute_async(
            chain(stack.router, steps_for(pg_table)).build()
        )
        assert all(r["success"] for r in results.values()), results
        assert hits(results) == {"a": False, "b": True, "c": True}
        prewarm = await stack.prewarm_metrics()
        runtime_side = prewarm["by_source"]["runtime"]
        assert (runtime_side["issued"], runtime_side["used"]) == (2, 2)
        assert (runtime_side["pending"], runtime_side["wasted"], runtime_side["errors"]) == (
            0,
            0,
            0,
        )
        assert prewarm["by_source"]["predictor"]["issued"] == 0
        stats = stack.runtime.get_prewarm_stats()
        assert (stats["issued"], stats["warmed"], stats["errors"]) == (2, 2, 0)
        # a second run: everything is prepared already, so there is nothing to pre-warm
        again, _ = await stack.runtime.execute_async(
            chain(stack.router, steps_for(pg_table)).build()
        )
        assert hits(again) == {"a": True, "b": True, "c": True}
        prewarm = await stack.prewarm_metrics()  # (b or c may be prepared on a 2nd connection)
        assert prewarm["issued"] == prewarm["used"] + prewarm["pending"] + prewarm["wasted"]
        assert prewarm["errors"] == 0
        assert stack.pool.engine.state()["active_connections"] == 0
    finally:
        await stack.close()


@pytest.mark.postgres
async def test_without_prewarm_the_first_run_prepares_each_statement_itself(pg_table: str) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"), prewarm=False)
    async with stack.runtime:
        results, _ = await stack.runtime.execute_async(
            chain(stack.router, steps_for(pg_table)).build()
        )
        assert hits(results) == {"a": False, "b": False, "c": False}
        assert (await stack.prewarm_metrics())["issued"] == 0
        assert stack.runtime.get_prewarm_stats()["issued"] == 0


@pytest.mark.postgres
async def test_a_failed_prewarm_is_counted_and_the_node_reports_its_own_error(
    pg_table: str,
) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))
    steps = {**steps_for(pg_table), "c": f"SELECT no_such_column FROM {pg_table} WHERE id = $1"}
    async with stack.runtime:
        results, _ = await stack.runtime.execute_async(chain(stack.router, steps).build())
        assert results["a"]["success"] and results["b"]["success"]
        assert results["b"]["routing_metadata"]["cache_hit"] is True
        c = results["c"]
        assert c["success"] is False and c["error_type"] == "UndefinedColumnError"
        assert c["sqlstate"] == "42703"
        prewarm = await stack.prewarm_metrics()
        assert prewarm["by_source"]["runtime"]["errors"] == 1
        assert prewarm["by_source"]["runtime"]["issued"] == 1  # b's
        assert stack.runtime.get_prewarm_stats()["errors"] == 0  # the hook itself never raised
        assert stack.pool.engine.state()["active_connections"] == 0
        ok = await stack.router.process({"query": steps["a"], "parameters": [1]})
        assert ok["data"] == [{"id": 1}]  # the connection the failed prepare ran on is fine


@pytest.mark.postgres
async def test_a_prewarm_of_a_statement_the_node_rejects_does_not_fail_the_nodes_before(
    pg_table: str,
) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))
    steps = {**steps_for(pg_table), "c": f"SELECT id FROM {pg_table} WHERE id = $1 OR id = :x"}
    async with stack.runtime:
        with pytest.raises(ParameterError, match="mixes placeholder styles") as info:
            await stack.runtime.execute_async(chain(stack.router, steps).build())
        assert any("workflow node 'c'" in note for note in info.value.__notes__)
        metrics = await stack.router.get_metrics()
        assert metrics["router_metrics"]["queries_routed"] == 3  # a and b ran, then c raised
        assert metrics["prewarm"]["by_source"]["runtime"]["errors"] == 1


@pytest.mark.postgres
async def test_two_router_nodes_in_one_level_are_both_prewarmed(pg_table: str) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))
    steps = steps_for(pg_table)
    wf = WorkflowBuilder()
    for node_id in ("a", "b", "c"):
        wf.add_node(node_id, stack.router, query=steps[node_id], parameters=[1])
    wf.add_connection("a", "row_count", "b", "rows_before")
    wf.add_connection("a", "row_count", "c", "rows_before")
    async with stack.runtime:
        results, _ = await stack.runtime.execute_async(wf.build())
        assert hits(results) == {"a": False, "b": True, "c": True}
        runtime_side = (await stack.prewarm_metrics())["by_source"]["runtime"]
        assert (runtime_side["issued"], runtime_side["used"]) == (2, 2)
        assert stack.pool.engine.state()["active_connections"] == 0


@pytest.mark.postgres
async def test_a_second_prewarm_does_not_take_the_connection_a_first_one_just_prepared_on(
    pg_table: str,
) -> None:
    # The interleaving behind a flaky two-node level, made deterministic: one idle
    # connection, two pre-warms one after the other. Both on that connection, only one of
    # the two nodes (which then run at once) could hit.
    stack = Stack(server_dsn("KN_PG_DSN"))
    steps = steps_for(pg_table)
    async with stack.runtime:
        await stack.router.process({"query": steps["a"], "parameters": [1]})  # opens 1 conn
        assert stack.pool.engine.state()["idle_connections"] == 1
        assert await stack.router.prewarm({"query": steps["b"]}) == 1
        assert await stack.router.prewarm({"query": steps["c"]}) == 1
        prewarm = await stack.prewarm_metrics()
        assert prewarm["connections_opened"] == 1  # c's went to a new connection
        holders = {
            text: [e.name for e in stack.pool.engine.idle if e.conn.has_statement(text)]
            for text in (steps["b"], steps["c"].replace("?", "$1"))
        }
        assert all(len(names) == 1 for names in holders.values()), holders
        assert len({names[0] for names in holders.values()}) == 2, holders
        b, c = await asyncio.gather(
            stack.router.process({"query": steps["b"], "parameters": [1]}),
            stack.router.process({"query": steps["c"], "parameters": [1]}),
        )
        assert (b["routing_metadata"]["cache_hit"], c["routing_metadata"]["cache_hit"]) == (
            True,
            True,
        )
        assert (await stack.prewarm_metrics())["by_source"]["runtime"]["used"] == 2


@pytest.mark.postgres
async def test_a_prewarm_at_the_pool_limit_uses_a_claimed_connection(pg_table: str) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))  # max_connections=4
    steps = steps_for(pg_table)
    async with stack.runtime:
        await stack.router.process({"query": steps["a"], "parameters": [1]})
        pool = stack.pool.engine
        held = [await pool.acquire() for _ in range(4)]
        await pool.release(held.pop())  # at the limit, one idle
        try:
            assert await stack.router.prewarm({"query": steps["b"]}) == 1
            assert await stack.router.prewarm({"query": steps["c"]}) == 1  # no room: shares
        finally:
            for pc in held:
                await pool.release(pc)
        holders = [e for e in pool.idle if e.conn.has_statement(steps["b"])]
        assert len(holders) == 1
        assert holders[0].conn.has_statement(steps["c"].replace("?", "$1"))
        assert (await stack.prewarm_metrics())["connections_opened"] == 0


@pytest.mark.postgres
async def test_prewarm_opens_a_connection_when_none_is_idle(pg_table: str) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))
    steps = steps_for(pg_table)
    wf = chain(stack.router, {"b": steps["b"]})
    held = Hold(stack.pool)
    wf.add_node("hold", held)
    wf.add_connection("hold", "held", "b", "after")
    async with stack.runtime:  # min_connections=1: hold takes it, b's pre-warm opens another
        results, _ = await stack.runtime.execute_async(wf.build())
        assert results["b"]["routing_metadata"]["cache_hit"] is True
        prewarm = await stack.prewarm_metrics()
        assert prewarm["connections_opened"] == 1
        assert stack.pool.engine.state()["total_connections"] == 2


class Hold(Node):
    """Holds a pool connection while it runs, until the next level's pre-warm is done."""

    def __init__(self, pool: WorkflowConnectionPool) -> None:
        super().__init__(name="hold")
        self.pool = pool
        self.forever = False

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        async with self.pool.connection():
            await asyncio.sleep(3600 if self.forever else 0.3)  # the pre-warm runs meanwhile
        return {"held": True}


@pytest.mark.postgres
async def test_a_run_cancelled_while_a_prewarm_is_in_flight_leaks_no_connection(
    pg_table: str,
) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"))
    held = Hold(stack.pool)
    held.forever = True
    wf = chain(stack.router, {"b": f"SELECT v FROM {pg_table} WHERE id = $1"})
    wf.add_node("hold", held)
    wf.add_connection("hold", "held", "b", "after")
    locker = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    watcher = await asyncpg.connect(server_dsn("KN_PG_DSN"))  # outside the locker's snapshot
    try:
        async with stack.runtime:
            await locker.execute(f"BEGIN; LOCK TABLE {pg_table} IN ACCESS EXCLUSIVE MODE")
            run = asyncio.create_task(stack.runtime.execute_async(wf.build()))
            for _ in range(500):  # until b's prepare waits for the lock on the server
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE $1",
                    f"%{pg_table}%",
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert waiting == 1
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            await locker.execute("ROLLBACK")
            state = stack.pool.engine.state()
            assert state["active_connections"] == 0
            assert stack.runtime.get_prewarm_stats()["cancelled"] == 1
            assert not any(e.conn.in_transaction() for e in stack.pool.engine.idle_entries())
            ok = await stack.router.process({"query": f"SELECT v FROM {pg_table} WHERE id = 1"})
            assert ok["data"] == [{"v": "one"}]
    finally:
        await locker.close()
        await watcher.close()


@pytest.mark.postgres
@pytest.mark.replica
async def test_a_read_is_prewarmed_on_the_replica_it_will_run_on_and_a_write_on_the_primary(
    pg_table: str,
) -> None:
    stack = Stack(server_dsn("KN_PG_DSN"), replica=server_dsn("KN_PG_REPLICA_DSN"))
    standby = await asyncpg.connect(server_dsn("KN_PG_REPLICA_DSN"))
    try:
        for _ in range(500):  # the table (made on the primary) must have reached the standby
            if await standby.fetchval("SELECT to_regclass($1) IS NOT NULL", pg_table):
                break
            await asyncio.sleep(0.01)
    finally:
        await standby.close()
    steps = {
        "a": f"SELECT id FROM {pg_table} WHERE id = $1",
        "b": f"SELECT v, id FROM {pg_table} WHERE id = $1",
        "c": f"UPDATE {pg_table} SET v = v WHERE id = $1",
    }
    async with stack.runtime:
        results, _ = await stack.runtime.execute_async(chain(stack.router, steps).build())
        targets = {n: r["routing_metadata"]["target"] for n, r in results.items()}
        assert targets == {"a": "replica:replica_pool", "b": "replica:replica_pool",
                           "c": "primary"}  # fmt: skip
        assert hits(results) == {"a": False, "b": True, "c": True}


@pytest.mark.sqlite
async def test_on_sqlite_prewarm_does_nothing_and_counts_nothing(tmp_path: Path) -> None:
    stack = Stack(f"sqlite:///{tmp_path / 'p.db'}")
    async with stack.runtime:
        await stack.router.process({"query": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"})
        await stack.router.process({"query": "INSERT INTO t VALUES (1, 'one')"})
        results, _ = await stack.runtime.execute_async(chain(stack.router, steps_for("t")).build())
        assert all(r["success"] for r in results.values())
        assert hits(results) == {"a": False, "b": False, "c": False}
        prewarm = await stack.prewarm_metrics()
        for key in ("issued", "used", "pending", "wasted", "already_prepared", "errors"):
            assert prewarm[key] == 0, key
        assert prewarm["connections_opened"] == 0
        stats = stack.runtime.get_prewarm_stats()
        assert (stats["warmed"], stats["errors"], stats["cancelled"]) == (0, 0, 0)
