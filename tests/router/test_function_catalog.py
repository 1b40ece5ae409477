"""Replica safety of function calls learned from the primary's catalog, on real servers.

PostgreSQL: the primary and its streaming hot standby (pg_proc). MariaDB: two pools on the
one server, the second named as a replica (information_schema.ROUTINES; a MariaDB replica
is checked for liveness only, so the same server serves as one). Every function is created
under a unique name and dropped after the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiomysql
import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import FunctionCatalog
from kailash_nodes.errors import ConnectionFailed, QueryError
from kailash_nodes.router.engine import QueryRouter
from kailash_nodes.router.functions import FunctionRules
from kailash_nodes.router.plan import PlanCache
from tests.conftest import server_dsn

REPLICA = "replica:replica_pool"


class Bed:
    """A router over a primary pool and a replica pool."""

    def __init__(self, router: QueryRouterNode) -> None:
        self.router = router

    @property
    def engine(self) -> QueryRouter:
        assert self.router.engine is not None
        return self.router.engine

    async def q(self, query: str, session: str | None = None) -> dict[str, Any]:
        inputs: dict[str, Any] = {"query": query}
        if session is not None:
            inputs["session_id"] = session
        res: dict[str, Any] = await self.router.process(inputs)
        return res

    async def target(self, query: str) -> tuple[str, str]:
        """Run ``query``; return where it went and why."""
        res = await self.q(query)
        assert res["success"], res
        meta = res["routing_metadata"]
        return meta["target"], meta["reason"]


@asynccontextmanager
async def make_bed(primary: str, replica: str, **router_options: Any) -> AsyncIterator[Bed]:
    runtime = LocalRuntime()
    options: dict[str, Any] = {"min_connections": 1, "max_connections": 4}
    runtime.register_node(
        "db_pool", WorkflowConnectionPool(name="db_pool", connection_string=primary, **options)
    )
    runtime.register_node(
        "replica_pool",
        WorkflowConnectionPool(name="replica_pool", connection_string=replica, **options),
    )
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", read_replicas=["replica_pool"],
        replica_check_interval=0.2, **router_options,
    )  # fmt: skip
    runtime.register_node("router", router)
    async with runtime:
        yield Bed(router)


def fn_name() -> str:
    return f"kn_fn_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------- PostgreSQL


def pg_function(name: str, volatility: str, parallel: str, arg: str = "int") -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {name}(a {arg}) RETURNS int LANGUAGE sql "
        f"{volatility} PARALLEL {parallel} AS $$ SELECT 1 $$"
    )


async def on_standby(replica: asyncpg.Connection, name: str, count: int) -> None:
    """Wait until the standby has replayed ``count`` overloads of function ``name``."""
    for _ in range(200):
        n = await replica.fetchval("SELECT count(*) FROM pg_proc WHERE proname = $1", name)
        if n == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the standby never had {count} functions {name}")


class Servers:
    """Direct connections to the servers, the functions to drop, and the bed once opened
    (``open``: the router starts, reading the catalog, as the runtime opens)."""

    def __init__(self, primary: Any, replica: Any, dsns: tuple[str, str]) -> None:
        self.primary = primary
        self.replica = replica
        self.dsns = dsns
        self.names: list[str] = []  # functions to drop after the test, as "name(args)"
        self.stack = AsyncExitStack()

    async def open(self, **router_options: Any) -> Bed:
        return await self.stack.enter_async_context(make_bed(*self.dsns, **router_options))


async def stable_on_the_standby(pg: Servers) -> tuple[Bed, str]:
    """Open the bed and create a STABLE PARALLEL SAFE function through the router; return
    the bed and the function's name once the standby has it."""
    bed = await pg.open()
    name = fn_name()
    pg.names.append(f"{name}(int)")
    assert (await bed.q(pg_function(name, "STABLE", "SAFE")))["success"]
    await on_standby(pg.replica, name, 1)
    return bed, name


async def stable_created_elsewhere(pg: Servers) -> str:
    """Create a STABLE PARALLEL SAFE function outside any router; return its name once the
    standby has it."""
    name = fn_name()
    pg.names.append(f"{name}(int)")
    await pg.primary.execute(pg_function(name, "STABLE", "SAFE"))
    await on_standby(pg.replica, name, 1)
    return name


