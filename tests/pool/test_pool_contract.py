"""The same pool behaviours on every backend: SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kailash_nodes import WorkflowConnectionPool
from kailash_nodes.errors import (
    ConnectionReleased,
    ParameterError,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
    UnknownConnection,
    UnknownOperation,
)
from tests.conftest import Backend, PoolFactory


async def run(pool: WorkflowConnectionPool, query: str, params: Any = None, **kw: Any) -> Any:
    """Acquire, execute, release through process(); return the execute result."""
    conn = await pool.process({"operation": "acquire"})
    try:
        return await pool.process(
            {
                "operation": "execute",
                "connection_id": conn["connection_id"],
                "query": query,
                "params": params,
                **kw,
            }
        )
    finally:
        await pool.process({"operation": "release", "connection_id": conn["connection_id"]})


async def make_items(pool: WorkflowConnectionPool, table: str, rows: int = 5) -> None:
    """Create ``table`` with ``rows`` rows: (id, name, active = id is even)."""
    res = await run(
        pool,
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL, "
        "active BOOLEAN NOT NULL)",
    )
    assert res["success"], res
    for i in range(1, rows + 1):
        res = await run(pool, f"INSERT INTO {table} VALUES (?, ?, ?)", [i, f"n{i}", i % 2 == 0])
        assert res["success"] and res["row_count"] == 1, res


async def test_acquire_execute_release_returns_rows_as_dicts(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=3)
    await make_items(pool, table)
    conn = await pool.process({"operation": "acquire"})
    assert set(conn) >= {"connection_id", "health_score", "acquisition_time_ms"}
    assert conn["health_score"] == 100
    res = await pool.process(
        {
            "operation": "execute",
            "connection_id": conn["connection_id"],
            "query": f"SELECT id, name FROM {table} WHERE id = ?",
            "params": [2],
        }
    )
    assert res["success"] is True
    assert res["data"] == [{"id": 2, "name": "n2"}]
    assert res["row_count"] == 1
    assert res["error"] is None and res["connection_id"] == conn["connection_id"]
    assert res["execution_time_ms"] > 0
    rel = await pool.process({"operation": "release", "connection_id": conn["connection_id"]})
    assert rel == {"status": "released", "connection_id": conn["connection_id"]}


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT name FROM {t} WHERE id = ? AND active = ?", [2, True]),
        ("SELECT name FROM {t} WHERE id = $1 AND active = $2", [2, True]),
        ("SELECT name FROM {t} WHERE id = %s AND active = %s", [2, True]),
        ("SELECT name FROM {t} WHERE id = :id AND active = :on", {"id": 2, "on": True}),
        ("SELECT name FROM {t} WHERE id = $2 AND active = $1", [True, 2]),
        ("SELECT name FROM {t} WHERE name <> '?' AND name <> ':x' AND id = ?", [2]),
    ],
)
async def test_every_placeholder_style_works_on_every_backend(
    make_pool: PoolFactory, table: str, query: str, params: Any
) -> None:
    pool = make_pool(min_connections=1)
    await make_items(pool, table)
    res = await run(pool, query.format(t=table), params)
    assert res["success"], res
    assert res["data"] == [{"name": "n2"}]


async def test_row_count_is_rows_affected_for_writes(make_pool: PoolFactory, table: str) -> None:
    pool = make_pool(min_connections=1)
    await make_items(pool, table, rows=6)
    res = await run(pool, f"UPDATE {table} SET name = 'x' WHERE id > ?", [2])
    assert res["success"] and res["row_count"] == 4 and res["data"] == []
    res = await run(pool, f"DELETE FROM {table} WHERE id = ?", [1])
    assert res["row_count"] == 1
    res = await run(pool, f"INSERT INTO {table} VALUES (10, 'a', true), (11, 'b', false)")
    assert res["row_count"] == 2


async def test_fetch_modes_one_and_many(make_pool: PoolFactory, table: str) -> None:
    pool = make_pool(min_connections=1)
    await make_items(pool, table)
    one = await run(pool, f"SELECT id FROM {table} ORDER BY id", fetch_mode="one")
    assert one["data"] == {"id": 1} and one["row_count"] == 1
    none = await run(pool, f"SELECT id FROM {table} WHERE id < 0", fetch_mode="one")
    assert none["data"] is None and none["row_count"] == 0
    many = await run(pool, f"SELECT id FROM {table} ORDER BY id", fetch_mode="many", fetch_size=2)
    assert many["data"] == [{"id": 1}, {"id": 2}]
    with pytest.raises(ParameterError, match="fetch_mode"):
        await run(pool, f"SELECT id FROM {table}", fetch_mode="some")


async def test_sql_error_is_a_result_and_the_pool_keeps_working(
    make_pool: PoolFactory, backend: Backend, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    await make_items(pool, table)
    bad = await run(pool, "SELEC oops")
    assert bad["success"] is False and bad["error"] and bad["error_type"]
    dup = await run(pool, f"INSERT INTO {table} VALUES (1, 'dup', true)")
    assert dup["success"] is False
    if backend.name == "postgresql":
        assert bad["sqlstate"] == "42601" and dup["sqlstate"] == "23505"
    ok = await run(pool, f"SELECT count(*) AS n FROM {table}")
    assert ok["success"] and ok["data"] == [{"n": 5}]
    stats = await pool.process({"operation": "stats"})
    assert stats["queries"]["errors"] == 2


async def test_open_transaction_is_rolled_back_on_release(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    await make_items(pool, table)
    conn = await pool.acquire()
    assert (await pool.execute(conn, "BEGIN"))["success"]
    await pool.execute(conn, f"INSERT INTO {table} VALUES (99, 'tx', true)")
    assert conn.entry.conn.in_transaction()
    assert (await pool.release(conn))["status"] == "released"
    conn = await pool.acquire()
    assert not conn.entry.conn.in_transaction()
    res = await pool.execute(conn, f"SELECT id FROM {table} WHERE id = 99")
    assert res["data"] == []
    await pool.release(conn)
    assert pool.engine.stats.rollbacks == 1


async def test_clean_release_costs_no_cleanup_round_trip(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    await make_items(pool, table)
    for _ in range(20):
        await run(pool, f"SELECT name FROM {table} WHERE id = ?", [1])
    s = pool.engine.stats
    assert (s.rollbacks, s.resets) == (0, 0)


async def test_temp_table_never_leaks_to_the_next_caller(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    res = await run(pool, f"CREATE TEMPORARY TABLE {table} (x INTEGER)")
    assert res["success"], res
    res = await run(pool, f"SELECT * FROM {table}")
    assert res["success"] is False  # the next caller does not see it


async def test_session_settings_never_leak(make_pool: PoolFactory, backend: Backend) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    set_q, read_q, default = {
        "postgresql": (
            "SET statement_timeout = 4321",
            "SHOW statement_timeout",
            [{"statement_timeout": "0"}],
        ),
        "mysql": ("SET @kn_marker = 42", "SELECT @kn_marker AS m", [{"m": None}]),
        "sqlite": ("PRAGMA cache_size = 77", "PRAGMA cache_size", None),
    }[backend.name]
    assert (await run(pool, set_q))["success"]
    res = await run(pool, read_q)
    if default is None:
        assert res["data"] != [{"cache_size": 77}]
    else:
        assert res["data"] == default


async def test_bad_input_raises_typed_errors_and_the_pool_keeps_working(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=2)
    await make_items(pool, table)
    with pytest.raises(UnknownOperation, match="frobnicate"):
        await pool.process({"operation": "frobnicate"})
    with pytest.raises(UnknownConnection, match="connection_id required"):
        await pool.process({"operation": "execute", "query": "SELECT 1"})
    with pytest.raises(UnknownConnection, match="not checked out"):
        await pool.process({"operation": "execute", "connection_id": "nope", "query": "SELECT 1"})
    conn = await pool.process({"operation": "acquire"})
    cid = conn["connection_id"]
    q = f"SELECT name FROM {table} WHERE id = ?"
    with pytest.raises(ParameterError, match="expects 1 parameter"):
        await pool.process(
            {"operation": "execute", "connection_id": cid, "query": q, "params": [1, 2]}
        )
    with pytest.raises(ParameterError):
        await pool.process(
            {"operation": "execute", "connection_id": cid, "query": q, "params": [object()]}
        )
    with pytest.raises(ParameterError, match="query"):
        await pool.process({"operation": "execute", "connection_id": cid})
    ok = await pool.process(
        {"operation": "execute", "connection_id": cid, "query": q, "params": [3]}
    )
    assert ok["data"] == [{"name": "n3"}]
    await pool.process({"operation": "release", "connection_id": cid})
    with pytest.raises(UnknownConnection, match="already released"):
        await pool.process({"operation": "release", "connection_id": cid})
    res = await run(pool, q, [4])
    assert res["data"] == [{"name": "n4"}]


async def test_stale_handle_cannot_run_queries(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1)
    conn = await pool.acquire()
    await pool.release(conn)
    with pytest.raises(ConnectionReleased):
        await pool.engine.execute(conn, "SELECT 1")
    with pytest.raises(UnknownConnection):
        await pool.execute(conn, "SELECT 1")


async def test_acquire_times_out_with_pool_state_in_message(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=1, timeout=0.2)
    held = await pool.acquire()
    with pytest.raises(PoolTimeout, match=r"total=1, active=1, idle=0, waiting=0"):
        await pool.acquire()
    await pool.release(held)
    again = await pool.acquire()
    await pool.release(again)
    assert pool.engine.state()["active_connections"] == 0


async def test_each_waiter_times_out_at_its_own_deadline(make_pool: PoolFactory) -> None:
    # One timer serves every waiter: a short timeout queued behind a long one still
    # expires first, the long one keeps waiting and is served, and a timeout counts once.
    pool = make_pool(min_connections=1, max_connections=1, timeout=30)
    held = await pool.acquire()
    patient = asyncio.create_task(pool.acquire())
    hasty = asyncio.create_task(pool.acquire(timeout=0.05))
    later = asyncio.create_task(pool.acquire(timeout=0.2))
    with pytest.raises(PoolTimeout, match=r"within 0.05s"):
        await hasty
    assert not patient.done() and not later.done()
    with pytest.raises(PoolTimeout, match=r"within 0.2s"):
        await later
    assert not patient.done()
    await pool.release(held)
    served = await asyncio.wait_for(patient, 5)
    await pool.release(served)
    stats = pool.engine.state()
    assert (stats["active_connections"], pool.engine.stats.timeouts) == (0, 2)


async def test_full_waiting_queue_rejects_at_once(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=1, max_waiting=2, timeout=5)
    held = await pool.acquire()
    waiters = [asyncio.create_task(pool.acquire()) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(TooManyRequests, match="max_waiting=2"):
        await pool.acquire()
    await pool.release(held)
    for w in waiters:
        await pool.release(await w)


async def test_pool_grows_at_once_when_nothing_is_idle(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=4, timeout=5)
    await pool.initialize()
    conns = await asyncio.gather(*(pool.acquire() for _ in range(4)))
    assert len({c.entry.name for c in conns}) == 4
    for c in conns:
        await pool.release(c)
    assert pool.engine.state()["total_connections"] == 4


async def test_released_connection_goes_to_the_oldest_waiter(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=1, timeout=5)
    held = await pool.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        c = await pool.acquire()
        order.append(i)
        await asyncio.sleep(0)
        await pool.release(c)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0.005)
    await pool.release(held)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_cancelled_waiter_leaks_nothing(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=1, timeout=5)
    held = await pool.acquire()
    task = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    await pool.release(held)  # handed to the waiter ...
    task.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    state = pool.engine.state()
    assert state["active_connections"] == 0 and state["idle_connections"] == 1
    conn = await pool.acquire(timeout=1)
    await pool.release(conn)


async def test_cancelled_query_leaks_no_connection_or_transaction(
    make_pool: PoolFactory, backend: Backend, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=2, timeout=5)
    await make_items(pool, table)
    slow = {
        "postgresql": "SELECT pg_sleep(5)",
        "mysql": "SELECT SLEEP(5)",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 30000000) SELECT count(*) FROM c",
    }[backend.name]

    async def worker() -> None:
        async with pool.connection() as conn:
            await pool.execute(conn, "BEGIN")
            await pool.execute(conn, f"INSERT INTO {table} VALUES (77, 'c', true)")
            await pool.execute(conn, slow)

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.engine.state()["active_connections"] == 0
    res = await run(pool, f"SELECT id FROM {table} WHERE id = 77")
    assert res["success"] and res["data"] == []


async def test_connection_context_manager_releases_on_error(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1)
    with pytest.raises(RuntimeError):
        async with pool.connection() as conn:
            await pool.execute(conn, "SELECT 1")
            raise RuntimeError("boom")
    assert pool.engine.state()["active_connections"] == 0


async def test_failing_queries_lower_health_until_the_connection_is_recycled(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(min_connections=1, max_connections=1, health_threshold=70)
    conn = await pool.acquire()
    for _ in range(4):
        assert not (await pool.execute(conn, "SELEC broken"))["success"]
    assert conn.health_score < 70
    assert (await pool.release(conn))["status"] == "recycled"
    res = await run(pool, "SELECT 1 AS one")
    assert res["data"] == [{"one": 1}]
    assert (await pool.process({"operation": "stats"}))["connections"]["recycled"] == 1


async def test_old_connections_are_replaced_after_max_lifetime(make_pool: PoolFactory) -> None:
    pool = make_pool(
        min_connections=2, max_connections=2, max_lifetime=0.3, maintenance_interval=0.1
    )
    await pool.initialize()
    first = set(pool.engine.health_scores())
    await asyncio.sleep(0.8)
    res = await run(pool, "SELECT 1 AS one")
    assert res["success"]
    assert not first & set(pool.engine.health_scores())
    # replacements keep coming (every 0.3 s); one may be closing right now, never more
    total = pool.engine.state()["total_connections"]
    assert total >= 1 and total + pool.engine.closing <= 2


async def test_idle_connections_shrink_to_min(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=4, max_idle=0.2, maintenance_interval=0.1)
    conns = await asyncio.gather(*(pool.acquire() for _ in range(4)))
    for c in conns:
        await pool.release(c)
    assert pool.engine.state()["total_connections"] == 4
    await asyncio.sleep(0.8)
    assert pool.engine.state()["total_connections"] == 1


async def test_close_drains_and_later_use_raises_pool_closed(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=2)
    conn = await pool.acquire()

    async def late_release() -> None:
        await asyncio.sleep(0.1)
        await pool.release(conn)

    releaser = asyncio.create_task(late_release())
    assert await pool.process({"operation": "close"}) == {"status": "closed"}
    await releaser
    assert pool.engine.state()["total_connections"] == 0
    with pytest.raises(PoolClosed):
        await pool.process({"operation": "acquire"})
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_stats_report_measured_values_with_sample_counts(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=2, max_connections=4)
    await make_items(pool, table, rows=3)
    for i in range(10):
        await run(pool, f"SELECT name FROM {table} WHERE id = ?", [i % 3 + 1])
    stats = await pool.process({"operation": "stats"})
    assert stats["pool_name"] == pool.name and stats["uptime_seconds"] > 0
    assert stats["connections"]["created"] == 2
    assert stats["queries"] == {"executed": 14, "errors": 0, "error_rate": 0.0}
    perf = stats["performance"]
    assert perf["query_samples"] == 14 and perf["acquisition_samples"] == 14
    assert 0 < perf["p50_query_time_ms"] <= perf["p95_query_time_ms"] <= perf["p99_query_time_ms"]
    state = stats["current_state"]
    assert state["total_connections"] == 2 and state["active_connections"] == 0
    assert state["idle_connections"] == 2 and state["waiting_requests"] == 0
    assert len(state["health_scores"]) == 2


async def test_adjust_pool_size_grows_usable_connections_and_shrinks_idle(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(min_connections=1, max_connections=5)
    await pool.initialize()
    res = await pool.process({"operation": "adjust_pool_size", "new_size": 4})
    assert res == {"success": True, "previous_size": 1, "new_size": 4}
    for _ in range(100):
        if pool.engine.state()["idle_connections"] == 4:
            break
        await asyncio.sleep(0.01)
    assert pool.engine.state()["idle_connections"] == 4
    res = await pool.process({"operation": "adjust_pool_size", "new_size": 2})
    assert res["success"] and pool.engine.state()["total_connections"] == 2
    bad = await pool.process({"operation": "adjust_pool_size", "new_size": 9})
    assert bad == {"success": False, "reason": "Size must be between 1 and 5"}


async def test_get_status_lists_each_connection(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=2)
    await pool.initialize()
    conn = await pool.acquire()
    status = await pool.process({"operation": "get_status"})
    assert status["pool_size"] == 2 and status["active_count"] == 1
    assert status["connections"][conn.entry.name]["state"] == "active"
    await pool.release(conn)


async def test_idle_connection_is_checked_once_and_kept_when_healthy(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(min_connections=2, max_connections=2, check_idle_after=0.05)
    await pool.initialize()
    await asyncio.sleep(0.15)
    for _ in range(3):
        res = await run(pool, "SELECT 1 AS one")
        assert res["data"] == [{"one": 1}]
    s = pool.engine.stats
    assert s.checks_performed == 1 and s.checks_failed == 0  # only the long-idle borrow
    assert s.connections_created == 2 and s.connections_recycled == 0


async def test_dead_idle_connection_is_replaced_without_the_caller_noticing(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(min_connections=1, max_connections=1, check_idle_after=0.0)
    await pool.initialize()
    (entry,) = pool.engine.entries()
    entry.conn.terminate()  # the connection dies while idle
    res = await run(pool, "SELECT 1 AS one")
    assert res["success"] and res["data"] == [{"one": 1}]
    assert pool.engine.stats.connections_created == 2


async def test_adjust_pool_size_before_initialize_respects_max(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=4)
    res = await pool.process({"operation": "adjust_pool_size", "new_size": 4})
    assert res["success"]
    await pool.initialize()
    assert pool.engine.state()["total_connections"] == 4
    conns = await asyncio.gather(*(pool.acquire() for _ in range(4)))
    assert pool.engine.state()["total_connections"] == 4
    for c in conns:
        await pool.release(c)


async def test_row_counts_are_right_without_prepared_statements(
    make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, statement_cache_size=0)
    await make_items(pool, table, rows=4)
    res = await run(pool, f"UPDATE {table} SET name = 'z' WHERE id <= ?", [3])
    assert res["row_count"] == 3
    many = await run(pool, f"SELECT id FROM {table} ORDER BY id", fetch_mode="many", fetch_size=2)
    assert many["data"] == [{"id": 1}, {"id": 2}] and many["row_count"] == 2
    ret = await run(pool, f"DELETE FROM {table} WHERE id = 4 RETURNING id")
    if ret["success"]:  # RETURNING: PostgreSQL, SQLite >= 3.35, MariaDB >= 10.5
        assert ret["data"] == [{"id": 4}] and ret["row_count"] == 1


async def test_the_engine_refuses_a_second_statement_or_a_release_on_a_busy_connection(
    make_pool: PoolFactory, backend: Backend
) -> None:
    """Two statements on one wire would interleave (MySQL hands one caller's rows to the
    other): the engine itself refuses the second, and a release, until the first returns."""
    pool = make_pool(min_connections=1, max_connections=1)
    engine = pool.engine
    slow = {
        "postgresql": "SELECT pg_sleep(0.3), 1 AS v",
        "mysql": "SELECT SLEEP(0.3), 1 AS v",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 2000000) SELECT count(*), 1 AS v FROM c",
    }[backend.name]
    pc = await engine.acquire()
    first = asyncio.create_task(engine.execute(pc, slow))
    await asyncio.sleep(0.05)
    with pytest.raises(ParameterError, match="already running a statement"):
        await engine.execute(pc, "SELECT 2 AS v")
    with pytest.raises(ParameterError, match="running a statement"):
        await engine.release(pc)
    assert (await first).data[0]["v"] == 1  # the first statement's own answer
    assert (await engine.execute(pc, "SELECT 2 AS v")).data == [{"v": 2}]
    assert await engine.release(pc) == "released"
    assert engine.state()["active_connections"] == 0


async def test_the_engine_builds_the_reports_the_node_returns(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=2, max_connections=3)
    await run(pool, "SELECT 1 AS one")
    engine = pool.engine
    node_stats, engine_stats = pool.get_stats(), engine.get_stats()
    for report in (node_stats, engine_stats):
        report.pop("uptime_seconds")
    assert node_stats == engine_stats
    assert engine_stats["pool_name"] == pool.name and engine_stats["queries"]["executed"] == 1
    assert engine.get_pool_statistics()["total_connections"] == 2
    status = engine.get_status()
    assert status["pool_size"] == 2 and set(status["connections"]) == set(engine.health_scores())


@pytest.mark.parametrize("graceful", [True, False])
async def test_retire_replaces_a_connection_and_keeps_the_floor(
    make_pool: PoolFactory, graceful: bool
) -> None:
    pool = make_pool(min_connections=1, max_connections=2)
    await pool.initialize()
    engine = pool.engine
    (old,) = engine.entries()
    engine.idle_entries().remove(old)
    engine.retire(old, "test", graceful=graceful)
    assert old not in engine.entries() and engine.get_stats()["connections"]["recycled"] == 1
    for _ in range(200):
        if engine.closing == 0 and len(engine.idle_entries()) == 1:
            break
        await asyncio.sleep(0.01)
    assert engine.closing == 0 and engine.state()["total_connections"] == 1
    assert old.conn.is_closed() and (new := engine.idle_entries()[0]) is not old
    assert (await run(pool, "SELECT 1 AS one"))["success"] and new in engine.entries()


async def test_retire_without_replacement_just_closes(make_pool: PoolFactory) -> None:
    pool = make_pool(min_connections=1, max_connections=2)
    await pool.initialize()
    engine = pool.engine
    (old,) = engine.entries()
    engine.idle_entries().remove(old)
    engine.retire(old, "test", replace=False)
    assert engine.state()["opening_connections"] == 0
    stats = engine.get_stats()["connections"]
    assert stats["recycled"] == 0 and engine.state()["total_connections"] == 0
