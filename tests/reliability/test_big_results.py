"""Big results read in bounded memory, on every backend (issue #12, "huge results").

``execute(..., max_rows=N)`` refuses a result of more than N rows with ResultTooLarge
after reading at most N+1 of them, and ``stream()`` hands a result of any size out in
batches, one at a time. Either way the connection is left clean: no transaction, cursor
or unread result, whether the stream ends, is stopped early or is cancelled mid-batch.
The result here is 200,000 generated rows of ~110 bytes (no table needed).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import pytest

from kailash_nodes import WorkflowConnectionPool
from kailash_nodes.errors import (
    ConfigError,
    ParameterError,
    ResultTooLarge,
    UnsupportedStatement,
)
from kailash_nodes.pool import ConnectionPool, PooledConnection
from tests.conftest import Backend, server_dsn

HANG_GUARD = 30.0  # seconds; only "it did not hang", never a timing assertion
ROWS = 200_000
# Rows materialised for the memory baseline: tracemalloc slows aiomysql's row reading
# ~10x, and a bounded read of ROWS that peaks under a tenth of materialising this many
# says more than a comparison at ROWS would.
BASELINE_ROWS = 50_000
_BIG = {
    "postgresql": "SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, ?) g",
    "mysql": "SELECT seq AS n, REPEAT('x', 100) AS pad FROM seq_1_to_{rows}",
    "sqlite": (
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
        "SELECT n, printf('%.100c', 'x') AS pad FROM s"
    ),
}
T = TypeVar("T")


def big(backend: Backend, rows: int = ROWS) -> tuple[str, list[int]]:
    """Return a query of ``rows`` rows (n = 1..rows, a 100-byte pad) and its parameters."""
    if backend.name == "mysql":  # MariaDB's sequence engine takes no parameter
        return _BIG["mysql"].format(rows=rows), []
    return _BIG[backend.name], [rows]


@pytest.fixture
async def pool(backend: Backend) -> AsyncIterator[WorkflowConnectionPool]:
    """A pool of one connection: the next caller gets what the last one left."""
    node = WorkflowConnectionPool(
        name=f"big{uuid.uuid4().hex[:6]}",
        connection_string=backend.dsn,
        min_connections=1,
        max_connections=1,
    )
    yield node
    await node.close()


async def guarded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, HANG_GUARD)


async def peak_bytes(run: Callable[[], Awaitable[Any]]) -> int:
    """Return the peak of Python memory allocated while ``run`` runs (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        await guarded(run())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def server_transaction_open(backend: Backend, engine: ConnectionPool, pc: Any) -> bool:
    """Return whether ``pc``'s session is in a transaction, as the server said: PostgreSQL's
    status in its last ReadyForQuery, MariaDB's ``@@in_transaction``, sqlite3's flag."""
    if backend.name == "mysql":
        res = await engine.execute(pc, "SELECT @@in_transaction AS t")
        return bool(res.data[0]["t"])
    return bool(pc.entry.conn.in_transaction())


async def idle_in_transaction(backend: Backend, pool_name: str) -> int:
    """Count the pool's server sessions left idle in a transaction (PostgreSQL)."""
    if backend.name != "postgresql":
        return 0
    conn = await asyncpg.connect(backend.dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND state LIKE 'idle in transaction%'",
                pool_name,
            )
        )
    finally:
        await conn.close()


async def assert_clean(
    backend: Backend, pool: WorkflowConnectionPool, pc: PooledConnection
) -> None:
    """The connection runs a statement, holds no transaction, and goes back unreplaced."""
    engine = pool.engine
    res = await guarded(engine.execute(pc, "SELECT 1 AS one"))
    assert res.data == [{"one": 1}]
    assert not await server_transaction_open(backend, engine, pc)
    assert await engine.release(pc) == "released"
    assert engine.state()["active_connections"] == 0
    assert await idle_in_transaction(backend, pool.name) == 0


