"""The router on the real PostgreSQL primary and its streaming hot standby."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

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


@asynccontextmanager
async def make_bed(
    table: str, router_options: dict[str, Any] | None = None, **replica_options: Any
) -> AsyncIterator[Bed]:
    """A primary pool, a replica pool (``replica_options`` override its defaults) and a
    router (``router_options`` too), with ``table`` created on the primary."""
    primary = server_dsn("KN_PG_DSN")
    replica = server_dsn("KN_PG_REPLICA_DSN")
    runtime = LocalRuntime()
    runtime.register_node(
        "db_pool",
        WorkflowConnectionPool(
            name="db_pool", connection_string=primary, min_connections=2, max_connections=6
        ),
    )
    options: dict[str, Any] = {"min_connections": 2, "max_connections": 6, "timeout": 2}
    runtime.register_node(
        "replica_pool",
        WorkflowConnectionPool(
            name="replica_pool", connection_string=replica, **{**options, **replica_options}
        ),
    )
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", read_replicas=["replica_pool"],
        **{"replica_check_interval": 0.2, "session_timeout": 1.0, **(router_options or {})},
    )  # fmt: skip
    runtime.register_node("router", router)
    async with runtime:
        b = Bed(runtime, router, table)
        res = await b.q(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        assert res["success"], res
        yield b
        await b.q(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
async def bed(table: str) -> AsyncIterator[Bed]:
    async with make_bed(table) as b:
        yield b


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
    assert stats["server_side_prepare"] is True  # direct connections: no proxy detected
    # what the replica's connections really hold on the server
    engine = router.engine
    assert engine is not None
    replica = engine.replicas.states[0].pool
    server_side = 0
    await engine.replicas.stop()  # its checks would share the connections queried below
    for entry in replica.entries():
        conn = entry.conn._conn  # type: ignore[attr-defined]
        server_side += await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
    engine.replicas.start()
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


async def test_a_transaction_of_a_workflow_run_holds_every_statement_of_the_run(bed: Bed) -> None:
    from kailash_nodes.context import CausalContext, causal_var

    t = bed.table
    token = causal_var.set(CausalContext("run-42"))  # what the runtime sets for a node
    try:
        await bed.q("BEGIN")
        ins = await bed.q(f"INSERT INTO {t} VALUES (1, 'in run')")
        assert ins["routing_metadata"]["session_id"] == "run-42"
        await bed.q("ROLLBACK")
    finally:
        causal_var.reset(token)
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


# ---------------------------------------------------------------- replica failures and retries


async def _replica(bed: Bed) -> dict[str, Any]:
    replicas: dict[str, Any] = (await bed.router.get_metrics())["replicas"]
    return dict(replicas["replica_pool"])


async def _fallbacks(bed: Bed) -> int:
    return int((await bed.router.get_metrics())["router_metrics"]["replica_fallbacks"])


async def _until_replica_serves(bed: Bed, query: str) -> None:
    """Wait (up to 5 s) until a plain read is served by the replica again."""
    for _ in range(50):
        res = await bed.q(query)
        if res["routing_metadata"]["target"] == "replica:replica_pool":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the replica was not re-admitted within 5 s")


def _replica_admin_dsn(admin: str) -> str:
    """Return the superuser DSN with the replica's port (the standby is a copy of it)."""
    port = urlsplit(server_dsn("KN_PG_REPLICA_DSN")).port
    return admin.replace(f":{urlsplit(admin).port}/", f":{port}/", 1)


async def test_a_replica_killed_mid_read_is_banned_and_the_read_retried_on_the_primary(
    bed: Bed, pg_admin_dsn: str
) -> None:
    marker = f"kn_midread_{uuid.uuid4().hex[:8]}"
    query = f"/* route:replica */ SELECT 7 AS v, '{marker}' AS m FROM pg_sleep(0.5)"
    admin = await asyncpg.connect(_replica_admin_dsn(pg_admin_dsn))
    try:
        before = await _fallbacks(bed)
        read = asyncio.create_task(bed.q(query))
        killed = 0
        for _ in range(100):  # the read is running on the standby: terminate its backend
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}' AS m%",
            )
            if killed:
                break
            await asyncio.sleep(0.02)
        assert killed == 1
        res = await read
    finally:
        await admin.close()
    assert res["success"] and res["data"] == [{"v": 7, "m": marker}], res
    assert res["routing_metadata"]["target"] == "primary"
    assert await _fallbacks(bed) == before + 1
    assert (await _replica(bed))["failures"] >= 1  # banned
    await _until_replica_serves(bed, f"SELECT count(*) FROM {bed.table}")  # and re-admitted