@pytest.fixture
async def pg() -> AsyncIterator[Servers]:
    """Connections to the PostgreSQL primary and standby; the bed opens on demand."""
    dsns = server_dsn("KN_PG_DSN"), server_dsn("KN_PG_REPLICA_DSN")
    servers = Servers(await asyncpg.connect(dsns[0]), await asyncpg.connect(dsns[1]), dsns)
    try:
        async with servers.stack:
            yield servers
    finally:
        for signature in servers.names:
            await servers.primary.execute(f"DROP FUNCTION IF EXISTS {signature}")
        await servers.primary.close()
        await servers.replica.close()


@pytest.mark.postgres
async def test_pg_user_functions_are_judged_by_volatility_and_parallel_safety(pg: Servers) -> None:
    primary, replica = pg.primary, pg.replica
    stable, volatile, unsafe = fn_name(), fn_name(), fn_name()
    pg.names += [f"{n}(int)" for n in (stable, volatile, unsafe)]
    await primary.execute(pg_function(stable, "STABLE", "SAFE"))
    await primary.execute(pg_function(volatile, "VOLATILE", "SAFE"))
    await primary.execute(pg_function(unsafe, "IMMUTABLE", "UNSAFE"))
    await on_standby(replica, unsafe, 1)  # created last: the others are there too
    bed = await pg.open()
    assert await bed.target(f"SELECT {stable}(1) AS x") == (REPLICA, "plain read")
    assert (await bed.target(f"SELECT public.{stable}(id) FROM (VALUES (1)) v(id)"))[0] == REPLICA
    where, why = await bed.target(f"SELECT {volatile}(1)")
    assert where == "primary"
    assert why == f"{volatile}() is not known to be read-only (pg_proc: volatile)"
    where, why = await bed.target(f"SELECT {unsafe}(1)")
    assert (where, why) == ("primary", f"{unsafe}() is not known to be read-only "
                            "(pg_proc: parallel unsafe)")  # fmt: skip


@pytest.mark.postgres
async def test_pg_a_name_is_safe_only_when_every_overload_is(pg: Servers) -> None:
    primary, replica = pg.primary, pg.replica
    name = fn_name()
    pg.names += [f"{name}(int)", f"{name}(text)"]
    await primary.execute(pg_function(name, "STABLE", "SAFE"))
    await primary.execute(pg_function(name, "VOLATILE", "SAFE", arg="text"))
    await on_standby(replica, name, 2)
    bed = await pg.open()
    where, why = await bed.target(f"SELECT {name}(1)")
    assert where == "primary" and why.endswith("(pg_proc: volatile)")


@pytest.mark.postgres
async def test_pg_builtins_that_only_read_run_on_the_standby(pg: Servers) -> None:
    bed = await pg.open()
    res = await bed.q("SELECT pg_is_in_recovery() AS standby, inet_server_port() AS port")
    assert res["routing_metadata"]["target"] == REPLICA
    assert res["data"][0]["standby"] is True  # the standby answered
    for query in ("SELECT now()", "SELECT upper('a')", "SELECT pg_postmaster_start_time()",
                  "SELECT pg_relation_size('pg_class')", "SELECT random()"):  # fmt: skip
        assert (await bed.target(query))[0] == REPLICA, query


@pytest.mark.postgres
async def test_pg_standby_unsafe_builtins_stay_on_the_primary(pg: Servers) -> None:
    bed = await pg.open()
    for query in (  # callable by an ordinary user, each answered by the primary
        "SELECT pg_current_wal_lsn()",
        "SELECT pg_walfile_name('0/1000000')",  # immutable, parallel safe: the denylist
        "SELECT * FROM pg_walfile_name_offset('0/1000000')",
        "SELECT txid_current()",
        "SELECT pg_cancel_backend(0)",
    ):
        assert (await bed.target(query))[0] == "primary", query
    for query in (  # superuser-only or with effects: judged, not run
        "SELECT pg_reload_conf()",
        "SELECT pg_switch_wal()",
        "SELECT pg_terminate_backend(0)",
        "SELECT pg_create_restore_point('x')",
        "SELECT pg_current_xact_id()",
        "SELECT nextval('s')",
        "SELECT pg_advisory_lock(1)",
        "SELECT set_config('a.b', '1', false)",
        "SELECT pg_notify('c', 'p')",
        "SELECT pg_stat_reset()",
        "SELECT pg_drop_replication_slot('s')",
    ):
        assert not bed.engine.functions.classify(query, "postgres").replica_safe, query


