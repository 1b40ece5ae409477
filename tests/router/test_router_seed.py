"""Seed 003's router snippets, verbatim but for the import and connection details."""

from __future__ import annotations

from typing import Any

import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from tests.conftest import Backend
from tests.nodes.test_seed_snippets import _connection, _make_users


async def test_after_phase_2_and_monitoring_snippets_run(backend: Backend, capsys: Any) -> None:
    connection = _connection(backend)
    await _make_users(backend, connection)
    runtime = LocalRuntime()
    # --- seed 003, "After (With Phase 2 Features)" ---
    pool = WorkflowConnectionPool(
        name="db_pool",
        **connection,
        min_connections=5,
        max_connections=20,
        adaptive_sizing=True,          # NEW: Dynamic pool sizing
        enable_query_routing=True      # NEW: Pattern tracking
    )  # fmt: skip
    router = QueryRouterNode(
        name="query_router",
        connection_pool="db_pool",
        enable_read_write_split=True,  # NEW: Route reads to any connection
        cache_size=1000,               # NEW: Cache prepared statements
        pattern_learning=True          # NEW: Learn from patterns
    )  # fmt: skip
    runtime.register_node("db_pool", pool)
    runtime.register_node("router", router)
    result = await router.process({
        "query": "SELECT * FROM users WHERE active = ?",
        "parameters": [True]
    })  # fmt: skip
    # --- end ---
    assert result["success"] and [r["name"] for r in result["data"]] == ["ann"]
    assert result["routing_metadata"]["query_type"] == "read_simple"
    for _ in range(20):
        await router.process({"query": "SELECT * FROM users WHERE id = ?", "parameters": [2]})
    # --- seed 003, "Monitoring Migration Success" ---
    stats = await pool.process({"operation": "stats"})
    print(f"Utilization: {stats['current_state']['active_connections'] / stats['current_state']['total_connections']}")  # noqa: E501  # fmt: skip
    metrics = await router.get_metrics()
    print(f"Cache hit rate: {metrics['cache_stats']['hit_rate']:.2%}")
    print(f"Avg routing time: {metrics['router_metrics']['avg_routing_time_ms']}ms")
    if pool.adaptive_controller:
        history = pool.adaptive_controller.get_adjustment_history()
        for adj in history[-5:]:
            print(f"{adj['timestamp']}: {adj['from_size']} → {adj['to_size']}")
    # --- end ---
    out = capsys.readouterr().out
    assert "Cache hit rate" in out and metrics["router_metrics"]["queries_routed"] == 21
    if backend.name == "postgresql":
        assert metrics["cache_stats"]["hit_rate"] >= 0.9
    # --- seed 003, "Rollback Plan" ---
    pool.adaptive_sizing_enabled = False
    if pool.adaptive_controller:
        await pool.adaptive_controller.stop()
    pool.enable_query_routing = False
    router.pattern_learning = False
    router.enable_read_write_split = False
    # --- end ---
    res = await router.process({"query": "SELECT count(*) AS n FROM users", "parameters": []})
    assert res["data"] == [{"n": 2}]
    await router.close()
    await pool.close()


async def test_add_query_router_snippet_runs(backend: Backend) -> None:
    connection = _connection(backend)
    await _make_users(backend, connection)
    pool = WorkflowConnectionPool(name="db_pool", **connection)
    router = QueryRouterNode(name="router", connection_pool="db_pool")
    runtime = LocalRuntime()
    query, params = "SELECT name FROM users WHERE id = 1", []
    # --- seed 003, "Add Query Router" ---
    runtime.register_node("db_pool", pool)
    runtime.register_node("router", router)

    # Old way
    conn = await pool.acquire()
    result = await pool.execute(conn, query)
    await pool.release(conn)

    # New way - router handles everything
    result = await router.process({
        "query": query,
        "parameters": params
    })  # fmt: skip
    # --- end ---
    assert result["data"] == [{"name": "ann"}]
    await router.close()
    await pool.close()


async def test_router_takes_params_or_parameters_but_not_both(backend: Backend) -> None:
    from kailash_nodes import ParameterError

    connection = _connection(backend)
    await _make_users(backend, connection)
    pool = WorkflowConnectionPool(name="db_pool", **connection, min_connections=1)
    router = QueryRouterNode(name="router", connection_pool="db_pool")
    router.set_connection_pool(pool)
    q = "SELECT name FROM users WHERE id = ?"
    assert (await router.process({"query": q, "params": [1]}))["data"] == [{"name": "ann"}]
    assert (await router.process({"query": q, "parameters": [2]}))["data"] == [{"name": "bob"}]
    with pytest.raises(ParameterError, match="not both"):
        await router.process({"query": q, "params": [1], "parameters": [2]})
    with pytest.raises(ParameterError, match="'query' as a string"):
        await router.process({"parameters": [1]})
    await router.close()
    await pool.close()


@pytest.mark.parametrize("router_first", [True, False])
async def test_learning_toggles_work_in_either_order(tmp_path: Any, router_first: bool) -> None:
    """Seed 003 turns pattern_learning (router) and enable_query_routing (pool) on and off
    separately: whichever is set first, the router predicts exactly when both are on, and
    a replica pool records exactly when the primary pool does."""
    connection = {"database_type": "sqlite", "database": str(tmp_path / "t.db")}
    pool = WorkflowConnectionPool(name="db_pool", **connection)
    replica = WorkflowConnectionPool(name="replica", **connection)
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", read_replicas=["replica"],
        pattern_learning=False, prepare_predicted=True,
    )  # fmt: skip
    runtime = LocalRuntime()
    for name, node in (("db_pool", pool), ("replica", replica), ("router", router)):
        runtime.register_node(name, node)
    try:
        await router.process({"query": "SELECT 1 AS x", "parameters": []})
        engine = router.engine
        assert engine is not None and engine.predictor is None
        assert replica.engine.observer is None
        if router_first:
            router.pattern_learning = True
            assert engine.predictor is None  # the pool records nothing yet
            pool.enable_query_routing = True
        else:
            pool.enable_query_routing = True
            assert engine.predictor is None  # the router does not predict yet
            assert replica.engine.observer is not None  # but replica reads are recorded
            router.pattern_learning = True
        assert engine.predictor is not None
        assert replica.engine.observer is pool.engine.observer is not None
        pool.enable_query_routing = False
        assert engine.predictor is None and replica.engine.observer is None
    finally:
        await router.close()
        await pool.close()
        await replica.close()
