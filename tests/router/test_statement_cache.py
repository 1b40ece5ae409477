"""The router's statement cache on every backend, and cache_stats that count real reuse.

PostgreSQL reuses server-side prepared statements, SQLite sqlite3's own per-connection
cache (counted through a mirror that these tests hold against sqlite3's own counters and
its ``sqlite_stmt`` table), MySQL/MariaDB only the router's per-text work.
"""

from __future__ import annotations

import gc
import sqlite3
from typing import Any

import asyncpg
import pytest

from kailash_nodes import QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.drivers.sqlite import SQLiteConnection
from kailash_nodes.runtime import LocalRuntime
from tests.conftest import Backend, PoolFactory, server_dsn

KINDS = {"postgresql": "server_prepared", "sqlite": "sqlite3", "mysql": "client_text"}


def _router(pool: WorkflowConnectionPool, **options: Any) -> QueryRouterNode:
    router = QueryRouterNode(name=f"r-{pool.name}", connection_pool=pool.name, **options)
    router.set_connection_pool(pool)
    return router


async def _run(router: QueryRouterNode, query: str, params: list[Any] | None = None) -> Any:
    res = await router.process({"query": query, "parameters": params or []})
    assert res["success"], res["error"]
    return res


def _only_connection(pool: WorkflowConnectionPool) -> Any:
    (entry,) = pool.engine.entries()
    return entry.conn


def _held(rows: Any, _count: int) -> set[str]:
    """Return the texts of the statements a ``sqlite_stmt`` read lists."""
    return {r["sql"] for r in rows}


def _sure(conn: SQLiteConnection) -> set[str]:
    """Return the texts the mirror says sqlite3 surely holds."""
    return {text for text, sure in conn.statements.texts.items() if sure}


def _lru_of(conn: SQLiteConnection) -> Any:
    """Return sqlite3's own statement cache of ``conn`` (a functools.lru_cache wrapper that
    CPython's sqlite3 keeps in the C connection object, reachable only through gc)."""
    return _lru_of_raw(conn._raw)


# ---------------------------------------------------------------------- every backend


async def test_seed_after_example_reports_hits_on_every_backend(
    backend: Backend, make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=5, max_connections=20, adaptive_sizing=True,
                     enable_query_routing=True)  # fmt: skip
    router = _router(pool, enable_read_write_split=True, cache_size=1000, pattern_learning=True)
    try:
        await _run(router, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, active BOOLEAN)")
        await _run(router, f"INSERT INTO {table} VALUES (1, ?), (2, ?)", [True, False])
        before = (await router.get_metrics())["cache_stats"]
        for _ in range(5):  # seed 003 "After": the same SELECT, through the router
            result = await router.process(
                {"query": f"SELECT * FROM {table} WHERE active = ?", "parameters": [True]}
            )
            assert [r["id"] for r in result["data"]] == [1]
        metrics = await router.get_metrics()
    finally:
        await router.process({"query": f"DROP TABLE IF EXISTS {table}"})
        await router.close()
    cache = metrics["cache_stats"]
    assert cache["hit_rate"] > 0
    assert cache["statement_cache"] == KINDS[backend.name]
    # the first SELECT misses (prepared, compiled, or classified then); the 4 repeats hit
    assert (cache["lookups"] - before["lookups"], cache["hits"] - before["hits"]) == (5, 4)
    assert cache["server_side_prepare"] is (backend.name == "postgresql")
    if backend.name == "postgresql":
        assert cache["prepared"]["hits"] == cache["hits"] and cache["prepared"]["why"] is None
    else:  # never reported as a prepared-statement hit rate
        assert cache["prepared"]["lookups"] == 0 and cache["prepared"]["hit_rate"] is None
        assert cache["prepared"]["why"]


async def test_mysql_reports_the_routers_per_text_reuse_not_prepares(
    backend: Backend, make_pool: PoolFactory
) -> None:
    if backend.name != "mysql":
        pytest.skip("MySQL/MariaDB: no server-side prepare through aiomysql")
    pool = make_pool(min_connections=1, max_connections=1)
    router = _router(pool, cache_size=2)  # cache_size bounds nothing here: no prepare
    try:
        texts = [f"SELECT {i} AS n" for i in range(3)]
        for text in texts + texts:  # 3 distinct texts, twice: over cache_size, yet reused
            res = await _run(router, text)
            assert res["routing_metadata"]["cache_hit"] is False  # no connection cache
        cache = (await router.get_metrics())["cache_stats"]
    finally:
        await router.close()
    assert (cache["statement_cache"], cache["lookups"], cache["hits"]) == ("client_text", 6, 3)
    assert cache["total_entries"] == 0 and cache["server_side_prepare"] is False
    assert "aiomysql" in cache["prepared"]["why"]


# ---------------------------------------------------------------------- exact counts


