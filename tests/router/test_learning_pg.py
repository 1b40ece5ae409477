"""Pattern learning on PostgreSQL: the pool records, the router prepares what comes next."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.learning.tracker import RUN_TEMPLATE
from kailash_nodes.sql import classify
from tests.conftest import server_dsn

pytestmark = pytest.mark.postgres


def _stack(
    store: Path, learning: bool, prepare_predicted: bool = True
) -> tuple[LocalRuntime, QueryRouterNode]:
    runtime = LocalRuntime()
    runtime.register_node(
        "db_pool",
        WorkflowConnectionPool(
            name="db_pool", connection_string=server_dsn("KN_PG_DSN"), min_connections=1,
            max_connections=2, enable_query_routing=True, pattern_store=str(store),
        ),
    )  # fmt: skip
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", pattern_learning=learning,
        prepare_predicted=prepare_predicted,
    )  # fmt: skip
    runtime.register_node("router", router)
    return runtime, router


def _steps(table: str) -> list[str]:
    return [
        f"SELECT id FROM {table} WHERE id = $1",
        f"SELECT v FROM {table} WHERE id = $1 AND v IS NOT NULL",
        f"SELECT count(*) AS n FROM {table} WHERE id <= $1",
    ]


async def test_learned_sequences_survive_a_restart_and_prewarm_the_next_statement(
    tmp_path: Path, table: str
) -> None:
    store = tmp_path / "patterns.json"
    steps = _steps(table)
    runtime, router = _stack(store, learning=False)
    async with runtime:
        await router.process({"query": f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"})
        for run in range(8):  # eight workflow runs of the same three steps
            for sql in steps:
                res = await router.process(
                    {"query": sql, "parameters": [run], "session_id": f"run{run}"}
                )
                assert res["success"], res
        pool = runtime.get_node("db_pool")
        assert isinstance(pool, WorkflowConnectionPool) and pool.pattern_tracker is not None
        insight = pool.pattern_tracker.insights()
        assert insight["totals"]["records"] >= 24
    assert store.exists()  # saved on close

    # a "restarted process": new pool (no prepared statements), same pattern store
    runtime, router = _stack(store, learning=True)
    async with runtime:
        # query texts are kept in memory only (they may hold literal values): the new
        # process learns each text when it first runs it anywhere
        for sql in steps:
            await router.process({"query": sql, "parameters": [0], "session_id": "warm"})
        await router.invalidate_cache()
        first = await router.process({"query": steps[0], "parameters": [1], "session_id": "new"})
        assert first["success"]
        metrics = await router.get_metrics()
        assert metrics["pattern_learning"]["prewarms"] == 0  # the caller did not wait for it
        assert router.engine is not None
        await router.engine.wait_prepared_ahead()  # prepared after the call, in the background
        metrics = await router.get_metrics()
        assert metrics["pattern_learning"]["prewarms"] == 1
        second = await router.process({"query": steps[1], "parameters": [1], "session_id": "new"})
        assert second["routing_metadata"]["cache_hit"] is True  # prepared ahead of its first use
        metrics = await router.get_metrics()
        assert metrics["pattern_learning"]["prewarms_used"] == 1
        await router.process({"query": f"DROP TABLE {table}"})


async def test_without_learning_the_first_call_prepares(tmp_path: Path, table: str) -> None:
    steps = _steps(table)
    runtime, router = _stack(tmp_path / "p.json", learning=False)
    async with runtime:
        await router.process({"query": f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"})
        await router.process({"query": steps[0], "parameters": [1], "session_id": "s"})
        second = await router.process({"query": steps[1], "parameters": [1], "session_id": "s"})
        assert second["routing_metadata"]["cache_hit"] is False
        assert (await router.get_metrics())["pattern_learning"]["prewarms"] == 0
        await router.process({"query": f"DROP TABLE {table}"})


async def test_prewarming_never_aborts_a_transaction(tmp_path: Path, table: str) -> None:
    runtime, router = _stack(tmp_path / "p.json", learning=True)
    other = f"{table}_gone"
    a, x = f"SELECT id FROM {table} WHERE id = $1", f"SELECT id FROM {other} WHERE id = $1"
    async with runtime:
        for t in (table, other):
            await router.process({"query": f"CREATE TABLE {t} (id int PRIMARY KEY)"})
        for run in range(6):  # learn A -> X
            for sql in (a, x):
                await router.process({"query": sql, "parameters": [run], "session_id": f"r{run}"})
        await router.process({"query": f"DROP TABLE {other}"})  # X can no longer be prepared
        for sql in ("BEGIN", a):
            res = await router.process({"query": sql, "parameters": [1] if sql == a else None,
                                        "session_id": "tx"})  # fmt: skip
            assert res["success"], res
        ok = await router.process({"query": "SELECT 1 AS one", "session_id": "tx"})
        assert ok["success"] and ok["data"] == [{"one": 1}]  # the transaction is intact
        assert (await router.process({"query": "COMMIT", "session_id": "tx"}))["success"]
        await router.process({"query": f"DROP TABLE {table}"})


async def test_ending_router_sessions_teaches_whole_run_templates(
    tmp_path: Path, table: str
) -> None:
    steps = _steps(table)
    runtime, router = _stack(tmp_path / "p.json", learning=True)
    async with runtime:
        await router.process({"query": f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"})
        for run in range(3):
            for sql in steps:
                await router.process({"query": sql, "parameters": [run], "session_id": f"s{run}"})
            ended = await router.process({"operation": "end_session", "session_id": f"s{run}"})
            assert ended["session_id"] == f"s{run}"
        pool = runtime.get_node("db_pool")
        assert isinstance(pool, WorkflowConnectionPool) and pool.pattern_tracker is not None
        adhoc = "SELECT 42 AS answer"
        for sql, params in ((steps[0], [1]), (adhoc, None)):
            res = await router.process({"query": sql, "parameters": params, "session_id": "live"})
            assert res["success"], res
        after = pool.pattern_tracker.predict_next(
            classify(adhoc, "postgres").fingerprint, session="live", k=1
        )[0]
        assert after.order == RUN_TEMPLATE
        assert after.shape in {classify(s, "postgres").fingerprint for s in steps[1:]}
        await router.process({"query": f"DROP TABLE {table}"})


async def _learn(router: QueryRouterNode, steps: list[str], runs: int) -> None:
    for run in range(runs):
        for sql in steps:
            res = await router.process({"query": sql, "parameters": [run], "session_id": f"r{run}"})
            assert res["success"], res


async def test_predicted_statements_are_not_prepared_by_default(tmp_path: Path, table: str) -> None:
    steps = _steps(table)
    runtime, router = _stack(tmp_path / "p.json", learning=True, prepare_predicted=False)
    async with runtime:
        await router.process({"query": f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"})
        await _learn(router, steps, 6)
        await router.invalidate_cache()
        await router.process({"query": steps[0], "parameters": [1], "session_id": "new"})
        assert router.engine is not None
        await router.engine.wait_prepared_ahead()
        second = await router.process({"query": steps[1], "parameters": [1], "session_id": "new"})
        assert second["routing_metadata"]["cache_hit"] is False
        metrics = await router.get_metrics()
        assert metrics["pattern_learning"]["enabled"] is False
        assert metrics["pattern_learning"]["prewarms"] == 0
        await router.process({"query": f"DROP TABLE {table}"})


async def test_closing_the_router_mid_prepare_cancels_it_and_returns_the_connection(
    tmp_path: Path, table: str
) -> None:
    steps = _steps(table)
    runtime, router = _stack(tmp_path / "p.json", learning=True)
    async with runtime:
        await router.process({"query": f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"})
        await _learn(router, steps, 6)
        await router.invalidate_cache()
        await router.process({"query": steps[0], "parameters": [1], "session_id": "new"})
        engine = router.engine
        assert engine is not None and len(engine._ahead) == 1  # started, not yet run
        await asyncio.sleep(0)  # it checks out a connection and starts preparing
        await router.close()
        assert len(engine._ahead) == 0
        state = engine.primary.state()
        assert state["active_connections"] == 0, state
        await engine.start()  # close() only stopped the router; the pools stay open
        await router.process({"query": f"DROP TABLE {table}"})
