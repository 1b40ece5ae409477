"""The pool node inside LocalRuntime: lifecycle and workflows."""

from __future__ import annotations

from kailash_nodes import LocalRuntime, WorkflowBuilder, WorkflowConnectionPool
from tests.conftest import Backend


async def test_runtime_lifecycle_opens_and_closes_registered_pools(backend: Backend) -> None:
    pool = WorkflowConnectionPool(name="db_pool", connection_string=backend.dsn, min_connections=2)
    runtime = LocalRuntime()
    runtime.register_node("db_pool", pool)
    async with runtime:
        assert runtime.get_node("db_pool") is pool
        assert pool.engine.state()["total_connections"] == 2
    assert pool.engine.closed and pool.engine.state()["total_connections"] == 0


async def test_pool_operations_run_as_workflow_nodes(backend: Backend) -> None:
    pool = WorkflowConnectionPool(name="db_pool", connection_string=backend.dsn, min_connections=1)
    runtime = LocalRuntime()
    runtime.register_node("db_pool", pool)
    wf = WorkflowBuilder()
    wf.add_node("acquire", pool, {"operation": "acquire"})
    async with runtime:
        results, run_id = await runtime.execute_async(wf.build())
        cid = results["acquire"]["connection_id"]
        res = await pool.process(
            {"operation": "execute", "connection_id": cid, "query": "SELECT 1 AS one"}
        )
        assert res["data"] == [{"one": 1}] and run_id
        await pool.process({"operation": "release", "connection_id": cid})
