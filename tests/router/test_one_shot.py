"""The router's one-shot path (a plain statement outside sessions and workflow runs goes
to the pool's `run_once`): real PostgreSQL. It must count, fail, cancel and give back
exactly like the acquire/execute/release path it stands in for."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import ParameterError, PoolTimeout
from kailash_nodes.pool import ConnectionPool, PooledConnection
from kailash_nodes.runtime import Node, WorkflowBuilder
from tests.conftest import server_dsn

pytestmark = pytest.mark.postgres


class Taken(list[str]):
    """The statements that took the one-shot path, and (``pools``) the pool of each."""

    def __init__(self) -> None:
        super().__init__()
        self.pools: list[ConnectionPool] = []


def one_shot_taken(router: QueryRouterNode, monkeypatch: pytest.MonkeyPatch) -> Taken:
    """Record every statement the router sends through the pool's one-shot path."""
    import kailash_nodes.router.engine as engine_module

    seen = Taken()
    real = engine_module.run_once

    async def spy(pool: ConnectionPool, query: str, *rest: Any) -> Any:
        seen.append(query)
        seen.pools.append(pool)
        return await real(pool, query, *rest)

    monkeypatch.setattr(engine_module, "run_once", spy)
    return seen


@asynccontextmanager
async def routed(
    monkeypatch: pytest.MonkeyPatch, **pool_options: Any
) -> AsyncIterator[tuple[QueryRouterNode, ConnectionPool, Taken]]:
    """A primary-only router over a started pool, and what takes its one-shot path."""
    runtime = LocalRuntime()
    options = {"min_connections": 1, "max_connections": 3, **pool_options}
    pool = WorkflowConnectionPool(
        name="db_pool", connection_string=server_dsn("KN_PG_DSN"), **options
    )
    runtime.register_node("db_pool", pool)
    router = QueryRouterNode(name="router", connection_pool="db_pool")
    runtime.register_node("router", router)
    async with runtime:
        await router.process({"query": "SELECT 1"})  # started, one connection idle
        yield router, pool.engine, one_shot_taken(router, monkeypatch)


async def test_plain_statements_take_the_one_shot_path_and_are_counted_like_leases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch) as (router, pool, seen):
        stats = pool.stats
        before = (
            stats.acquires,
            stats.queries_executed,
            stats.acquire_wait.total_count,
            stats.query_time.total_count,
            stats.hold_time.total_count,
        )
        metrics_before = (await router.get_metrics())["router_metrics"]
        results = [
            await router.process({"query": "SELECT $1::int AS n", "parameters": [i]})
            for i in range(5)
        ]
        assert [r["data"] for r in results] == [[{"n": i}] for i in range(5)]
        assert len(seen) == 5
        after = (
            stats.acquires,
            stats.queries_executed,
            stats.acquire_wait.total_count,
            stats.query_time.total_count,
            stats.hold_time.total_count,
        )
        assert [a - b for a, b in zip(after, before, strict=True)] == [5] * 5
        ids = [r["connection_id"] for r in results]
        assert all(re.fullmatch(r"db_pool-c\d+#\d+", i) for i in ids), ids
        assert len(set(ids)) == 5  # one lease id per checkout
        assert [r["routing_metadata"]["cache_hit"] for r in results] == [False] + [True] * 4
        assert all(r["routing_metadata"]["routing_time_ms"] >= 0 for r in results)
        metrics = (await router.get_metrics())["router_metrics"]
        assert metrics["queries_routed"] - metrics_before["queries_routed"] == 5
        assert pool.state()["active_connections"] == 0


