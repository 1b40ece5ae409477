"""The pool node's pre-warm hook on every backend: a connection idle before the acquire."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kailash_nodes import LocalRuntime, WorkflowConnectionPool
from kailash_nodes.runtime import Node, WorkflowBuilder
from tests.conftest import PoolFactory


async def test_pool_prewarm_opens_a_connection_only_when_none_is_idle(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(min_connections=1, max_connections=2)
    assert await pool.prewarm({"operation": "acquire"}) == 0  # not open yet: left alone
    assert not pool.engine.opened
    await pool.initialize()
    assert await pool.prewarm({"operation": "acquire"}) == 0  # one is idle already
    first = await pool.acquire()
    assert await pool.prewarm({"operation": "stats"}) == 0  # needs no connection
    execute = {"operation": "execute", "connection_id": "x", "query": "SELECT 1"}
    assert await pool.prewarm(execute) == 0  # runs on the leased connection: nothing to warm
    assert await pool.prewarm({"operation": "acquire"}) == 1
    state = pool.engine.state()
    assert (state["total_connections"], state["idle_connections"]) == (2, 1)
    second = await pool.acquire()
    assert pool.get_stats()["current_state"]["waiting_requests"] == 0
    assert await pool.prewarm({"operation": "acquire"}) == 0  # at max_connections: no wait
    assert pool.prewarm_counts == {"connections_opened": 1, "errors": 0}
    await pool.release(first)
    await pool.release(second)
    assert pool.engine.state()["active_connections"] == 0


class Hold(Node):
    """Holds one connection of ``pool`` for the whole level, so nothing is idle meanwhile."""

    def __init__(self, pool: WorkflowConnectionPool) -> None:
        super().__init__(name="hold")
        self.pool = pool

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        async with self.pool.connection():
            await asyncio.sleep(0.2)
        return {"held": True}


async def test_runtime_prewarm_opens_the_connection_a_later_acquire_gets(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(name="db_pool", min_connections=1, max_connections=3)
    runtime = LocalRuntime(prewarm=True, prewarm_timeout=5.0)
    runtime.register_node("db_pool", pool)
    wf = WorkflowBuilder()
    wf.add_node("hold", Hold(pool))
    wf.add_node("acq", pool, operation="acquire")
    wf.add_connection("hold", "held", "acq", "after")
    async with runtime:
        results, _ = await runtime.execute_async(wf.build())
        assert pool.prewarm_counts["connections_opened"] == 1
        assert runtime.get_prewarm_stats()["warmed"] == 1
        assert pool.engine.stats.connections_created == 2  # the acquire opened nothing more
        await pool.release(results["acq"]["connection_id"])