@pytest.mark.parametrize(("timeout", "waits"), [(0.3, 0.3), (8.0, 2.0)])
async def test_a_replica_pool_that_cannot_lend_a_connection_sends_the_read_to_the_primary(
    table: str, timeout: float, waits: float
) -> None:
    # A read waits for a replica connection up to the replica pool's timeout, but never
    # more than 2 s (the replica's checkout_timeout); then the primary serves it.
    async with make_bed(table, min_connections=1, max_connections=2, timeout=timeout) as bed:
        engine = bed.router.engine
        assert engine is not None
        pool = engine.replicas.states[0].pool
        held = [await pool.acquire(), await pool.acquire()]  # the replica pool is exhausted
        try:
            began = asyncio.get_running_loop().time()
            res = await bed.q(f"SELECT count(*) AS n FROM {table}")
            took = asyncio.get_running_loop().time() - began
            assert res["success"] and res["routing_metadata"]["target"] == "primary", res
            assert waits * 0.9 <= took < waits + 3.0, took
            replica = await _replica(bed)
            assert replica["failures"] >= 1 and "within" in (replica["last_error"] or "")
        finally:
            for pc in held:
                await pool.release(pc)
        await _until_replica_serves(bed, f"SELECT count(*) AS n FROM {table}")


@pytest.mark.parametrize("sqlstate", ["40001", "25006"])
async def test_a_read_the_replica_refuses_for_recovery_or_read_only_reruns_on_the_primary(
    bed: Bed, sqlstate: str
) -> None:
    fn = f"{bed.table}_refused"
    engine = bed.router.engine
    assert engine is not None
    async with engine.primary.connection() as pc:
        await engine.primary.execute(
            pc,
            f"CREATE FUNCTION {fn}(code text) RETURNS int LANGUAGE plpgsql AS $f$ BEGIN "
            "IF pg_is_in_recovery() THEN RAISE EXCEPTION 'refused on the standby' "
            "USING ERRCODE = code; END IF; RETURN 1; END $f$",
        )
    try:
        replica = engine.replicas.states[0].pool
        for _ in range(500):  # until the standby has replayed the function (guard: 10 s)
            async with replica.connection() as pc:
                res = await replica.execute(
                    pc, "SELECT count(*) AS n FROM pg_proc WHERE proname = $1", [fn]
                )
            if res.data == [{"n": 1}]:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail(f"the standby did not replay CREATE FUNCTION {fn} within 10 s")
        await engine.replicas.check_all()  # lag and replay position as of now
        before, failures = await _fallbacks(bed), (await _replica(bed))["failures"]
        res = await bed.q(f"/* route:replica */ SELECT {fn}('{sqlstate}') AS v")
        assert res["success"] and res["data"] == [{"v": 1}], res
        assert res["routing_metadata"]["target"] == "primary"
        assert await _fallbacks(bed) == before + 1
        assert (await _replica(bed))["failures"] == failures  # a refusal is not a failure
    finally:
        await bed.q(f"DROP FUNCTION IF EXISTS {fn}(text)")


# ---------------------------------------------------------------- multi-statement strings


async def test_ddl_inside_a_multi_statement_string_drops_prepared_statements(bed: Bed) -> None:
    t = bed.table
    q = f"SELECT * FROM {t} WHERE id = $1 /* route:primary */"
    await bed.q(q, [1])
    engine = bed.router.engine
    assert engine is not None
    before = (await bed.router.get_metrics())["cache_stats"]["invalidations"]
    res = await bed.q(f"BEGIN; ALTER TABLE {t} ADD COLUMN extra int DEFAULT 7; COMMIT")
    assert res["success"] and res["routing_metadata"]["query_type"] == "transaction", res
    assert (await bed.router.get_metrics())["cache_stats"]["invalidations"] == before + 1
    text = f"SELECT * FROM {t} WHERE id = $1 /* route:primary */"
    assert not any(e.conn.has_statement(text) for e in engine.primary.entries())