async def test_a_rejected_statement_is_an_error_result_and_the_connection_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch) as (router, pool, seen):
        total = pool.state()["total_connections"]
        errors = pool.stats.query_errors
        bad = await router.process({"query": "SELECT no_such_column FROM pg_class"})
        assert seen, "the statement did not take the one-shot path"
        assert bad["success"] is False and bad["error_type"] == "UndefinedColumnError"
        assert bad["sqlstate"] == "42703"
        assert re.fullmatch(r"db_pool-c\d+#\d+", bad["connection_id"])
        assert bad["routing_metadata"]["connection_id"] == bad["connection_id"]
        assert pool.stats.query_errors == errors + 1
        good = await router.process({"query": "SELECT 2 AS n"})
        assert good["data"] == [{"n": 2}]
        assert pool.state()["total_connections"] == total
        assert pool.state()["active_connections"] == 0


async def test_a_statement_cancelled_on_the_wire_replaces_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch) as (router, pool, seen):
        pid = (await router.process({"query": "SELECT pg_backend_pid() AS pid"}))["data"][0]["pid"]
        task = asyncio.ensure_future(router.process({"query": "SELECT pg_sleep(30)"}))
        await asyncio.sleep(0.3)
        assert len(seen) == 2 and pool.state()["active_connections"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.state()["active_connections"] == 0
        # the connection it ran on (its state unknown) was closed, not put back
        pids = set()
        for _ in range(3):
            r = await router.process({"query": "SELECT pg_backend_pid() AS pid"})
            pids.add(r["data"][0]["pid"])
        assert pid not in pids


async def test_an_idle_connection_killed_behind_the_pools_back_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch, check_idle_after=0.05) as (router, pool, _):
        pid = (await router.process({"query": "SELECT pg_backend_pid() AS pid"}))["data"][0]["pid"]
        admin = await asyncpg.connect(server_dsn("KN_PG_ADMIN_DSN"))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # past check_idle_after: the next checkout checks it
        r = await router.process({"query": "SELECT pg_backend_pid() AS pid"})
        assert r["success"] is True and r["data"][0]["pid"] != pid
        assert pool.state()["active_connections"] == 0


async def test_a_value_the_driver_refuses_raises_and_keeps_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch, max_connections=1) as (router, pool, seen):
        pid = (await router.process({"query": "SELECT pg_backend_pid() AS pid"}))["data"][0]["pid"]
        with pytest.raises(ParameterError):
            await router.process({"query": "SELECT $1::int + 1 AS n", "parameters": ["x"]})
        assert len(seen) == 2
        again = await router.process({"query": "SELECT pg_backend_pid() AS pid"})
        assert again["data"][0]["pid"] == pid  # not replaced: nothing was sent
        assert pool.state()["active_connections"] == 0


async def waiting_behind(
    router: QueryRouterNode, pool: ConnectionPool, query: str, wait: float
) -> tuple[PooledConnection, asyncio.Future[dict[str, Any]]]:
    """Hold the pool's only connection and start routing ``query``, which then waits in
    the pool's queue; return the held lease and the waiting call."""
    held = await pool.acquire()
    waiting = asyncio.ensure_future(router.process({"query": query}))
    await asyncio.sleep(wait)
    assert pool.state()["waiting_requests"] == 1
    return held, waiting


async def test_with_nothing_idle_it_waits_in_the_queue_and_can_time_out_or_be_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch, max_connections=1, timeout=0.5) as (router, pool, seen):
        held, waiting = await waiting_behind(router, pool, "SELECT 4 AS n", 0.3)
        await pool.release(held)  # handed to the waiter
        assert (await waiting)["data"] == [{"n": 4}]
        # its samples: the wait (about 0.3 s) is acquire time, not hold time
        waited, held_for = pool.stats.acquire_wait.recent(1)[0], pool.stats.hold_time.recent(1)[0]
        assert waited > 0.2 > held_for
        held = await pool.acquire()
        with pytest.raises(PoolTimeout):
            await router.process({"query": "SELECT 5 AS n"})
        cancelled = asyncio.ensure_future(router.process({"query": "SELECT 6 AS n"}))
        await asyncio.sleep(0.1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert pool.state()["waiting_requests"] == 0
        await pool.release(held)
        assert (pool.state()["active_connections"], pool.state()["idle_connections"]) == (0, 1)
        assert len(seen) == 3
        assert (await router.process({"query": "SELECT 7 AS n"}))["data"] == [{"n": 7}]


async def test_a_waiter_cancelled_just_after_the_hand_over_gives_the_connection_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch, max_connections=1, timeout=1.0) as (router, pool, seen):
        held, waiting = await waiting_behind(router, pool, "SELECT 8 AS n", 0.1)
        await pool.release(held)  # handed over: the waiter has not run since
        waiting.cancel()  # so it is cancelled holding the connection it was handed
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert seen
        assert (pool.state()["active_connections"], pool.state()["idle_connections"]) == (0, 1)
        assert (await router.process({"query": "SELECT 9 AS n"}))["data"] == [{"n": 9}]