@pytest.mark.postgres
async def test_pg_a_function_created_through_the_router_is_learned_at_once(pg: Servers) -> None:
    bed = await pg.open()  # the router starts: the catalog is read now
    name = fn_name()
    pg.names.append(f"{name}(int)")
    assert (await bed.q(pg_function(name, "STABLE", "SAFE")))["success"]
    await on_standby(pg.replica, name, 1)
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA


@pytest.mark.postgres
async def test_pg_a_function_created_elsewhere_is_learned_from_its_first_call(
    pg: Servers,
) -> None:
    bed = await pg.open()
    name = fn_name()
    pg.names.append(f"{name}(int)")
    await pg.primary.execute(pg_function(name, "STABLE", "SAFE"))  # not through the router
    await on_standby(pg.replica, name, 1)
    where, why = await bed.target(f"SELECT {name}(1)")  # not in the catalog read at start
    assert (where, why) == ("primary", f"{name}() is not known to be read-only")
    await bed.engine.functions.wait_loaded()  # the call asked for a read in the background
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    loads = bed.engine.functions.loads
    for _ in range(2):  # a name the catalog still lacks asks once, not on every new text
        await bed.q(f"SELECT {name}_missing(1) /* {uuid.uuid4()} */")  # fails: no such fn
        await bed.engine.functions.wait_loaded()
    assert bed.engine.functions.loads == loads + 1


@pytest.mark.postgres
@pytest.mark.parametrize("refresh", [0.2, 0.0], ids=["refresh", "no-refresh"])
async def test_pg_a_function_replaced_elsewhere_is_seen_at_the_next_refresh(
    pg: Servers, refresh: float
) -> None:
    """A function the catalog names, made VOLATILE by another client: the periodic read
    (``function_catalog_refresh``) sends its calls to the primary within an interval or
    two; with the refresh off they stay on the replica (the documented limit). A read
    that finds nothing changed keeps the classifier and its cache."""
    name = await stable_created_elsewhere(pg)
    bed = await pg.open(function_catalog_refresh=refresh)  # the catalog read at start has it
    functions = bed.engine.functions
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    classify = functions.classify
    for _ in range(100):  # two periodic reads that find nothing new
        if functions.refreshes >= 2 or not refresh:
            break
        await asyncio.sleep(0.05)
    assert functions.refreshes >= (2 if refresh else 0) and functions.refresh_changes == 0
    assert functions.classify is classify  # nothing changed: the classifier and cache stay
    classify = functions.classify
    await pg.primary.execute(pg_function(name, "VOLATILE", "SAFE"))  # not through the router
    where, why = REPLICA, ""
    for _ in range(40):  # up to 2 s: ten refresh intervals
        where, why = await bed.target(f"SELECT {name}(1)")
        if where == "primary":
            break
        await asyncio.sleep(0.05)
    report = (await bed.router.get_metrics())["function_catalog"]
    if refresh:
        assert (where, why) == (
            "primary",
            f"{name}() is not known to be read-only (pg_proc: volatile)",
        )
        assert report["refresh_changes"] == 1 and report["refresh_interval_seconds"] == refresh
        assert functions.classify is not classify
    else:
        assert where == REPLICA and report["refreshes"] == 0
        assert report["refresh_interval_seconds"] is None


@pytest.mark.postgres
async def test_pg_replace_and_drop_through_the_router_change_the_verdict(pg: Servers) -> None:
    bed, name = await stable_on_the_standby(pg)
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    assert (await bed.q(pg_function(name, "VOLATILE", "SAFE")))["success"]
    where, why = await bed.target(f"SELECT {name}(1)")
    assert where == "primary" and why.endswith("(pg_proc: volatile)")
    assert (await bed.q(pg_function(name, "STABLE", "SAFE")))["success"]
    assert (await bed.q(f"DROP FUNCTION {name}(int)"))["success"]
    res = await bed.q(f"SELECT {name}(1)")
    assert res["routing_metadata"]["target"] == "primary" and res["sqlstate"] == "42883"


