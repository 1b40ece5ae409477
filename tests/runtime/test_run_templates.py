"""Run templates on every backend: LocalRuntime ends each workflow run's tracker session, so
a workflow's whole runs are learned and predict its next statement across an ad-hoc one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kailash_nodes import LocalRuntime, NodeExecutionError, WorkflowConnectionPool
from kailash_nodes.learning.tracker import RUN_TEMPLATE
from kailash_nodes.runtime import Node, WorkflowBuilder
from kailash_nodes.runtime.local import current_run_id
from kailash_nodes.sql import classify
from tests.conftest import Backend, PoolFactory

STEPS = ["SELECT 1 AS login", "SELECT 2 AS profile", "SELECT 3 AS cart", "SELECT 4 AS pay"]
ADHOC = "SELECT 5 AS something_else"


class Steps(Node):
    """Runs ``statements`` through the pool, one lease each, predicting after every one."""

    def __init__(self, pool: WorkflowConnectionPool, dialect: str) -> None:
        super().__init__(name="steps")
        self.pool, self.dialect = pool, dialect

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        tracker = self.pool.pattern_tracker
        assert tracker is not None
        predictions = []
        for query in inputs["statements"]:
            async with self.pool.connection() as conn:
                result = await self.pool.execute(conn, query)
                assert result["success"], result
            shape = classify(query, self.dialect).fingerprint
            best = tracker.predict_next(shape, session=current_run_id(), k=1)
            predictions.append((best[0].shape, best[0].order) if best else None)
        return {"predictions": predictions}


async def test_workflow_runs_become_templates_that_predict_across_an_adhoc_statement(
    make_pool: PoolFactory, backend: Backend
) -> None:
    pool = make_pool(name="db_pool", min_connections=1, max_connections=2)
    pool.enable_query_routing = True
    dialect = {"postgresql": "postgres", "mysql": "mysql", "sqlite": "sqlite"}[backend.name]
    runtime = LocalRuntime()
    runtime.register_node("db_pool", pool)
    wf = WorkflowBuilder()
    wf.add_node("steps", Steps(pool, dialect))
    workflow = wf.build()
    shape = [classify(q, dialect).fingerprint for q in STEPS]
    async with runtime:
        for _ in range(3):
            await runtime.execute_async(workflow, {"steps": {"statements": STEPS}})
        tracker = pool.pattern_tracker
        assert tracker is not None and tracker.insights()["totals"]["live_sessions"] == 0
        noisy = [STEPS[0], STEPS[1], ADHOC, STEPS[2], STEPS[3]]
        results, _ = await runtime.execute_async(workflow, {"steps": {"statements": noisy}})
    predictions = results["steps"]["predictions"]
    assert predictions[1] == (shape[2], RUN_TEMPLATE)
    # After the ad-hoc statement the template knows the run is at "cart" (the statement
    # was inserted) or past it (it replaced "cart"); with no noise seen yet, the two are
    # close. Then the run is back on track ("pay" after "cart").
    assert predictions[2] in ((shape[2], RUN_TEMPLATE), (shape[3], RUN_TEMPLATE))
    assert predictions[3] == (shape[3], RUN_TEMPLATE)


class Ends(Node):
    """Records the runs it was told ended; fails its run when ``fail`` is set."""

    def __init__(self, name: str, fail: bool = False) -> None:
        super().__init__(name=name)
        self.fail = fail
        self.ended: list[str] = []

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("boom")
        return {}

    def end_run(self, run_id: str) -> None:
        self.ended.append(run_id)


async def test_end_run_reaches_registered_and_workflow_nodes_once_even_when_the_run_fails() -> None:
    registered, both, failing = Ends("registered"), Ends("both"), Ends("failing", fail=True)
    runtime = LocalRuntime()
    runtime.register_node("registered", registered)
    runtime.register_node("both", both)
    wf = WorkflowBuilder()
    wf.add_node("both", both)
    ok = wf.build()
    _, run_id = await runtime.execute_async(ok)
    assert registered.ended == both.ended == [run_id]
    wf.add_node("failing", failing)
    with pytest.raises(NodeExecutionError, match="boom"):
        await runtime.execute_async(wf.build())
    assert len(failing.ended) == 1 and len(registered.ended) == len(both.ended) == 2