async def test_max_rows_refuses_a_big_result_reading_only_the_limit(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    query, params = big(backend)
    pc = await engine.acquire()
    baseline = await peak_bytes(lambda: engine.execute(pc, *big(backend, BASELINE_ROWS)))
    # With its own LIMIT the query goes through a cursor on MariaDB too (LIMIT would win
    # over the server-side row limit), so both ways of reading are refused here.
    for text in (query, f"{query} LIMIT {ROWS}"):
        with pytest.raises(ResultTooLarge, match=r"max_rows=1000\b.*stream") as caught:
            await guarded(engine.execute(pc, text, params, max_rows=1000))
        assert caught.value.sqlstate == "54000"
        assert not await server_transaction_open(backend, engine, pc)

    async def refused() -> None:
        with pytest.raises(ResultTooLarge):
            await engine.execute(pc, query, params, max_rows=1000)

    limited = await peak_bytes(refused)
    assert limited * 10 < baseline, (limited, baseline)
    await assert_clean(backend, pool, pc)


async def test_max_rows_returns_a_result_within_the_limit(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    query, params = big(backend, 5)
    async with pool.connection() as pc:
        res = await guarded(engine.execute(pc, query, params, max_rows=5))
        assert [r["n"] for r in res.data] == [1, 2, 3, 4, 5] and res.row_count == 5
        one = await engine.execute(pc, query, params, max_rows=5, fetch_mode="one")
        assert one.data["n"] == 1
        for _ in range(8):  # the caller's limit is no mark against the connection's health
            with pytest.raises(ResultTooLarge, match="max_rows=4"):
                await engine.execute(pc, query, params, max_rows=4)
        assert pc.health_score == 100
        for bad in (0, -1, 1.5, True, "10"):
            with pytest.raises(ParameterError, match="max_rows"):
                await engine.execute(pc, "SELECT 1", max_rows=bad)
    assert await engine.release(await engine.acquire()) == "released"


async def test_max_rows_lets_a_write_run_once_and_unlimited(
    backend: Backend, pool: WorkflowConnectionPool, table: str
) -> None:
    engine = pool.engine
    async with pool.connection() as pc:
        await engine.execute(pc, f"CREATE TABLE {table} (id INT)")
        try:
            res = await engine.execute(pc, f"INSERT INTO {table} VALUES (1), (2), (3)", max_rows=1)
            assert res.row_count == 3
            count = await engine.execute(pc, f"SELECT COUNT(*) AS c FROM {table}")
            assert count.data[0]["c"] == 3
        finally:
            await engine.execute(pc, f"DROP TABLE {table}")


async def test_stream_reads_every_row_holding_one_batch(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    pc = await engine.acquire()
    seen = {"total": 0, "rows": 0, "largest": 0}

    async def consume(rows: int) -> None:
        async for batch in engine.stream(pc, *big(backend, rows), batch_size=1000):
            seen["total"] += sum(row["n"] for row in batch)
            seen["rows"] += len(batch)
            seen["largest"] = max(seen["largest"], len(batch))

    await guarded(consume(ROWS))
    assert seen == {"total": ROWS * (ROWS + 1) // 2, "rows": ROWS, "largest": 1000}
    materialised = await peak_bytes(lambda: engine.execute(pc, *big(backend, BASELINE_ROWS)))
    streamed = await peak_bytes(lambda: consume(BASELINE_ROWS))
    assert streamed * 10 < materialised, (streamed, materialised)
    await assert_clean(backend, pool, pc)


async def test_stream_stopped_early_leaves_the_connection_clean(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    query, params = big(backend)
    pc = await engine.acquire()
    stream = engine.stream(pc, query, params, batch_size=500)
    async for batch in stream:
        assert batch[0]["n"] == 1
        break  # the next statement ends the stream before it runs
    await guarded(engine.execute(pc, "SELECT 1"))
    assert stream.closed
    await assert_clean(backend, pool, pc)

    pc = await engine.acquire()
    async with engine.stream(pc, query, params, batch_size=500) as batches:
        async for _ in batches:
            break
    assert batches.closed
    await assert_clean(backend, pool, pc)

    pc = await engine.acquire()
    stream = engine.stream(pc, query, params, batch_size=500)
    async for _ in stream:
        break  # released with the stream open: the release ends it, and keeps the connection
    assert not stream.closed
    assert await guarded(engine.release(pc)) == "released"
    assert stream.closed
    assert await idle_in_transaction(backend, pool.name) == 0
    await assert_clean(backend, pool, await engine.acquire())


async def test_stream_cancelled_mid_batch_leaves_the_pool_healthy(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    query, params = big(backend)
    started = asyncio.Event()
    streams = []

    async def consume() -> None:
        async with pool.connection() as pc:
            streams.append(engine.stream(pc, query, params, batch_size=100))
            async for _ in streams[0]:
                started.set()

    task = asyncio.create_task(consume())
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiting], timeout=HANG_GUARD, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    assert started.is_set() and not task.done(), task  # a failed stream shows its error here
    task.cancel()  # the consumer only awaits batches: the cancellation lands in one
    with pytest.raises(asyncio.CancelledError):
        await task
    assert streams[0].closed
    assert engine.state()["active_connections"] == 0
    await assert_clean(backend, pool, await guarded(engine.acquire()))


async def test_stream_inside_a_callers_transaction_keeps_the_transaction(
    backend: Backend, pool: WorkflowConnectionPool, table: str
) -> None:
    engine = pool.engine
    query, params = big(backend)
    async with pool.connection() as pc:
        await engine.execute(pc, f"CREATE TABLE {table} (id INT)")
        try:
            await engine.execute(pc, "BEGIN")
            await engine.execute(pc, f"INSERT INTO {table} VALUES (1)")
            async for _ in engine.stream(pc, query, params, batch_size=10):
                break
            await engine.execute(pc, f"INSERT INTO {table} VALUES (2)")
            await engine.execute(pc, "COMMIT")
            res = await engine.execute(pc, f"SELECT COUNT(*) AS c FROM {table}")
            assert res.data[0]["c"] == 2
        finally:
            await engine.execute(pc, f"DROP TABLE {table}")


async def test_stream_refuses_statements_that_are_not_queries(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    async with pool.connection() as pc:
        with pytest.raises(UnsupportedStatement, match="execute"):
            engine.stream(pc, "DELETE FROM nowhere")
        with pytest.raises(ParameterError, match="batch_size"):
            engine.stream(pc, "SELECT 1", batch_size=0)
        with pytest.raises(ParameterError, match="one query"):
            engine.stream(pc, "SELECT 1; SELECT 2")
        rows = [b async for b in engine.stream(pc, "SELECT 1 AS x")]
        assert rows == [[{"x": 1}]]


async def test_pool_option_max_rows_limits_every_query_of_the_node(backend: Backend) -> None:
    query, params = big(backend, 500)
    node = WorkflowConnectionPool(
        name=f"big{uuid.uuid4().hex[:6]}", connection_string=backend.dsn, max_rows=100
    )
    try:
        conn = await node.process({"operation": "acquire"})
        cid = conn["connection_id"]
        request = {"operation": "execute", "connection_id": cid, "query": query, "params": params}
        refused = await guarded(node.process(request))
        assert refused["success"] is False
        assert (refused["error_type"], refused["sqlstate"]) == ("ResultTooLarge", "54000")
        assert "max_rows=100" in refused["error"]
        allowed = await guarded(node.process({**request, "max_rows": 500}))
        assert allowed["success"] and allowed["row_count"] == 500
        with pytest.raises(ParameterError, match="max_rows"):
            await node.process({**request, "max_rows": "500"})
        batches = [len(b) async for b in node.stream(cid, query, params, batch_size=200)]
        assert batches == [200, 200, 100]
        released = await node.process({"operation": "release", "connection_id": cid})
        assert released["status"] == "released"
    finally:
        await node.close()
    for bad in (0, -5, 2.5, "10", True):
        with pytest.raises(ConfigError, match="max_rows"):
            WorkflowConnectionPool(connection_string=backend.dsn, max_rows=bad)


async def test_stream_and_max_rows_work_behind_pgbouncer_in_transaction_mode() -> None:
    dsn = server_dsn("KN_PGBOUNCER_DSN")
    node = WorkflowConnectionPool(
        name=f"big{uuid.uuid4().hex[:6]}", connection_string=dsn, max_connections=4
    )
    query = "SELECT g AS n FROM generate_series(1, ?) g"

    async def caller(rows: int) -> int:
        async with node.connection() as pc:
            with pytest.raises(ResultTooLarge):
                await node.engine.execute(pc, query, [rows], max_rows=rows - 1)
            total = 0
            async for batch in node.stream(pc, query, [rows], batch_size=1000):
                total += sum(row["n"] for row in batch)
            return total

    try:
        sizes = [5000 + i for i in range(4)]
        totals = await guarded(asyncio.gather(*(caller(n) for n in sizes)))
        assert totals == [n * (n + 1) // 2 for n in sizes]
        assert node.engine.state()["active_connections"] == 0
    finally:
        await node.close()


async def test_fetch_modes_one_and_many_read_only_the_rows_they_return(
    backend: Backend, pool: WorkflowConnectionPool, table: str
) -> None:
    engine = pool.engine
    query, params = big(backend, 20_000)
    pc = await engine.acquire()
    whole = await peak_bytes(lambda: engine.execute(pc, query, params))
    results = []

    async def read(mode: str) -> None:
        results.append(await engine.execute(pc, query, params, fetch_mode=mode, fetch_size=10))

    many = await peak_bytes(lambda: read("many"))
    one = await peak_bytes(lambda: read("one"))
    assert [r["n"] for r in results[0].data] == list(range(1, 11))
    assert results[0].row_count == 10
    assert (results[1].data["n"], results[1].row_count) == (1, 1)
    assert many * 10 < whole and one * 10 < whole, (many, one, whole)
    await engine.execute(pc, f"CREATE TABLE {table} (id INT)")
    try:  # a statement that is not a query keeps its row count in every mode
        await engine.execute(pc, f"INSERT INTO {table} VALUES (1), (2), (3)")
        for mode in ("one", "many"):
            res = await engine.execute(pc, f"UPDATE {table} SET id = id + 1", fetch_mode=mode)
            assert (res.data, res.row_count) == (None if mode == "one" else [], 3)
    finally:
        await engine.execute(pc, f"DROP TABLE {table}")
    await assert_clean(backend, pool, pc)


async def test_a_stream_ended_under_its_reader_raises_instead_of_ending_short(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    query, params = big(backend, 5000)
    async with pool.connection() as pc:
        first = engine.stream(pc, query, params, batch_size=100)
        assert len(await anext(first)) == 100
        second = engine.stream(pc, query, params, batch_size=100)
        assert (await anext(second))[0]["n"] == 1  # opening it ended the first one
        with pytest.raises(ParameterError, match="ended before it was read to the end"):
            await anext(first)
        await engine.execute(pc, "SELECT 1")  # and this ends the second
        with pytest.raises(ParameterError, match="ended before"):
            await anext(second)
        done = engine.stream(pc, query, params, batch_size=5000)
        assert [len(b) async for b in done] == [5000]  # read to the end: ends quietly
        await engine.execute(pc, "SELECT 1")
        with pytest.raises(StopAsyncIteration):
            await anext(done)


async def test_a_statement_sent_while_a_batch_is_read_is_refused_before_it_is_sent(
    backend: Backend, pool: WorkflowConnectionPool
) -> None:
    engine = pool.engine
    query, params = big(backend, 50_000)
    async with pool.connection() as pc:
        stream = engine.stream(pc, query, params, batch_size=20_000)
        assert len(await anext(stream)) == 20_000
        batch = asyncio.create_task(anext(stream))
        await asyncio.sleep(0)  # the batch is on its way
        with pytest.raises(ParameterError, match="already running a statement"):
            await engine.execute(pc, "SELECT 1")
        with pytest.raises(ParameterError, match="running a statement"):
            await engine.release(pc)
        with pytest.raises(ParameterError, match="already running on its connection"):
            await anext(stream)
        assert len(await guarded(batch)) == 20_000
        assert [len(b) async for b in stream] == [10_000]
    await assert_clean(backend, pool, await engine.acquire())
