"""The adaptive controller on real databases: spikes, quiet periods, the live cap."""

from __future__ import annotations

import asyncio

import pytest

from kailash_nodes.sizing import AdaptivePoolController, PolicySettings, SizingPolicy
from tests.conftest import Backend, PoolFactory


async def _spike(pool: object, callers: int, seconds: float, hold: float) -> None:
    from kailash_nodes import WorkflowConnectionPool

    assert isinstance(pool, WorkflowConnectionPool)
    end = asyncio.get_running_loop().time() + seconds

    async def caller() -> None:
        while asyncio.get_running_loop().time() < end:
            async with pool.connection() as conn:
                await pool.execute(conn, "SELECT 1 AS one")
                await asyncio.sleep(hold)  # work while holding the connection

    await asyncio.gather(*(caller() for _ in range(callers)))


async def test_spike_grows_the_pool_within_a_second_and_quiet_shrinks_it(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(min_connections=1, max_connections=12, adaptive_sizing=True)
    await pool.initialize()
    ctl = pool.adaptive_controller
    assert ctl is not None and ctl.running
    ctl.policy = SizingPolicy(PolicySettings(1, 12, shrink_delay=0.5, cooldown=0.1))
    await _spike(pool, callers=24, seconds=1.0, hold=0.02)
    history = ctl.get_adjustment_history()
    grows = [h for h in history if h["to_size"] > h["from_size"]]
    assert grows, history
    assert set(grows[0]) >= {"timestamp", "from_size", "to_size", "reason", "arrival_rate"}
    assert grows[0]["arrival_rate"] > 0 and grows[0]["samples"] > 0
    peak = pool.engine.floor
    assert peak > 1
    for _ in range(80):  # quiet: it shrinks after shrink_delay, one step per cooldown
        await asyncio.sleep(0.1)
        if pool.engine.floor < peak:
            break
    assert pool.engine.floor < peak
    assert any(h["to_size"] < h["from_size"] for h in ctl.get_adjustment_history())
    assert pool.engine.state()["total_connections"] <= pool.pool_config.max_connections


async def test_rollback_toggles_stop_adjustments(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=8, adaptive_sizing=True)
    await pool.initialize()
    ctl = pool.adaptive_controller
    assert ctl is not None
    pool.adaptive_sizing_enabled = False
    await _spike(pool, callers=16, seconds=0.6, hold=0.02)
    assert ctl.get_adjustment_history() == []
    await ctl.stop()
    assert not ctl.running and not pool.adaptive_sizing_enabled


async def test_cap_comes_from_the_servers_live_limit(
    make_pool: PoolFactory, backend: Backend
) -> None:
    pool = make_pool(min_connections=1, max_connections=500, adaptive_sizing=True)
    await pool.initialize()
    ctl = pool.adaptive_controller
    assert ctl is not None
    cap = await ctl.refresh_cap()
    src = ctl.cap_source
    if backend.name == "sqlite":
        assert cap == 16
        return
    assert src["source"] == backend.name and src["max_connections"] == 200  # scripts/db-up
    assert cap == int(0.8 * (200 - src["reserved"])) - src["others"]
    assert cap < 500 and pool.engine.limit == 500  # applied on the next tick
    await ctl.tick()
    assert pool.engine.limit == cap


@pytest.mark.parametrize(  # SQLite's cap is a constant: reading it takes no connection
    "backend",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
    indirect=True,
)
async def test_cap_read_waits_for_an_idle_connection(
    make_pool: PoolFactory, backend: Backend
) -> None:
    pool = make_pool(min_connections=2, max_connections=2)
    await pool.initialize()
    ctl = AdaptivePoolController(pool.engine, cap_refresh=0.05)
    stats = pool.engine.stats
    await ctl.refresh_cap()  # what start() does
    assert ctl.cap_source["source"] == backend.name
    a, b = await pool.acquire(), await pool.acquire()
    await asyncio.sleep(0.06)  # due, but every connection is busy: not read
    before = stats.acquires
    await asyncio.wait_for(ctl.tick(), 1)  # a read now would wait for a connection
    assert stats.acquires == before
    await pool.release(a)  # one idle: read now, on that connection
    await ctl.tick()
    assert stats.acquires == before + 1
    a = await pool.acquire()
    await asyncio.sleep(4 * 0.05 + 0.01)  # busy for the whole defer limit: read anyway,
    loop = asyncio.get_running_loop()  # waiting for a connection like any caller
    loop.call_later(0.05, lambda: loop.create_task(pool.release(b)))
    await asyncio.wait_for(ctl.tick(), 5)
    assert stats.acquires == before + 3
    await pool.release(a)


@pytest.mark.sqlite
def test_controller_is_absent_without_adaptive_sizing() -> None:
    from kailash_nodes import WorkflowConnectionPool

    pool = WorkflowConnectionPool(database_type="sqlite", min_connections=1)
    assert pool.adaptive_controller is None and not pool.adaptive_sizing_enabled


async def test_the_sizing_job_starts_once_ticks_and_stops(
    make_pool: PoolFactory, backend: Backend
) -> None:
    pool = make_pool(min_connections=1, max_connections=4)
    await pool.initialize()
    ctl = AdaptivePoolController(pool.engine, interval=0.01)
    assert not ctl.running
    await ctl.start()
    await ctl.start()  # idempotent
    assert ctl.running and ctl.cap_source["source"] == backend.name
    async with asyncio.timeout(5):
        while ctl.ticks < 3:  # noqa: ASYNC110  # polls what a background job changes
            await asyncio.sleep(0.005)
    await ctl.stop()
    assert not ctl.running and not ctl.enabled
    ticks = ctl.ticks
    await asyncio.sleep(0.05)
    assert ctl.ticks == ticks
