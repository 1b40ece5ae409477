"""The router's get_metrics() report, built by kailash_nodes.router.metrics."""

from __future__ import annotations

from kailash_nodes import QueryRouterNode
from kailash_nodes.router.metrics import RouterMetrics
from tests.conftest import Backend, PoolFactory

ROUTER_KEYS = {
    "queries_routed", "cache_hits", "cache_misses", "routing_errors", "avg_routing_time_ms",
    "p95_routing_time_ms", "p99_routing_time_ms", "routing_samples", "reads_to_replicas",
    "reads_to_primary", "writes_to_primary", "replica_fallbacks", "consistency_waits",
    "consistency_fallbacks",
}  # fmt: skip
CACHE_KEYS = {
    "hit_rate", "lookups", "hits", "misses", "total_entries", "max_entries_per_connection",
    "server_side_prepare", "invalidations", "statement_cache", "prepared",
}  # fmt: skip
KINDS = {"postgresql": "server_prepared", "sqlite": "sqlite3", "mysql": "client_text"}
LEARNING_KEYS = {"enabled", "prewarms", "prewarms_used", "prewarms_wasted_or_pending",
                 "prewarm_errors"}  # fmt: skip
TOP_KEYS = {
    "router_metrics", "cache_stats", "pattern_learning", "prewarm", "active_transactions",
    "pinned_sessions", "sessions_expired", "replicas", "function_catalog",
}  # fmt: skip


async def test_report_counts_what_was_routed_with_every_key(
    backend: Backend, make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    router = QueryRouterNode(name="r", connection_pool=pool.name, cache_size=10)
    router.set_connection_pool(pool)
    try:
        await router.process({"query": f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"})
        for _ in range(3):
            await router.process(
                {"query": f"SELECT id FROM {table} WHERE id = ?", "parameters": [1]}
            )
        await router.process({"query": f"INSERT INTO {table} VALUES (?)", "parameters": [1]})
        await router.process({"query": "SELECT * FROM no_such_table_here"})
        m = await router.get_metrics()
    finally:
        await router.process({"query": f"DROP TABLE IF EXISTS {table}"})
        await router.close()
    assert set(m) == TOP_KEYS
    assert set(m["router_metrics"]) == ROUTER_KEYS
    assert set(m["cache_stats"]) == CACHE_KEYS
    assert set(m["pattern_learning"]) == LEARNING_KEYS
    r, c = m["router_metrics"], m["cache_stats"]
    assert (r["queries_routed"], r["routing_samples"], r["routing_errors"]) == (6, 6, 0)
    assert (r["reads_to_primary"], r["writes_to_primary"], r["reads_to_replicas"]) == (4, 2, 0)
    assert c["invalidations"] == 1  # the CREATE TABLE
    assert c["max_entries_per_connection"] == 10 and m["replicas"] == {}
    # no replicas: nothing to decide, so the catalog is never read
    assert m["function_catalog"] == {
        "source": None, "reads": 0, "failed_reads": 0,
        "refreshes": 0, "refresh_changes": 0, "refresh_interval_seconds": None,
    }  # fmt: skip
    assert (r["cache_hits"], r["cache_misses"]) == (c["hits"], c["misses"])
    prepared = backend.name == "postgresql"
    assert c["server_side_prepare"] is prepared
    assert c["statement_cache"] == KINDS[backend.name]
    # each backend's cache (server-side prepared, sqlite3's, the router's per-text one)
    # misses CREATE, the first SELECT, the INSERT and the failed SELECT; 2 SELECTs hit
    assert (c["lookups"], c["hits"], c["hit_rate"]) == (6, 2, 2 / 6)
    p = c["prepared"]
    assert (p["lookups"], p["hits"]) == ((6, 2) if prepared else (0, 0))
    assert p["hit_rate"] == (2 / 6 if prepared else None)
    assert (p["why"] is None) is prepared
    assert m["pattern_learning"]["enabled"] is False


def test_metrics_sections_read_the_counters() -> None:
    m = RouterMetrics(routed=5, routing_errors=1, cache_lookups=4, cache_hits=1, fallbacks=2)
    for seconds in (0.001, 0.003):
        m.routing_time.add(seconds)
    routing = m.routing()
    assert (routing["queries_routed"], routing["routing_errors"]) == (5, 1)
    assert routing["replica_fallbacks"] == 2 and routing["routing_samples"] == 2
    assert abs(routing["avg_routing_time_ms"] - 2.0) < 1e-9
    assert routing["p99_routing_time_ms"] == 3.0
    m.prepared_lookups, m.prepared_hits = 2, 1
    cache = m.cache("server_prepared", True, (7, 7))
    assert cache == {
        "statement_cache": "server_prepared",
        "hit_rate": 0.25,
        "lookups": 4,
        "hits": 1,
        "misses": 3,
        "prepared": {"lookups": 2, "hits": 1, "misses": 1, "hit_rate": 0.5, "why": None},
    }
    text = m.cache("client_text", False, (3, 1))
    assert (text["lookups"], text["hits"], text["hit_rate"]) == (4, 3, 0.75)


async def test_statement_in_a_transaction_hits_the_cache_of_its_pinned_connection(
    backend: Backend, make_pool: PoolFactory, table: str
) -> None:
    pool = make_pool(min_connections=1, max_connections=1)
    router = QueryRouterNode(name="r", connection_pool=pool.name)
    router.set_connection_pool(pool)
    select = {"query": f"SELECT id FROM {table} WHERE id = ?", "parameters": [1]}
    try:
        await router.process({"query": f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"})
        first = await router.process(select)  # prepared here (checkout preferred its text)
        await router.process({"query": "BEGIN", "session_id": "s"})
        pinned = await router.process({**select, "session_id": "s"})  # no preferred text
        await router.process({"query": "COMMIT", "session_id": "s"})
    finally:
        await router.process({"query": f"DROP TABLE IF EXISTS {table}"})
        await router.close()
    cached = backend.name != "mysql"  # a connection's cache: server-side or sqlite3's
    assert first["routing_metadata"]["cache_hit"] is False
    assert pinned["routing_metadata"]["cache_hit"] is cached
    assert pinned["routing_metadata"]["session_id"] == "s"
