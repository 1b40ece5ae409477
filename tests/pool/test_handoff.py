"""Who gets a released connection while the pool grows: the next acquire, or a waiter.

While every waiter has a connection opening for it, a released connection stays idle for
the next acquire (the callers already holding connections keep going without queueing);
a waiter whose connection is late (over twice the recent connect time), any waiter at the
growth limit, and every waiter under ``strict_fifo=True`` gets it instead. The first tests
gate a fake driver's connect so each case is exact; the last run on every real backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kailash_nodes.config import PoolConfig
from kailash_nodes.errors import ConnectionFailed
from kailash_nodes.pool import ConnectionPool
from tests.conftest import Backend, PoolFactory


class GateConn:
    """A connection that runs nothing (the hand-off never runs a statement)."""

    server_prepare = False

    def in_transaction(self) -> bool:
        return False

    def is_closed(self) -> bool:
        return False

    def has_statement(self, text: str) -> bool:
        return False

    def session_changed(self) -> bool:
        return False

    async def close(self, timeout: float) -> None:
        return None

    def terminate(self) -> None:
        return None


class GateDriver:
    """Connects after ``delay`` seconds; once ``hold()`` is called, connects wait for
    ``release()`` (or fail, with ``release(fail=True)``)."""

    name = "postgresql"
    placeholder_style = "numeric"
    dialect = "postgres"
    can_prepare = False
    undoes_timed_out = False
    routines_change_session = False
    tracks_positions = False

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.fail = False

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self, *, fail: bool = False) -> None:
        self.fail = fail
        assert self.gate is not None
        self.gate.set()

    async def drain(self, timeout: float) -> None:
        return None

    async def connect(self, params: Any, cache_size: int) -> GateConn:
        await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
            if self.fail:
                raise ConnectionFailed("the fake server refused")
        return GateConn()


async def gated_pool(**options: Any) -> tuple[ConnectionPool, GateDriver]:
    cfg = PoolConfig.from_options(
        {"database_type": "postgresql", "host": "fake", "min_connections": 1, **options}
    )
    driver = GateDriver()
    pool = ConnectionPool(cfg, driver)  # type: ignore[arg-type]
    await pool.open()  # measures the connect time: ~20 ms
    driver.hold()
    return pool, driver


async def test_released_connection_stays_idle_while_the_waiters_connection_opens() -> None:
    pool, driver = await gated_pool(max_connections=2)
    held = await pool.acquire()
    first = held.entry
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)  # the waiter queues; a connection opens for it
    assert pool.state()["waiting_requests"] == 1 and pool.state()["opening_connections"] == 1
    await pool.release(held)
    assert pool.stats.handoffs_deferred == 1
    assert not waiter.done() and pool.state()["idle_connections"] == 1
    again = await pool.acquire()  # the next caller takes it without waiting
    assert again.entry is first and again.wait < 0.01
    driver.release()
    served = await asyncio.wait_for(waiter, 1)  # the waiter gets the new connection
    assert served.entry is not again.entry
    for pc in (again, served):
        await pool.release(pc)
    assert pool.state()["total_connections"] == 2
    await pool.close()


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("late: waited over twice the connect time", {"max_connections": 2}),
        ("strict_fifo=True", {"max_connections": 2, "strict_fifo": True}),
        ("at the growth limit: nothing opening", {"max_connections": 1}),
    ],
)
async def test_the_oldest_waiter_gets_the_release(case: str, options: dict[str, Any]) -> None:
    pool, driver = await gated_pool(**options)
    assert pool.connect_time is not None
    held = await pool.acquire()
    first = held.entry
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(2.5 * pool.connect_time if case.startswith("late") else 0)
    assert pool.state()["opening_connections"] == (0 if "limit" in case else 1)
    await pool.release(held)
    served = await asyncio.wait_for(waiter, 1)
    assert served.entry is first and pool.stats.handoffs_deferred == 0
    await pool.release(served)
    driver.release()
    await pool.close()


async def test_a_failed_open_hands_the_kept_connection_to_its_waiter() -> None:
    pool, driver = await gated_pool(max_connections=2)
    held = await pool.acquire()
    first = held.entry
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.release(held)  # kept idle for the next caller ...
    assert pool.stats.handoffs_deferred == 1 and not waiter.done()
    driver.release(fail=True)  # ... but the waiter's connection never comes
    served = await asyncio.wait_for(waiter, 1)
    assert served.entry is first
    assert pool.stats.connections_failed == 1
    await pool.release(served)
    await pool.close()


async def test_a_kept_connection_goes_to_its_waiter_once_the_waiters_connect_is_late() -> None:
    pool, driver = await gated_pool(max_connections=2)
    assert pool.connect_time is not None
    held = await pool.acquire()
    first = held.entry
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.release(held)  # kept idle, but nobody else comes for it ...
    assert pool.stats.handoffs_deferred == 1 and not waiter.done()
    served = await asyncio.wait_for(waiter, 1)  # ... and the waiter's connect hangs
    assert served.entry is first
    assert served.wait >= 2 * pool.connect_time * 0.9  # handed over once it was late
    await pool.release(served)
    driver.release()
    await pool.close()


# --- Real servers ---------------------------------------------------------------------------


async def test_a_burst_on_a_growing_pool_serves_everyone_and_leaks_nothing(
    make_pool: PoolFactory, backend: Backend
) -> None:
    callers, rounds = 8, 6
    pool = make_pool(min_connections=1, max_connections=callers, timeout=10)
    await pool.initialize()
    done: list[int] = []

    async def caller(i: int) -> None:
        for _ in range(rounds):
            conn = await pool.acquire()
            res = await pool.execute(conn, "SELECT ? AS v", [str(i)])
            assert res["data"] == [{"v": str(i)}]
            await pool.release(conn)
        done.append(i)

    await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(callers))), 30)
    assert sorted(done) == list(range(callers))
    stats = await pool.process({"operation": "stats"})
    state = stats["current_state"]
    assert state["active_connections"] == 0 and state["waiting_requests"] == 0
    assert stats["requests"]["acquired"] == callers * rounds
    assert 1 < state["total_connections"] <= callers
    deferred = stats["requests"]["handoffs_deferred"]
    assert deferred == pool.engine.stats.handoffs_deferred >= 0


async def test_release_during_growth_serves_the_next_caller_at_once(
    make_pool: PoolFactory, backend: Backend
) -> None:
    pool = make_pool(min_connections=1, max_connections=2, timeout=10)
    await pool.initialize()
    held = await pool.acquire()
    first = held.entry
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)  # queued; its connection is opening on the real server
    if pool.engine.state()["opening_connections"] != 1:
        pytest.fail(f"expected one connection opening: {pool.engine.describe_state()}")
    await pool.release(held)
    assert pool.engine.stats.handoffs_deferred == 1
    again = await pool.acquire()
    assert again.entry is first
    res = await pool.execute(again, "SELECT 1 AS one")
    assert res["data"] == [{"one": 1}]
    served = await asyncio.wait_for(waiter, 10)
    assert served.entry is not again.entry
    for conn in (again, served):
        await pool.release(conn)
    assert pool.engine.state()["total_connections"] == 2
