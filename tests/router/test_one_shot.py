"""The router's one-shot path (a plain statement outside sessions and workflow runs goes
to the pool's `run_once`): real PostgreSQL. It must count, fail, cancel and give back
exactly like the acquire/execute/release path it stands in for."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import ParameterError, PoolTimeout
from kailash_nodes.pool import ConnectionPool
from tests.conftest import server_dsn

pytestmark = pytest.mark.postgres


@asynccontextmanager
async def routed(**pool_options: Any) -> AsyncIterator[tuple[QueryRouterNode, ConnectionPool]]:
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
        yield router, pool.engine


def one_shot_taken(router: QueryRouterNode, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every statement the router sends through the pool's one-shot path."""
    import kailash_nodes.router.engine as engine_module

    seen: list[str] = []
    real = engine_module.run_once

    async def spy(pool: ConnectionPool, query: str, *rest: Any) -> Any:
        seen.append(query)
        return await real(pool, query, *rest)

    monkeypatch.setattr(engine_module, "run_once", spy)
    return seen


async def test_plain_statements_take_the_one_shot_path_and_are_counted_like_leases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed() as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
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
    async with routed() as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
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
    async with routed() as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
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
        admin = await asyncpg.connect(server_dsn("KN_PG_DSN"))
        try:
            for _ in range(50):  # the server ends the closed connection's backend soon
                alive = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
                )
                if not alive:
                    break
                await asyncio.sleep(0.1)
            assert alive == 0
        finally:
            await admin.close()


async def test_an_idle_connection_killed_behind_the_pools_back_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(check_idle_after=0.05) as (router, pool):
        one_shot_taken(router, monkeypatch)
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
    async with routed(max_connections=1) as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
        pid = (await router.process({"query": "SELECT pg_backend_pid() AS pid"}))["data"][0]["pid"]
        with pytest.raises(ParameterError):
            await router.process({"query": "SELECT $1::int + 1 AS n", "parameters": ["x"]})
        assert len(seen) == 2
        again = await router.process({"query": "SELECT pg_backend_pid() AS pid"})
        assert again["data"][0]["pid"] == pid  # not replaced: nothing was sent
        assert pool.state()["active_connections"] == 0


async def test_with_nothing_idle_it_waits_in_the_queue_and_can_time_out_or_be_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(max_connections=1, timeout=0.5) as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
        held = await pool.acquire()
        waiting = asyncio.ensure_future(router.process({"query": "SELECT 4 AS n"}))
        await asyncio.sleep(0.1)
        assert pool.state()["waiting_requests"] == 1
        await pool.release(held)  # handed to the waiter
        assert (await waiting)["data"] == [{"n": 4}]
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


async def test_the_pools_max_rows_holds_on_the_one_shot_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(max_rows=3) as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
        big = await router.process({"query": "SELECT g FROM generate_series(1, 10) g"})
        assert seen
        assert big["success"] is False and big["error_type"] == "ResultTooLarge"
        small = await router.process({"query": "SELECT g FROM generate_series(1, 3) g"})
        assert small["row_count"] == 3
        assert pool.state()["active_connections"] == 0


async def test_a_pool_with_learning_on_runs_it_through_a_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with routed(enable_query_routing=True) as (router, pool):
        seen = one_shot_taken(router, monkeypatch)
        assert pool.observer is not None
        r = await router.process({"query": "SELECT 3 AS n"})
        assert r["data"] == [{"n": 3}] and seen  # the same entry point, the lease inside
        assert re.fullmatch(r"db_pool-c\d+#\d+", r["connection_id"])
        assert pool.state()["active_connections"] == 0