async def test_cycling_one_text_more_than_the_cache_holds_never_hits(
    backend: Backend, make_pool: PoolFactory
) -> None:
    if backend.name == "mysql":
        pytest.skip("no statement cache per connection on MySQL")
    pool = make_pool(min_connections=1, max_connections=1)
    router = _router(pool, cache_size=3)
    texts = [f"SELECT {i} AS n" for i in range(4)]
    try:
        await _run(router, "SELECT 99 AS warm")  # the pool is open: its ping is done
        start = (await router.get_metrics())["cache_stats"]
        for text in texts * 3:  # an LRU of 3 cycled through 4 texts: every run misses
            await _run(router, text)
        cycled = (await router.get_metrics())["cache_stats"]
        for text in texts[1:] * 3:  # 3 texts in an LRU of 3: all but the first round hit
            await _run(router, text)
        within = (await router.get_metrics())["cache_stats"]
        conn = _only_connection(pool)
        assert conn.cached_statements() == 3
        assert [conn.has_statement(t) for t in texts] == [False, True, True, True]
    finally:
        await router.close()
    assert (cycled["lookups"] - start["lookups"], cycled["hits"] - start["hits"]) == (12, 0)
    # texts 1..3 were the last three of the cycle: all 9 runs hit
    assert (within["lookups"] - cycled["lookups"], within["hits"] - cycled["hits"]) == (9, 9)


