"""The router on the real PostgreSQL primary and its streaming hot standby."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, SessionError, WorkflowConnectionPool
from tests.conftest import pg_ctl, server_dsn

pytestmark = pytest.mark.postgres


class Bed:
    """A primary pool, a replica pool and a router, registered in one runtime."""

    def __init__(self, runtime: LocalRuntime, router: QueryRouterNode, table: str) -> None:
        self.runtime = runtime
        self.router = router
        self.table = table

    async def q(self, query: str, params: Any = None, session: str | None = None) -> Any:
        inputs: dict[str, Any] = {"query": query, "parameters": params}
        if session is not None:
            inputs["session_id"] = session
        return await self.router.process(inputs)


@pytest.fixture
async def bed(table: str) -> AsyncIterator[Bed]:
    primary = server_dsn("KN_PG_DSN")
    replica = server_dsn("KN_PG_REPLICA_DSN")
    runtime = LocalRuntime()
    runtime.register_node(
        "db_pool",
        WorkflowConnectionPool(
            name="db_pool", connection_string=primary, min_connections=2, max_connections=6
        ),
    )
    runtime.register_node(
        "replica_pool",
        WorkflowConnectionPool(
            name="replica_pool", connection_string=replica, min_connections=2, max_connections=6,
            timeout=2,
        ),
    )  # fmt: skip
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", read_replicas=["replica_pool"],
        replica_check_interval=0.2, session_timeout=1.0,
    )  # fmt: skip
    runtime.register_node("router", router)
    async with runtime:
        b = Bed(runtime, router, table)
        res = await b.q(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        assert res["success"], res
        yield b
        await b.q(f"DROP TABLE IF EXISTS {table}")


async def test_writes_go_to_the_primary_and_plain_reads_to_the_replica(bed: Bed) -> None:
    t = bed.table
    w = await bed.q(f"INSERT INTO {t} VALUES ($1, $2)", [1, "a"])
    assert w["success"] and w["routing_metadata"]["target"] == "primary"
    await asyncio.sleep(0.3)  # let the standby replay (no session: no read-your-writes)
    r = await bed.q(f"SELECT v FROM {t} WHERE id = ?", [1])
    assert r["data"] == [{"v": "a"}]
    meta = r["routing_metadata"]
    assert meta["target"] == "replica:replica_pool" and meta["query_type"] == "read_simple"
    for sql in (
        f"SELECT v FROM {t} WHERE id = 1 FOR UPDATE",
        f"WITH x AS (UPDATE {t} SET v = 'b' WHERE id = 1 RETURNING id) SELECT * FROM x",
        "SELECT nextval('pg_catalog.pg_class_oid_seq'::regclass) /* never on a replica */",
        f"SELECT 1 FROM {t}; DELETE FROM {t} WHERE id = -1",
    ):
        res = await bed.q(sql)
        assert res["routing_metadata"]["target"] == "primary", (sql, res)


async def test_session_reads_see_their_own_writes_through_the_replica(bed: Bed) -> None:
    t = bed.table
    stale = 0
    for i in range(1000):
        await bed.q(f"INSERT INTO {t} VALUES ($1, $2)", [i, f"v{i}"], session="s1")
        r = await bed.q(f"SELECT v FROM {t} WHERE id = $1", [i], session="s1")
        stale += r["data"] != [{"v": f"v{i}"}]
    assert stale == 0
    m = (await bed.router.get_metrics())["router_metrics"]
    assert m["reads_to_replicas"] > 0  # the replica served reads after catching up


async def test_begin_insert_rollback_leaves_no_row(bed: Bed) -> None:
    t = bed.table
    assert (await bed.q("BEGIN", session="tx"))["success"]
    ins = await bed.q(f"INSERT INTO {t} VALUES (5, 'x')", session="tx")
    assert ins["routing_metadata"]["target"] == "primary"
    inside = await bed.q(f"SELECT count(*) AS n FROM {t}", session="tx")
    assert inside["data"] == [{"n": 1}]  # the session sees its own uncommitted row
    assert (await bed.q("ROLLBACK", session="tx"))["success"]
    after = await bed.q(f"SELECT count(*) AS n FROM {t} /* route:primary */")
    assert after["data"] == [{"n": 0}]
    metrics = await bed.router.get_metrics()
    assert metrics["active_transactions"] == 0 and metrics["pinned_sessions"] == 0


async def test_concurrent_sessions_never_see_each_others_uncommitted_rows(bed: Bed) -> None:
    t = bed.table
    await bed.q("BEGIN", session="a")
    await bed.q("BEGIN", session="b")
    await bed.q(f"INSERT INTO {t} VALUES (1, 'a')", session="a")
    await bed.q(f"INSERT INTO {t} VALUES (2, 'b')", session="b")
    a = await bed.q(f"SELECT id FROM {t} ORDER BY id", session="a")
    b = await bed.q(f"SELECT id FROM {t} ORDER BY id", session="b")
    assert a["data"] == [{"id": 1}] and b["data"] == [{"id": 2}]
    await bed.q("COMMIT", session="a")
    await bed.q("ROLLBACK", session="b")
    res = await bed.q(f"SELECT id FROM {t} ORDER BY id /* route:primary */")
    assert res["data"] == [{"id": 1}]


async def test_savepoints_work_inside_a_session_transaction(bed: Bed) -> None:
    t = bed.table
    for sql in ("BEGIN", f"INSERT INTO {t} VALUES (1, 'keep')", "SAVEPOINT sp"):
        assert (await bed.q(sql, session="sp"))["success"]
    await bed.q(f"INSERT INTO {t} VALUES (2, 'drop')", session="sp")
    await bed.q("ROLLBACK TO SAVEPOINT sp", session="sp")
    await bed.q("COMMIT", session="sp")
    res = await bed.q(f"SELECT id FROM {t} /* route:primary */")
    assert res["data"] == [{"id": 1}]


async def test_transaction_statements_need_a_session(bed: Bed) -> None:
    with pytest.raises(SessionError, match="needs a session_id"):
        await bed.q("BEGIN")
    with pytest.raises(SessionError, match="no open transaction"):
        await bed.q("COMMIT", session="nobody")


async def test_abandoned_session_is_rolled_back_and_its_connection_returned(bed: Bed) -> None:
    t = bed.table
    await bed.q("BEGIN", session="gone")
    await bed.q(f"INSERT INTO {t} VALUES (9, 'x')", session="gone")
    assert (await bed.router.get_metrics())["pinned_sessions"] == 1
    await asyncio.sleep(2.0)  # session_timeout=1.0 in the fixture
    metrics = await bed.router.get_metrics()
    assert metrics["pinned_sessions"] == 0 and metrics["sessions_expired"] == 1
    res = await bed.q(f"SELECT count(*) AS n FROM {t} /* route:primary */")
    assert res["data"] == [{"n": 0}]


async def test_session_settings_stay_in_their_session(bed: Bed) -> None:
    await bed.q("SET statement_timeout = 4321", session="cfg")
    mine = await bed.q("SHOW statement_timeout", session="cfg")
    other = await bed.q("SHOW statement_timeout")
    assert mine["data"] == [{"statement_timeout": "4321ms"}]
    assert other["data"] == [{"statement_timeout": "0"}]
    await bed.router.process({"operation": "end_session", "session_id": "cfg"})
    assert (await bed.router.get_metrics())["pinned_sessions"] == 0


async def test_prepared_statement_hit_rate_matches_the_server(bed: Bed) -> None:
    t = bed.table
    for i in range(50):
        await bed.q(f"INSERT INTO {t} VALUES ($1, 'p')", [i])
    await asyncio.sleep(0.3)
    router = bed.router
    before = (await router.get_metrics())["cache_stats"]
    for i in range(400):
        await bed.q(f"SELECT v FROM {t} WHERE id = $1", [i % 50])
    stats = (await router.get_metrics())["cache_stats"]
    hits = stats["hits"] - before["hits"]
    lookups = stats["lookups"] - before["lookups"]
    assert hits / lookups >= 0.95
    # what the replica's connections really hold on the server
    engine = router.engine
    assert engine is not None
    replica = engine.replicas.states[0].pool
    server_side = 0
    for entry in replica.entries():
        conn = entry.conn._conn  # type: ignore[attr-defined]
        server_side += await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
    assert server_side == sum(e.conn.cached_statements() for e in replica.entries())
    misses = lookups - hits
    assert misses <= len(replica.entries())  # one prepare per connection, then hits


async def test_ddl_drops_prepared_statements_of_its_table(bed: Bed) -> None:
    t = bed.table
    await bed.q(f"INSERT INTO {t} VALUES (1, 'a')")
    for _ in range(3):
        await bed.q(f"SELECT * FROM {t} WHERE id = $1 /* route:primary */", [1])
    res = await bed.q(f"ALTER TABLE {t} ADD COLUMN extra int DEFAULT 7")
    assert res["success"]
    assert (await bed.router.get_metrics())["cache_stats"]["invalidations"] >= 1
    again = await bed.q(f"SELECT * FROM {t} WHERE id = $1 /* route:primary */", [1])
    assert again["success"] and again["data"] == [{"id": 1, "v": "a", "extra": 7}]


@pytest.mark.slow
async def test_stopping_the_replica_under_load_loses_no_request(bed: Bed) -> None:
    ctl = pg_ctl("pg-replica")
    t = bed.table
    await bed.q(f"INSERT INTO {t} VALUES (1, 'a')")
    await asyncio.sleep(0.3)
    failures: list[Any] = []
    targets: list[str] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            try:
                r = await bed.q(f"SELECT v FROM {t} WHERE id = $1", [1])
                if r["data"] != [{"v": "a"}]:
                    failures.append(r)
                targets.append(r["routing_metadata"]["target"])
            except Exception as exc:  # any exception is a lost request
                failures.append(exc)
            await asyncio.sleep(0.002)

    def run(*args: str) -> None:
        subprocess.run([*ctl, *args], check=True, capture_output=True)

    readers = [asyncio.create_task(reader()) for _ in range(8)]
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(run, "-m", "fast", "-w", "stop")
        mark = len(targets)
        await asyncio.sleep(1.5)
        assert set(targets[mark + 50 :]) == {"primary"}  # reads moved to the primary
        # restart on a stopped server starts it with the options it last ran with
        log = f"{os.environ['KN_DB_STATE_DIR']}/logs/pg-replica.log"
        await asyncio.to_thread(run, "-w", "-l", log, "restart")
        back = len(targets)
        for _ in range(100):  # bans double up to 30 s; the monitor lifts them on success
            await asyncio.sleep(0.2)
            if "replica:replica_pool" in targets[back:]:
                break
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert not failures, failures[:3]
    assert "replica:replica_pool" in targets[back:]  # back in rotation
    _ = asyncpg  # the driver under test
    _ = uuid


async def test_a_connection_already_holding_the_statement_is_preferred(bed: Bed) -> None:
    t = bed.table
    engine = bed.router.engine
    assert engine is not None
    pool = engine.primary
    q = f"SELECT v FROM {t} WHERE id = $1 /* route:primary */"
    a = await pool.acquire()
    b = await pool.acquire()
    await pool.release(b)
    await pool.release(a)  # a on top of the idle stack
    first = await bed.q(q, [1])
    assert first["routing_metadata"]["cache_hit"] is False
    holder = first["connection_id"].split("#")[0]
    a = await pool.acquire()
    b = await pool.acquire()
    await pool.release(a)
    await pool.release(b)  # now the other connection is on top
    again = await bed.q(q, [1])
    assert again["routing_metadata"]["cache_hit"] is True
    assert again["connection_id"].split("#")[0] == holder
    assert pool.stats.affinity_picks >= 1


async def test_a_workflow_run_is_a_session_for_every_statement(bed: Bed) -> None:
    from kailash_nodes.context import run_id_var

    t = bed.table
    token = run_id_var.set("run-42")
    try:
        await bed.q("BEGIN")
        ins = await bed.q(f"INSERT INTO {t} VALUES (1, 'in run')")
        assert ins["routing_metadata"]["session_id"] == "run-42"
        await bed.q("ROLLBACK")
    finally:
        run_id_var.reset(token)
    res = await bed.q(f"SELECT count(*) AS n FROM {t} /* route:primary */")
    assert res["data"] == [{"n": 0}]


async def test_a_failed_begin_pins_nothing(bed: Bed) -> None:
    res = await bed.q("BEGIN ISOLATION LEVEL NONSENSE", session="bad")
    assert res["success"] is False
    assert (await bed.router.get_metrics())["pinned_sessions"] == 0
    with pytest.raises(SessionError, match="no open transaction"):
        await bed.q("COMMIT", session="bad")


async def test_statements_after_an_expired_transaction_are_refused(bed: Bed) -> None:
    t = bed.table
    await bed.q("BEGIN", session="late")
    await bed.q(f"INSERT INTO {t} VALUES (3, 'x')", session="late")
    await asyncio.sleep(2.0)  # session_timeout=1.0: rolled back by the reaper
    with pytest.raises(SessionError, match="lost its transaction"):
        await bed.q(f"INSERT INTO {t} VALUES (4, 'y')", session="late")
    assert (await bed.q("BEGIN", session="late"))["success"]  # a new transaction may start
    await bed.q("ROLLBACK", session="late")


async def test_commit_prepared_needs_no_session(bed: Bed) -> None:
    res = await bed.q("COMMIT PREPARED 'kn-no-such-gid'")
    # routed to the primary without a session; the server answers (no such transaction)
    assert res["success"] is False and res["routing_metadata"]["target"] == "primary"


async def test_router_starts_while_its_replica_is_down(table: str) -> None:
    runtime = LocalRuntime()
    runtime.register_node(
        "db_pool", WorkflowConnectionPool(name="db_pool", connection_string=server_dsn("KN_PG_DSN"))
    )
    runtime.register_node(
        "gone",
        WorkflowConnectionPool(
            name="gone", connection_string="postgresql://kailash:kailash@127.0.0.1:1/x",
            connect_timeout=1, min_connections=0,  # opens nothing at start: cannot fail it
        ),
    )  # fmt: skip
    router = QueryRouterNode(name="r", connection_pool="db_pool", read_replicas=["gone"])
    runtime.register_node("router", router)
    async with runtime:
        res = await router.process({"query": "SELECT 1 AS one"})
        assert res["data"] == [{"one": 1}] and res["routing_metadata"]["target"] == "primary"
        assert (await router.get_metrics())["replicas"]["gone"]["healthy"] is False