async def test_a_write_inside_a_multi_statement_string_gives_the_session_a_token(
    bed: Bed,
) -> None:
    t = bed.table
    res = await bed.q(f"BEGIN; INSERT INTO {t} VALUES (1, 'm'); COMMIT", session="multi")
    assert res["success"] and res["routing_metadata"]["target"] == "primary", res
    engine = bed.router.engine
    assert engine is not None
    assert engine.sessions.sessions["multi"].write_lsn > 0  # its reads will see the row
    seen = await bed.q(f"SELECT v FROM {t} WHERE id = 1", session="multi")
    assert seen["data"] == [{"v": "m"}]
    assert (await bed.router.get_metrics())["pinned_sessions"] == 0


async def _terminate_session_backend(bed: Bed, session: str, admin_dsn: str) -> None:
    """Terminate the server backend of the connection pinned to ``session``."""
    pid = (await bed.q("SELECT pg_backend_pid() AS pid", session=session))["data"][0]["pid"]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_session_is_unpinned_when_its_connection_dies_between_statements(
    bed: Bed, pg_admin_dsn: str
) -> None:
    from kailash_nodes import ConnectionFailed

    t = bed.table
    await bed.q("BEGIN", session="dies")
    await bed.q(f"INSERT INTO {t} VALUES (1, 'x')", session="dies")
    await _terminate_session_backend(bed, "dies", pg_admin_dsn)
    await asyncio.sleep(0.1)
    with pytest.raises(ConnectionFailed):
        await bed.q(f"INSERT INTO {t} VALUES (2, 'y')", session="dies")
    metrics = await bed.router.get_metrics()
    assert (metrics["pinned_sessions"], metrics["active_transactions"]) == (0, 0)
    with pytest.raises(SessionError, match="lost its transaction"):
        await bed.q(f"INSERT INTO {t} VALUES (3, 'z')", session="dies")
    assert (await bed.q("BEGIN", session="dies"))["success"]
    assert (await bed.q("ROLLBACK", session="dies"))["success"]
    res = await bed.q(f"SELECT count(*) AS n FROM {t} /* route:primary */")
    assert res["data"] == [{"n": 0}]


async def test_a_session_whose_set_state_died_with_its_connection_is_refused_not_run_without_it(
    bed: Bed, pg_admin_dsn: str
) -> None:
    """SET pins the session's connection; if that connection dies, the next statement would
    run on another one without the setting (a silently different answer): refused instead,
    until end_session (or a new SET/BEGIN)."""
    from kailash_nodes import ConnectionFailed

    assert (await bed.q("SET TimeZone = 'Asia/Tokyo'", session="tz"))["success"]
    shown = await bed.q("SELECT current_setting('TimeZone') AS tz", session="tz")
    assert shown["data"] == [{"tz": "Asia/Tokyo"}]
    await _terminate_session_backend(bed, "tz", pg_admin_dsn)
    await asyncio.sleep(0.1)
    with pytest.raises((ConnectionFailed, SessionError)):
        await bed.q("SELECT current_setting('TimeZone') AS tz", session="tz")
    with pytest.raises(SessionError, match="session state"):
        await bed.q("SELECT current_setting('TimeZone') AS tz", session="tz")
    metrics = await bed.router.get_metrics()
    assert metrics["pinned_sessions"] == 0
    await bed.router.process({"operation": "end_session", "session_id": "tz"})
    again = await bed.q("SELECT 1 AS one", session="tz")
    assert again["success"] and again["data"] == [{"one": 1}]


async def test_the_routers_own_bookkeeping_never_resets_a_connection(bed: Bed) -> None:
    """Replica lag checks, WAL positions after writes and replay polls call builtins
    (pg_last_wal_replay_lsn, pg_current_wal_insert_lsn...): none of them is a user routine
    that could leave a role behind, so none costs a reset (and an emptied statement cache)."""
    t = bed.table
    for i in range(5):
        for sql in ("BEGIN", f"INSERT INTO {t} VALUES ({i}, 'w')", "COMMIT"):
            assert (await bed.q(sql, session="rw"))["success"]
        res = await bed.q(f"SELECT v FROM {t} WHERE id = $1", [i], session="rw")
        assert res["data"] == [{"v": "w"}]
    await asyncio.sleep(0.5)  # the replica monitor checks every 0.2 s
    engine = bed.router.engine
    assert engine is not None
    replica = engine.replicas.states[0].pool
    assert (engine.primary.stats.resets, replica.stats.resets) == (0, 0)