async def test_the_pools_max_rows_holds_on_the_one_shot_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch, max_rows=3) as (router, pool, seen):
        big = await router.process({"query": "SELECT g FROM generate_series(1, 10) g"})
        assert seen
        assert big["success"] is False and big["error_type"] == "ResultTooLarge"
        small = await router.process({"query": "SELECT g FROM generate_series(1, 3) g"})
        assert small["row_count"] == 3
        assert pool.state()["active_connections"] == 0


async def test_a_pool_with_learning_on_runs_it_through_a_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(monkeypatch, enable_query_routing=True) as (router, pool, seen):
        assert pool.observer is not None
        r = await router.process({"query": "SELECT 3 AS n"})
        assert r["data"] == [{"n": 3}] and seen  # the same entry point, the lease inside
        assert re.fullmatch(r"db_pool-c\d+#\d+", r["connection_id"])
        assert pool.state()["active_connections"] == 0


@asynccontextmanager
async def run_bed(table: str) -> AsyncIterator[tuple[LocalRuntime, QueryRouterNode]]:
    """A primary-only router in a runtime, and ``table`` with no rows."""
    admin = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    await admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    runtime = LocalRuntime()
    runtime.register_node(
        "db_pool",
        WorkflowConnectionPool(
            name="db_pool", connection_string=server_dsn("KN_PG_DSN"), max_connections=4
        ),
    )
    router = QueryRouterNode(name="router", connection_pool="db_pool")
    runtime.register_node("router", router)
    try:
        async with runtime:
            yield runtime, router
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()


async def run_chain(
    runtime: LocalRuntime,
    router: QueryRouterNode,
    steps: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], list[str]]:
    """Run one router node per step, each fed by the one before; return the results and
    the statements that took the one-shot path."""
    seen = one_shot_taken(router, monkeypatch)
    wf = WorkflowBuilder()
    ids = list(steps)
    for node_id in ids:
        wf.add_node(node_id, router, query=steps[node_id])
    for before, after in itertools.pairwise(ids):
        wf.add_connection(before, "row_count", after, f"after_{before}")
    results, _ = await runtime.execute_async(wf.build())
    return results, seen