@pytest.mark.postgres
async def test_pg_function_ddl_in_a_transaction_counts_once_it_ends(pg: Servers) -> None:
    bed, name = await stable_on_the_standby(pg)
    for end, after in (("ROLLBACK", REPLICA), ("COMMIT", "primary")):
        assert (await bed.q("BEGIN", session="tx"))["success"]
        assert (await bed.q(pg_function(name, "VOLATILE", "SAFE"), session="tx"))["success"]
        # open transaction: builtins-only rules for everyone, so the call goes to the primary
        assert (await bed.target(f"SELECT {name}(1)"))[0] == "primary"
        assert (await bed.q(end, session="tx"))["success"]
        await bed.engine.functions.wait_loaded()
        assert (await bed.target(f"SELECT {name}(1)"))[0] == after, end


@pytest.mark.postgres
async def test_pg_function_ddl_whose_answer_is_lost_fails_closed(pg: Servers) -> None:
    bed = await pg.open()
    name, marker = fn_name(), uuid.uuid4().hex
    pg.names.append(f"{name}(int)")
    assert (await bed.q(pg_function(name, "STABLE", "SAFE")))["success"]
    await on_standby(pg.replica, name, 1)
    lost = asyncio.create_task(
        bed.q(f"SELECT pg_sleep(5) /* {marker} */; {pg_function(name, 'VOLATILE', 'SAFE')}")
    )
    pid = None
    for _ in range(200):
        pid = await pg.primary.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
        if pid is not None:
            break
        await asyncio.sleep(0.05)
    assert pid is not None
    await pg.primary.execute("SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(ConnectionFailed):  # OutcomeUnknown: it may have replaced it
        await lost
    assert not bed.engine.functions.classify(f"SELECT {name}(2)", "postgres").replica_safe
    await bed.engine.functions.wait_loaded()  # read again: the replacement never ran
    assert (await bed.target(f"SELECT {name}(3)"))[0] == REPLICA


@pytest.mark.postgres
async def test_pg_a_failed_catalog_read_fails_closed_and_fails_no_statement(
    pg: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await stable_created_elsewhere(pg)
    bed = await pg.open()
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    driver = bed.engine.primary.driver

    async def refused(conn: Any, timeout: float | None) -> None:
        raise QueryError("permission denied for table pg_proc", sqlstate="42501")

    monkeypatch.setattr(type(driver), "function_catalog", refused)
    res = await bed.q(pg_function(name, "STABLE", "SAFE"))  # function DDL: read again
    assert res["success"], res  # the statement stands whatever the catalog read did
    where, why = await bed.target(f"SELECT {name}(1)")
    assert (where, why) == ("primary", f"{name}() is not known to be read-only")
    assert bed.engine.functions.failures == 1 and bed.engine.functions.source == ""


@pytest.mark.postgres
async def test_pg_a_catalog_read_that_failed_at_start_is_retried(
    pg: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await stable_created_elsewhere(pg)
    from kailash_nodes.drivers.postgres import PostgresDriver

    real = PostgresDriver.function_catalog
    calls = 0

    async def refused_once(self: Any, conn: Any, timeout: float | None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # e.g. the primary was briefly unreachable as the router started
            raise ConnectionFailed("the server closed the connection")
        return await real(self, conn, timeout)

    monkeypatch.setattr(PostgresDriver, "function_catalog", refused_once)
    bed = await pg.open()
    functions = bed.engine.functions
    assert (functions.failures, functions.source) == (1, "")
    where, why = await bed.target(f"SELECT {name}(1)")
    assert (where, why) == ("primary", f"{name}() is not known to be read-only")  # closed
    for _ in range(100):  # read again after about 1 s, in the background
        if functions.source:
            break
        await asyncio.sleep(0.05)
    assert functions.source and calls == 2
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    catalog = (await bed.router.get_metrics())["function_catalog"]
    assert catalog == {
        "source": "pg_proc", "reads": 1, "failed_reads": 1,
        "refreshes": 0, "refresh_changes": 0, "refresh_interval_seconds": 60.0,
    }  # fmt: skip


# ---------------------------------------------------------------------- MariaDB


@pytest.fixture
async def maria() -> AsyncIterator[Servers]:
    """A connection to MariaDB; the bed (both pools on this server) opens on demand."""
    dsn = server_dsn("KN_MYSQL_DSN")
    params = PoolConfig.from_options({"connection_string": dsn, "name": "x"}).connect
    conn = await aiomysql.connect(
        host=params.host, port=params.port, user=params.user,
        password=params.password.reveal() if params.password else "", db=params.database,
        autocommit=True,
    )  # fmt: skip
    servers = Servers(conn, None, (dsn, dsn))
    try:
        async with servers.stack:
            yield servers
    finally:
        async with conn.cursor() as cur:
            for name in servers.names:
                await cur.execute(f"DROP FUNCTION IF EXISTS {name}")
        conn.close()


def maria_function(name: str, access: str) -> str:
    return f"CREATE FUNCTION {name}(a INT) RETURNS INT {access} DETERMINISTIC RETURN a + 1"


@pytest.mark.mysql
async def test_maria_declared_data_access_decides(maria: Servers) -> None:
    reads, modifies, nosql = fn_name(), fn_name(), fn_name()
    maria.names += [reads, modifies, nosql]
    async with maria.primary.cursor() as cur:
        await cur.execute(maria_function(reads, "READS SQL DATA"))
        await cur.execute(maria_function(modifies, "MODIFIES SQL DATA"))
        await cur.execute(maria_function(nosql, "NO SQL"))
    bed = await maria.open()
    assert await bed.target(f"SELECT {reads}(1) AS x") == (REPLICA, "plain read")
    assert (await bed.target(f"SELECT {nosql}(1)"))[0] == REPLICA
    assert (await bed.target(f"SELECT kailash_test.{reads}(1)"))[0] == REPLICA
    where, why = await bed.target(f"SELECT {modifies}(1)")
    catalog = "information_schema.ROUTINES: SQL_DATA_ACCESS MODIFIES SQL DATA"
    assert (where, why) == ("primary", f"{modifies}() is not known to be read-only ({catalog})")
    assert (await bed.target("SELECT upper('a'), now()"))[0] == REPLICA  # builtins


@pytest.mark.mysql
async def test_maria_function_ddl_through_the_router_is_learned(maria: Servers) -> None:
    bed = await maria.open()
    name = fn_name()
    maria.names.append(name)
    assert (await bed.q(maria_function(name, "READS SQL DATA")))["success"]
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    assert (await bed.q(f"DROP FUNCTION {name}"))["success"]
    assert (await bed.q(maria_function(name, "MODIFIES SQL DATA")))["success"]
    assert (await bed.target(f"SELECT {name}(1)"))[0] == "primary"


@pytest.mark.mysql
async def test_maria_a_function_altered_elsewhere_is_seen_at_the_next_refresh(
    maria: Servers,
) -> None:
    name = fn_name()
    maria.names.append(name)
    async with maria.primary.cursor() as cur:
        await cur.execute(maria_function(name, "READS SQL DATA"))
    bed = await maria.open(function_catalog_refresh=0.2)
    assert (await bed.target(f"SELECT {name}(1)"))[0] == REPLICA
    async with maria.primary.cursor() as cur:  # not through the router
        await cur.execute(f"ALTER FUNCTION {name} MODIFIES SQL DATA")
    where = REPLICA
    for _ in range(40):  # up to 2 s: ten refresh intervals
        where, _why = await bed.target(f"SELECT {name}(1)")
        if where == "primary":
            break
        await asyncio.sleep(0.05)
    assert where == "primary" and bed.engine.functions.refresh_changes == 1


def test_cache_counts_carry_over_a_new_catalog() -> None:
    # The router's plans sit in front of the rules and are cleared with every new
    # catalog; their counts (cache_stats' client_text reuse) carry over the clearing.
    plans = PlanCache(lambda q: rules.classify(q, "postgres"), "numeric")
    rules = FunctionRules(changed=plans.clear)
    for _ in range(3):
        plans.get("SELECT f(1)")
    assert (plans.lookups - plans.misses, plans.misses) == (2, 1)
    rules.use(FunctionCatalog("pg_proc", frozenset({"f"}), {}, frozenset()))
    assert plans.get("SELECT f(1)").replica_safe  # judged again: a miss
    rules.use(None)
    assert not plans.get("SELECT f(1)").replica_safe  # judged again by the builtins
    assert (plans.lookups - plans.misses, plans.misses) == (2, 3) and rules.source == ""