async def test_a_commit_the_server_refuses_ends_the_transaction_and_unpins(bed: Bed) -> None:
    t = bed.table
    deferred = f"ALTER TABLE {t} ADD CONSTRAINT {t}_v UNIQUE (v) DEFERRABLE INITIALLY DEFERRED"
    assert (await bed.q(deferred))["success"]
    for sql in ("BEGIN", f"INSERT INTO {t} VALUES (1, 'd')", f"INSERT INTO {t} VALUES (2, 'd')"):
        assert (await bed.q(sql, session="dup"))["success"]
    res = await bed.q("COMMIT", session="dup")  # the deferred check fails at COMMIT
    assert res["success"] is False and res["sqlstate"] == "23505", res
    metrics = await bed.router.get_metrics()
    assert (metrics["pinned_sessions"], metrics["active_transactions"]) == (0, 0)
    assert (await bed.q("BEGIN", session="dup"))["success"]  # a new transaction, new pin
    assert (await bed.q("ROLLBACK", session="dup"))["success"]
    res = await bed.q(f"SELECT count(*) AS n FROM {t} /* route:primary */")
    assert res["data"] == [{"n": 0}]


async def test_a_session_statement_cancelled_mid_flight_unpins_the_session(bed: Bed) -> None:
    assert (await bed.q("BEGIN", session="cx"))["success"]
    task = asyncio.create_task(bed.q("SELECT pg_sleep(5)", session="cx"))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    metrics = await bed.router.get_metrics()
    assert (metrics["pinned_sessions"], metrics["active_transactions"]) == (0, 0)
    with pytest.raises(SessionError, match="lost its transaction"):
        await bed.q("SELECT 1", session="cx")  # not on the abandoned connection
    assert (await bed.q("BEGIN", session="cx"))["success"]
    assert (await bed.q("ROLLBACK", session="cx"))["success"]
    engine = bed.router.engine
    assert engine is not None
    assert engine.primary.state()["active_connections"] == 0


async def test_the_reaper_unpins_a_session_whose_idle_connection_was_terminated(
    table: str, pg_admin_dsn: str
) -> None:
    async with make_bed(table, {"session_timeout": 30.0}) as bed:
        await bed.q("BEGIN", session="idle")
        await _terminate_session_backend(bed, "idle", pg_admin_dsn)
        for _ in range(50):  # the reaper runs every second or so (hang-guard: 5 s)
            metrics = await bed.router.get_metrics()
            if metrics["pinned_sessions"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (metrics["pinned_sessions"], metrics["active_transactions"]) == (0, 0)
        assert metrics["sessions_expired"] == 0  # not an abandoned session
        with pytest.raises(SessionError, match="lost its transaction"):
            await bed.q("SELECT 1", session="idle")
        engine = bed.router.engine
        assert engine is not None
        assert engine.primary.state()["active_connections"] == 0


async def test_a_commit_answered_with_rollback_is_a_failure_and_unpins(bed: Bed) -> None:
    t = bed.table
    for sql in ("BEGIN", f"INSERT INTO {t} VALUES (1, 'a')"):
        assert (await bed.q(sql, session="rb"))["success"]
    dup = await bed.q(f"INSERT INTO {t} VALUES (1, 'again')", session="rb")
    assert dup["success"] is False and dup["sqlstate"] == "23505"
    res = await bed.q("COMMIT", session="rb")  # the server answers ROLLBACK
    assert res["success"] is False and res["error_type"] == "TransactionRolledBack", res
    metrics = await bed.router.get_metrics()
    assert (metrics["pinned_sessions"], metrics["active_transactions"]) == (0, 0)
    after = await bed.q(f"SELECT count(*) AS n FROM {t} /* route:primary */")
    assert after["data"] == [{"n": 0}]
    assert (await bed.q("BEGIN", session="rb"))["success"]
    assert (await bed.q("ROLLBACK", session="rb"))["success"]