async def test_in_a_run_only_a_read_with_no_write_upstream_takes_the_one_shot_path(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_bed(table) as (runtime, router):
        steps = {
            "first": f"SELECT count(*) AS n FROM {table}",
            "write": f"INSERT INTO {table} VALUES (1)",
            "after": f"SELECT count(*) AS n FROM {table}",
        }
        results, seen = await run_chain(runtime, router, steps, monkeypatch)
        assert results["after"]["data"] == [{"n": 1}]
        assert seen == [f"SELECT count(*) AS n FROM {table}"]  # "first" only


async def test_in_a_run_a_read_inside_its_transaction_stays_on_the_pinned_connection(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_bed(table) as (runtime, router):
        steps = {
            "begin": "BEGIN",
            "write": f"INSERT INTO {table} VALUES (2)",
            "read": f"SELECT count(*) AS n FROM {table} WHERE id = 2",
            "plain": "SELECT 1 AS one",
            "end": "ROLLBACK",
        }
        results, seen = await run_chain(runtime, router, steps, monkeypatch)
        assert results["read"]["data"] == [{"n": 1}]  # the uncommitted row: same connection
        assert results["plain"]["connection_id"] == results["read"]["connection_id"]
        assert seen == []
        again = await router.process({"query": f"SELECT count(*) AS n FROM {table}"})
        assert again["data"] == [{"n": 0}]  # rolled back


class Gate(Node):
    """A node that is not a router: whatever runs after it inherits no write from it."""

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"go": True}


async def test_in_a_run_holding_a_transaction_a_read_with_no_write_upstream_joins_it(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_bed(table) as (runtime, router):
        seen = one_shot_taken(router, monkeypatch)
        wf = WorkflowBuilder()
        wf.add_node("begin", router, query="BEGIN")
        wf.add_node("gate", Gate(name="gate"))
        wf.add_node("solo", router, query=f"SELECT count(*) AS n FROM {table}")
        wf.add_node("end", router, query="ROLLBACK")
        # begin and gate make the first level; solo (fed by gate only, so carrying no
        # token from begin) the second: it runs while the run holds BEGIN's connection
        wf.add_connection("gate", "go", "solo", "after_gate")
        wf.add_connection("solo", "row_count", "end", "after_solo")
        results, _ = await runtime.execute_async(wf.build())
        assert results["solo"]["connection_id"] == results["begin"]["connection_id"]
        assert seen == []


async def test_replica_reads_take_the_one_shot_path_on_the_replica_pool_and_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = LocalRuntime()
    for name, env in (("db_pool", "KN_PG_DSN"), ("replica_pool", "KN_PG_REPLICA_DSN")):
        runtime.register_node(
            name,
            WorkflowConnectionPool(
                name=name, connection_string=server_dsn(env), min_connections=1,
                max_connections=3,
            ),
        )  # fmt: skip
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", read_replicas=["replica_pool"],
        reads_on_primary=True,
    )  # fmt: skip
    runtime.register_node("router", router)
    async with runtime:
        await router.process({"query": "SELECT 1"})  # started
        engine = router.engine
        assert engine is not None
        replica = engine.replicas.states[0]
        seen = one_shot_taken(router, monkeypatch).pools
        stats = replica.pool.stats
        before = (stats.acquires, stats.queries_executed, stats.hold_time.total_count)
        reads_before = replica.reads
        metrics_before = (await router.get_metrics())["router_metrics"]
        query = "SELECT pg_is_in_recovery() AS standby, $1::int AS n"
        results = [await router.process({"query": query, "parameters": [i]}) for i in range(6)]
        assert all(r["success"] for r in results), results
        # reads_on_primary: the primary takes every other turn, all on the one-shot path
        targets = [r["routing_metadata"]["target"] for r in results]
        assert sorted(set(targets)) == ["primary", "replica:replica_pool"], targets
        on_replica = [r for r in results if r["routing_metadata"]["target"] != "primary"]
        assert all(r["data"][0]["standby"] is True for r in on_replica)
        assert all(r["data"][0]["standby"] is False for r in results if r not in on_replica)
        assert seen.count(replica.pool) == len(on_replica)
        assert seen.count(engine.primary) == len(results) - len(on_replica)
        after = (stats.acquires, stats.queries_executed, stats.hold_time.total_count)
        assert [a - b for a, b in zip(after, before, strict=True)] == [len(on_replica)] * 3
        assert replica.reads - reads_before == len(on_replica)
        metrics = (await router.get_metrics())["router_metrics"]
        assert metrics["reads_to_replicas"] - metrics_before["reads_to_replicas"] == len(on_replica)
        assert all(re.fullmatch(r"replica_pool-c\d+#\d+", r["connection_id"]) for r in on_replica)
        assert replica.pool.state()["active_connections"] == 0