async def test_sqlite_mirror_matches_sqlite3s_own_cache(tmp_path: Any) -> None:
    """The mirror's hits are sqlite3's hits, its texts the statements SQLite holds."""
    pool = WorkflowConnectionPool(name="mirror", connection_string=f"sqlite:///{tmp_path}/m.db",
                                  min_connections=1, max_connections=1)  # fmt: skip
    router = _router(pool, cache_size=4)
    try:
        await _run(router, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn = _only_connection(pool)
        assert isinstance(conn, SQLiteConnection) and conn.statements.capacity == 4
        lru = _lru_of(conn)
        assert lru.cache_info().maxsize == 4  # sized from the router's cache_size
        counted, own = (await router.get_metrics())["cache_stats"], lru.cache_info()
        sequence = ["SELECT 1", "SELECT 2", "SELECT 1", "SELECT 3", "SELECT 4", "SELECT 5",
                    "SELECT 2", "SELECT 1", "SELECT 1", "INSERT INTO t VALUES (1)"]  # fmt: skip
        for text in sequence:
            await _run(router, text)
        after, own_after = (await router.get_metrics())["cache_stats"], lru.cache_info()
        # LRU of 4 (CREATE in it): hits are the 2nd "SELECT 1" and the second of the
        # back-to-back "SELECT 1" (the first was evicted by 3, 4, 5 and 2)
        assert after["hits"] - counted["hits"] == own_after.hits - own.hits == 2
        assert after["lookups"] - counted["lookups"] == 10
        assert own_after.hits + own_after.misses - (own.hits + own.misses) == 10
        # what SQLite holds prepared on the connection is exactly what the mirror holds
        probe = "SELECT sql FROM sqlite_stmt"
        assert _held(*await conn.fetch(probe, (), "all", 100, None)) == _sure(conn) == {
            probe, "SELECT 2", "SELECT 1", "INSERT INTO t VALUES (1)"}  # fmt: skip
        # a constraint failure comes after compiling: kept, so the repeat is a hit
        dup = await router.process({"query": "INSERT INTO t VALUES (1)"})
        assert dup["success"] is False and dup["routing_metadata"]["cache_hit"] is True
        # a statement that fails to compile is not kept by sqlite3; the mirror cannot tell
        # that failure from a run-time one, so it keeps the text as "maybe": never a hit
        for _ in range(2):
            bad = await router.process({"query": "SELECT * FROM no_such_table"})
            assert bad["success"] is False and bad["routing_metadata"]["cache_hit"] is False
        final, own_final = (await router.get_metrics())["cache_stats"], lru.cache_info()
        assert final["hits"] - after["hits"] == own_final.hits - own_after.hits == 1
        # from here it may under-count, never over-count: every text it calls cached is
        assert _sure(conn) <= _held(*await conn.fetch(probe, (), "all", 100, None))
    finally:
        await router.close()
        await pool.close()


async def test_a_sqlite_pool_opened_at_another_size_is_reopened_at_the_routers(
    tmp_path: Any,
) -> None:
    pool = WorkflowConnectionPool(name="sized", connection_string=f"sqlite:///{tmp_path}/s.db",
                                  min_connections=2, max_connections=2,
                                  statement_cache_size=8)  # fmt: skip
    runtime = LocalRuntime()
    runtime.register_node("sized", pool)
    router = QueryRouterNode(name="router", connection_pool="sized", cache_size=50)
    runtime.register_node("router", router)
    try:
        await pool.initialize()  # opened first, at its own size (as the runtime does)
        assert {e.conn.statements.capacity for e in pool.engine.entries()} == {8}
        for _ in range(3):
            await _run(router, "SELECT 1 AS one")
        sizes = {e.conn.statements.capacity for e in pool.engine.entries()}
        assert sizes == {50}  # both replaced (sqlite3 fixes the size at connect)
        assert pool.engine.stats.connections_recycled >= 2
    finally:
        await router.close()
        await pool.close()


# ---------------------------------------------------------------------- DDL


async def test_ddl_drops_only_the_statements_of_the_tables_it_changed(
    backend: Backend, make_pool: PoolFactory, table: str
) -> None:
    if backend.name == "mysql":
        pytest.skip("no statements cached per connection on MySQL")
    pool = make_pool(min_connections=1, max_connections=1)
    router = _router(pool, cache_size=10)
    a, b = f"{table}_a", f"{table}_b"
    sel_a, sel_b = f"SELECT * FROM {a} WHERE id = 1", f"SELECT * FROM {b} WHERE id = 1"
    try:
        for t in (a, b):
            await _run(router, f"CREATE TABLE {t} (id INTEGER PRIMARY KEY)")
            await _run(router, f"INSERT INTO {t} VALUES (1)")
        await _run(router, sel_a)
        await _run(router, sel_b)
        conn = _only_connection(pool)
        assert conn.has_statement(sel_a) and conn.has_statement(sel_b)
        cached = conn.cached_statements()
        await _run(router, f"ALTER TABLE {a} ADD COLUMN extra INTEGER")
        if backend.name == "postgresql":
            # a's statements are gone from the connection (and the server), b's survive
            assert not conn.has_statement(sel_a) and conn.has_statement(sel_b)
            # a's CREATE, INSERT and SELECT went; the ALTER itself is cached now
            assert conn.cached_statements() == cached - 3 + 1
            names = await _run(router, "SELECT statement FROM pg_prepared_statements")
            held = {r["statement"] for r in names["data"]}
            assert sel_b in held and sel_a not in held
        else:
            # sqlite3 cannot drop one statement, and need not: SQLite compiles every
            # cached statement again after any schema change (sqlite_stmt.reprep)
            assert conn.has_statement(sel_a) and conn.has_statement(sel_b)
        again_b = await _run(router, sel_b)
        again_a = await _run(router, sel_a)
        assert again_b["routing_metadata"]["cache_hit"] is True
        assert again_a["routing_metadata"]["cache_hit"] is (backend.name == "sqlite")
        assert again_a["data"] == [{"id": 1, "extra": None}]  # the new column: not stale
        if backend.name == "sqlite":
            rows, _ = await conn.fetch("SELECT sql, reprep FROM sqlite_stmt", (), "all", 100, None)
            reprep = {r["sql"]: r["reprep"] for r in rows}
            assert reprep[sel_a] >= 1 and reprep[sel_b] >= 1  # both, by SQLite itself
    finally:
        for t in (a, b):
            await router.process({"query": f"DROP TABLE IF EXISTS {t}"})
        await router.close()


@pytest.mark.postgres
async def test_a_statement_stale_after_ddl_elsewhere_is_prepared_again_once(table: str) -> None:
    dsn = server_dsn("KN_PG_DSN")
    pool = WorkflowConnectionPool(name="stale", connection_string=dsn, min_connections=1,
                                  max_connections=1)  # fmt: skip
    router = _router(pool, cache_size=10)
    outside = await asyncpg.connect(dsn)
    select = f"SELECT * FROM {table} ORDER BY id"
    try:
        await outside.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        await outside.execute(f"INSERT INTO {table} VALUES (1)")
        assert (await _run(router, select))["data"] == [{"id": 1}]
        conn = _only_connection(pool)
        assert conn.has_statement(f"SELECT * FROM {table} ORDER BY id")
        # DDL the router never sees: the cached plan's result type changes under it
        await outside.execute(f"ALTER TABLE {table} ADD COLUMN b INTEGER DEFAULT 7")
        res = await _run(router, select)
        assert res["data"] == [{"id": 1, "b": 7}]
        assert conn.statements_reprepared == 1
        await outside.execute(f"ALTER TABLE {table} ADD COLUMN c TEXT DEFAULT 'x'")
        lease = await pool.process({"operation": "acquire"})  # the pool's own API too
        try:
            res = await pool.process({"operation": "execute", "query": select,
                                      "connection_id": lease["connection_id"]})  # fmt: skip
        finally:
            await pool.process({"operation": "release", "connection_id": lease["connection_id"]})
        assert res["success"] and res["data"] == [{"id": 1, "b": 7, "c": "x"}]
        assert conn.statements_reprepared == 2 and conn.has_statement(select)
    finally:
        await outside.execute(f"DROP TABLE IF EXISTS {table}")
        await outside.close()
        await router.close()
        await pool.close()


def test_sqlite3_statement_cache_is_an_lru_keyed_by_text() -> None:
    """The fact the mirror rests on, on this Python: sqlite3's cache is an exact LRU of
    ``cached_statements`` texts, used by execute, not by executescript."""
    raw = sqlite3.connect(":memory:", cached_statements=2, isolation_level=None)
    lru = _lru_of_raw(raw)
    for text in ("SELECT 1", "SELECT 2", "SELECT 1", "SELECT 3", "SELECT 2"):
        raw.execute(text)
    raw.executescript("SELECT 1; SELECT 1;")
    info = lru.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 4, 2)
    raw.close()


def _lru_of_raw(raw: sqlite3.Connection) -> Any:
    (lru,) = [r for r in gc.get_referents(raw) if type(r).__name__ == "_lru_cache_wrapper"]
    return lru
