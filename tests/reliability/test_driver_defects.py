"""Regression tests for the driver defects of issue #12, each on the real server where it
happened: named statements behind PgBouncer (1), a role or setting left to the next caller
(2), a COMMIT the server turned into a ROLLBACK (3), COPY through execute and the state of
a connection after a timeout (5), NUL and lone surrogates in the query text (6).

Pools here have one connection, so the next caller gets the connection the last one left.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import InvalidQueryText, UnsupportedStatement
from tests.conftest import Backend, server_dsn

HANG_GUARD = 20.0  # seconds; never a timing assertion, only "it did not hang"


def one_connection_pool(dsn: str, **options: Any) -> WorkflowConnectionPool:
    """A pool of exactly one connection: the next caller gets what the last one left."""
    return WorkflowConnectionPool(
        name=f"d{uuid.uuid4().hex[:6]}",
        connection_string=dsn,
        min_connections=1,
        max_connections=1,
        **options,
    )


async def run(pool: WorkflowConnectionPool, query: str, params: Any = None) -> dict[str, Any]:
    """Run one statement on a connection of its own (acquire, execute, release)."""
    async with pool.connection() as c:
        return await asyncio.wait_for(pool.execute(c, query, params), HANG_GUARD)


def router_bed(dsn: str, **pool_options: Any) -> tuple[LocalRuntime, QueryRouterNode]:
    """A runtime with one pool on ``dsn`` and a router with default settings over it."""
    runtime = LocalRuntime()
    name = f"p{uuid.uuid4().hex[:6]}"
    pool_options.setdefault("min_connections", 1)
    pool_options.setdefault("max_connections", 1)
    runtime.register_node(
        name, WorkflowConnectionPool(name=name, connection_string=dsn, **pool_options)
    )
    router = QueryRouterNode(name=f"r_{name}", connection_pool=name)
    runtime.register_node(router.name, router)
    return runtime, router


async def route(
    router: QueryRouterNode, query: str, params: Any = None, session: str | None = None
) -> dict[str, Any]:
    inputs: dict[str, Any] = {"query": query, "parameters": params}
    if session is not None:
        inputs["session_id"] = session
    return await asyncio.wait_for(router.process(inputs), HANG_GUARD)


# ---------------------------------------------------------------- 1. PgBouncer


@pytest.mark.postgres
async def test_pool_through_pgbouncer_with_defaults_returns_only_right_answers() -> None:
    """The issue's reproduction: 10 tasks x 50 statements, default settings."""
    pool = WorkflowConnectionPool(
        name="pgb_defaults", connection_string=server_dsn("KN_PGBOUNCER_DSN")
    )
    outcomes: collections.Counter[str] = collections.Counter()

    async def task(t: int) -> None:
        for i in range(50):
            j = t * 1000 + i
            async with pool.connection() as c:
                res = await pool.execute(c, f"SELECT ?::int + {j % 7} AS x", [j])
            if not res["success"]:
                outcomes[f"error {res['sqlstate']}"] += 1
            else:
                outcomes["ok" if res["data"] == [{"x": j + j % 7}] else "wrong"] += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(task(t) for t in range(10))), 60)
        entries = pool.engine.entries()
        assert entries and all(e.conn.behind_proxy for e in entries)  # type: ignore[attr-defined]
        assert not any(e.conn.server_prepare for e in entries)
    finally:
        await pool.close()
    assert outcomes == {"ok": 500}


@pytest.mark.postgres
async def test_the_direct_server_is_not_taken_for_a_proxy() -> None:
    pool = one_connection_pool(server_dsn("KN_PG_DSN"))
    try:
        await run(pool, "SELECT 1")
        (entry,) = pool.engine.entries()
        assert entry.conn.behind_proxy is False  # type: ignore[attr-defined]
        assert entry.conn.server_prepare is True
    finally:
        await pool.close()


@pytest.mark.postgres
async def test_a_named_statement_the_server_lost_is_retried_unnamed_and_prepare_turns_off() -> None:
    """A server that does not keep a named statement (here: dropped behind our back, as a
    proxy switching server connections would) gets the statement again, unnamed."""
    pool = one_connection_pool(server_dsn("KN_PG_DSN"))
    try:
        assert (await run(pool, "SELECT $1::int + 1 AS x", [1]))["data"] == [{"x": 2}]
        (entry,) = pool.engine.entries()
        assert entry.conn.cached_statements() == 1
        raw = entry.conn._conn  # type: ignore[attr-defined]  # behind the driver's back
        await raw.execute("DEALLOCATE ALL")
        res = await run(pool, "SELECT $1::int + 1 AS x", [41])
        assert res["success"] and res["data"] == [{"x": 42}], res
        assert entry.conn.server_prepare is False and entry.conn.cached_statements() == 0
        assert (await run(pool, "SELECT $1::int AS y", [7]))["data"] == [{"y": 7}]
    finally:
        await pool.close()


@pytest.mark.postgres
async def test_a_users_own_missing_or_duplicate_statement_name_keeps_prepare_on() -> None:
    pool = one_connection_pool(server_dsn("KN_PG_DSN"))
    try:
        async with pool.connection() as c:
            assert (await pool.execute(c, "SELECT $1::int AS x", [1]))["success"]
            for sql, state in (
                ("EXECUTE kn_user_missing", "26000"),
                ("DEALLOCATE kn_user_missing", "26000"),
                ("PREPARE kn_user_dup AS SELECT 1", None),
                ("PREPARE kn_user_dup AS SELECT 1", "42P05"),
            ):
                res = await pool.execute(c, sql)
                assert res["sqlstate"] == state, (sql, res)
            (entry,) = pool.engine.entries()
            assert entry.conn.server_prepare is True
            assert entry.conn.has_statement("SELECT $1::int AS x")
    finally:
        await pool.close()


@pytest.mark.postgres
async def test_what_counts_as_a_server_refusing_our_named_statements() -> None:
    pool = one_connection_pool(server_dsn("KN_PG_DSN"))
    try:
        await run(pool, "SELECT 1")
        (entry,) = pool.engine.entries()
        conn: Any = entry.conn
        ours = f'prepared statement "{conn._prefix}3" does not exist'
        errors = asyncpg.exceptions
        assert conn._rejects_named(errors.InvalidSQLStatementNameError(ours))
        assert conn._rejects_named(errors.DuplicatePreparedStatementError(ours))
        assert conn._rejects_named(
            errors.FeatureNotSupportedError("prepared statements are not supported")
        )
        assert not conn._rejects_named(
            errors.InvalidSQLStatementNameError('prepared statement "mine" does not exist')
        )
        assert not conn._rejects_named(errors.UniqueViolationError(ours))
    finally:
        await pool.close()


@pytest.mark.postgres
async def test_router_through_pgbouncer_with_defaults_prepares_nothing_by_name() -> None:
    runtime, router = router_bed(server_dsn("KN_PGBOUNCER_DSN"), max_connections=8)
    wrong: list[Any] = []

    async def caller(c: int) -> None:
        for i in range(25):
            k = c * 100 + i
            res = await route(router, "SELECT $1::int * 2 AS d, $2::text AS t", [k, f"c{c}"])
            if not res["success"] or res["data"] != [{"d": 2 * k, "t": f"c{c}"}]:
                wrong.append(res)

    async with runtime:
        await asyncio.gather(*(caller(c) for c in range(10)))
        metrics = await router.get_metrics()
    assert wrong == []
    cache = metrics["cache_stats"]
    assert cache["prepared"]["lookups"] == 0 and cache["total_entries"] == 0
    assert cache["statement_cache"] == "client_text"


# ---------------------------------------------------------------- 2. session state


@pytest.fixture
async def low_role() -> AsyncIterator[str]:
    """A role with no privileges that the test user may SET ROLE to; dropped afterwards."""
    user = server_dsn("KN_PG_DSN").split("//", 1)[1].split(":", 1)[0]
    role = f"kn_low_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn("KN_PG_ADMIN_DSN"))
    try:
        await admin.execute(f"CREATE ROLE {role} NOLOGIN; GRANT {role} TO {user}")
        yield role
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


_WHO = "SELECT current_user AS cu, session_user AS su, current_setting('TimeZone') AS tz"


@pytest.mark.postgres
async def test_set_role_and_settings_do_not_reach_the_next_caller_of_the_pool(
    low_role: str,
) -> None:
    pool = one_connection_pool(server_dsn("KN_PG_DSN"))
    try:
        before = (await run(pool, _WHO))["data"]
        async with pool.connection() as c:
            for sql in (
                f"SET ROLE {low_role}",
                "SET TimeZone = 'Asia/Tokyo'",
                "SELECT set_config('application_name', 'leaked', false)",
                "CREATE TEMP TABLE kn_leak (a int)",
                "LISTEN kn_leak",
                "SELECT pg_advisory_lock(424242)",
                "PREPARE kn_leak AS SELECT 1",
                "DECLARE kn_leak CURSOR WITH HOLD FOR SELECT 1",
            ):
                res = await pool.execute(c, sql)
                assert res["success"], (sql, res)
            assert (await pool.execute(c, _WHO))["data"][0]["cu"] == low_role
        after = await run(
            pool,
            f"{_WHO}, current_setting('application_name') AS app,"
            " to_regclass('pg_temp.kn_leak') IS NULL AS no_temp,"
            " (SELECT count(*) FROM pg_listening_channels()) AS listens,"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "  AND pid = pg_backend_pid()) AS locks,"
            " (SELECT count(*) FROM pg_prepared_statements WHERE name = 'kn_leak') AS prepared,"
            " (SELECT count(*) FROM pg_cursors WHERE name = 'kn_leak') AS cursors",
        )
        row = after["data"][0]
        assert {k: row[k] for k in ("cu", "su", "tz")} == before[0]
        assert row["app"] != "leaked" and row["no_temp"] is True
        assert (row["listens"], row["locks"], row["prepared"], row["cursors"]) == (0, 0, 0, 0)
    finally:
        await pool.close()


@pytest.mark.postgres
async def test_set_role_through_the_router_does_not_reach_the_next_statement(low_role: str) -> None:
    runtime, router = router_bed(server_dsn("KN_PG_DSN"))
    async with runtime:
        user = (await route(router, "SELECT current_user AS u"))["data"][0]["u"]
        assert (await route(router, f"SET ROLE {low_role}"))["success"]
        assert (await route(router, "SELECT current_user AS u"))["data"] == [{"u": user}]
        # in a session, then ended
        assert (await route(router, f"SET ROLE {low_role}", session="s"))["success"]
        inside = await route(router, "SELECT current_user AS u", session="s")
        assert inside["data"] == [{"u": low_role}]
        await router.process({"operation": "end_session", "session_id": "s"})
        assert (await route(router, "SELECT current_user AS u"))["data"] == [{"u": user}]


@pytest.mark.postgres
async def test_a_role_set_inside_a_function_is_reset_before_the_next_caller(low_role: str) -> None:
    """No text shows it (``SELECT fn()``): the server's is_superuser report does."""
    admin = server_dsn("KN_PG_ADMIN_DSN")
    fn = f"kn_become_{uuid.uuid4().hex[:6]}"
    pool = one_connection_pool(admin)
    try:
        await run(
            pool,
            f"CREATE FUNCTION {fn}() RETURNS text LANGUAGE sql AS "
            f"$$ SELECT set_config('role', '{low_role}', false) $$",
        )
        assert (await run(pool, f"SELECT {fn}() AS r"))["success"]
        row = await run(pool, "SELECT current_user AS cu, current_setting('is_superuser') AS su")
        assert row["data"] == [{"cu": "postgres", "su": "on"}]
    finally:
        await run(pool, f"DROP FUNCTION IF EXISTS {fn}()")
        await pool.close()


@pytest.mark.postgres
async def test_a_role_set_inside_a_function_on_a_non_superuser_pool_is_reset(
    low_role: str,
) -> None:
    """The server reports nothing here (neither role is a superuser) and the text shows no
    SET: a call of a user function marks the connection for a reset (fail closed)."""
    fn = f"kn_become_{uuid.uuid4().hex[:6]}"
    pool = one_connection_pool(server_dsn("KN_PG_DSN"))
    runtime, router = router_bed(server_dsn("KN_PG_DSN"))
    try:
        user = (await run(pool, "SELECT current_user AS u"))["data"][0]["u"]
        await run(
            pool,
            f"CREATE FUNCTION {fn}(r text) RETURNS text LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM set_config('role', r, false); RETURN current_user; END $$",
        )
        assert (await run(pool, f"SELECT {fn}($1) AS r", [low_role]))["data"] == [{"r": low_role}]
        assert (await run(pool, "SELECT current_user AS u"))["data"] == [{"u": user}]
        async with runtime:
            assert (await route(router, f"SELECT {fn}($1) AS r", [low_role]))["success"]
            for _ in range(3):  # whichever connection comes next
                assert (await route(router, "SELECT current_user AS u"))["data"] == [{"u": user}]
    finally:
        await run(pool, f"DROP FUNCTION IF EXISTS {fn}(text)")
        await pool.close()


@pytest.mark.postgres
async def test_session_authorization_does_not_reach_the_next_caller() -> None:
    pool = one_connection_pool(server_dsn("KN_PG_ADMIN_DSN"))  # needs a superuser
    user = server_dsn("KN_PG_DSN").split("//", 1)[1].split(":", 1)[0]
    try:
        assert (await run(pool, f"SET SESSION AUTHORIZATION {user}"))["success"]
        row = (await run(pool, "SELECT current_user AS cu, session_user AS su"))["data"]
        assert row == [{"cu": "postgres", "su": "postgres"}]
    finally:
        await pool.close()


def _mariadb_root(sql: str) -> bool:
    """Run ``sql`` as MariaDB's root over scripts/db-up's socket; False if not possible."""
    state = os.environ.get("KN_DB_STATE_DIR")
    sock = f"{state}/run-mariadb/mariadb.sock" if state else ""
    if not (sock and os.path.exists(sock) and shutil.which("mysql")):
        return False
    done = subprocess.run(
        ["mysql", "-S", sock, "-u", "root", "-e", sql], capture_output=True, timeout=20
    )
    return done.returncode == 0


_MARIADB_WHO = "SELECT @x AS x, @y AS y, @v AS v, @@session.sql_mode AS mode, current_role() AS r"
_MARIADB_STATE = (
    "SET @x = 5",
    "SELECT @y := 6 AS y",
    "SELECT 7 INTO @v",
    "SET SESSION sql_mode = 'ANSI'",
    "SET @@session.sql_mode = 'ANSI_QUOTES'",
)


@pytest.fixture
def mariadb_role() -> Iterator[str]:
    """A MariaDB role granted to the test user (made as root over db-up's socket)."""
    dsn = server_dsn("KN_MYSQL_DSN")
    user = dsn.split("//", 1)[1].split(":", 1)[0]
    role = f"kn_low_{uuid.uuid4().hex[:8]}"
    if not _mariadb_root(f"CREATE ROLE {role}; GRANT {role} TO {user}"):
        pytest.skip("creating a MariaDB role needs root over scripts/db-up's socket")
    yield role
    _mariadb_root(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.mysql
async def test_mariadb_variables_and_settings_do_not_reach_the_next_caller() -> None:
    pool = one_connection_pool(server_dsn("KN_MYSQL_DSN"))
    try:
        before = (await run(pool, _MARIADB_WHO))["data"]
        for sql in _MARIADB_STATE:
            assert (await run(pool, sql))["success"], sql
            assert (await run(pool, _MARIADB_WHO))["data"] == before, sql
    finally:
        await pool.close()


@pytest.mark.mysql
async def test_mariadb_set_role_does_not_reach_the_next_caller(mariadb_role: str) -> None:
    pool = one_connection_pool(server_dsn("KN_MYSQL_DSN"))
    try:
        async with pool.connection() as c:
            assert (await pool.execute(c, f"SET ROLE {mariadb_role}"))["success"]
            assert (await pool.execute(c, "SELECT current_role() AS r"))["data"] == [
                {"r": mariadb_role}
            ]
        assert (await run(pool, "SELECT current_role() AS r"))["data"] == [{"r": None}]
    finally:
        await pool.close()


@pytest.mark.mysql
async def test_mariadb_session_state_through_the_router_does_not_reach_the_next_statement(
    mariadb_role: str,
) -> None:
    runtime, router = router_bed(server_dsn("KN_MYSQL_DSN"))
    async with runtime:
        before = (await route(router, _MARIADB_WHO))["data"]
        for sql in (*_MARIADB_STATE, f"SET ROLE {mariadb_role}"):
            assert (await route(router, sql))["success"], sql
            assert (await route(router, _MARIADB_WHO))["data"] == before, sql
        # in a session, then ended
        for sql in ("SET @x = 9", f"SET ROLE {mariadb_role}"):
            assert (await route(router, sql, session="s"))["success"], sql
        inside = (await route(router, "SELECT @x AS x, current_role() AS r", session="s"))["data"]
        assert inside == [{"x": 9, "r": mariadb_role}]
        await router.process({"operation": "end_session", "session_id": "s"})
        assert (await route(router, _MARIADB_WHO))["data"] == before


# ---------------------------------------------------------------- 3. COMMIT answered ROLLBACK


@pytest.mark.postgres
async def test_a_commit_the_server_rolled_back_is_a_typed_failure_in_a_router_session(
    table: str,
) -> None:
    runtime, router = router_bed(server_dsn("KN_PG_DSN"), max_connections=2)
    async with runtime:
        assert (await route(router, f"CREATE TABLE {table} (id int PRIMARY KEY)"))["success"]
        try:
            assert (await route(router, "BEGIN", session="tx"))["success"]
            assert (await route(router, f"INSERT INTO {table} VALUES (1)", session="tx"))["success"]
            dup = await route(router, f"INSERT INTO {table} VALUES (1)", session="tx")
            assert dup["success"] is False and dup["sqlstate"] == "23505"
            commit = await route(router, "COMMIT", session="tx")
            assert commit["success"] is False, commit
            assert commit["error_type"] == "TransactionRolledBack"
            assert commit["sqlstate"] == "40000"
            assert (await route(router, f"SELECT count(*) AS n FROM {table}"))["data"] == [{"n": 0}]
            # the session goes on: a new transaction commits
            assert (await route(router, "BEGIN", session="tx"))["success"]
            assert (await route(router, f"INSERT INTO {table} VALUES (2)", session="tx"))["success"]
            assert (await route(router, "COMMIT", session="tx"))["success"]
            rows = await route(router, f"SELECT id FROM {table}")
            assert rows["data"] == [{"id": 2}]
        finally:
            await route(router, f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
@pytest.mark.parametrize("cache", [256, 0], ids=["prepared", "unprepared"])
@pytest.mark.parametrize("end", ["COMMIT", "END", "commit and chain", "/* c */ COMMIT"])
async def test_every_commit_path_reports_a_rollback(table: str, cache: int, end: str) -> None:
    pool = one_connection_pool(server_dsn("KN_PG_DSN"), statement_cache_size=cache)
    try:
        await run(pool, f"CREATE TABLE {table} (id int PRIMARY KEY)")
        async with pool.connection() as c:
            for sql in ("BEGIN", f"INSERT INTO {table} VALUES (1)"):
                assert (await pool.execute(c, sql))["success"]
            assert not (await pool.execute(c, f"INSERT INTO {table} VALUES (1)"))["success"]
            res = await pool.execute(c, end)
            assert res["error_type"] == "TransactionRolledBack", res
            # a script ending in COMMIT is checked too; a plain ROLLBACK is not a failure
            assert (await pool.execute(c, "ROLLBACK"))["success"]
            assert (await pool.execute(c, "BEGIN; SELECT 1/0"))["success"] is False
            res = await pool.execute(c, "SELECT 1; COMMIT")
            assert res["success"] is False  # SELECT fails in the aborted transaction
            assert (await pool.execute(c, "ROLLBACK"))["success"]
        assert (await run(pool, f"SELECT count(*) AS n FROM {table}"))["data"] == [{"n": 0}]
    finally:
        await run(pool, f"DROP TABLE IF EXISTS {table}")
        await pool.close()


async def test_on_mariadb_and_sqlite_a_failed_statement_leaves_the_rest_to_commit(
    backend: Backend, table: str
) -> None:
    """Documented difference: only PostgreSQL aborts the transaction on a failed statement."""
    if backend.name == "postgresql":
        pytest.skip("PostgreSQL rolls the transaction back (tested above)")
    pool = one_connection_pool(backend.dsn)
    try:
        await run(pool, f"CREATE TABLE {table} (id int PRIMARY KEY)")
        async with pool.connection() as c:
            assert (await pool.execute(c, "BEGIN"))["success"]
            assert (await pool.execute(c, f"INSERT INTO {table} VALUES (1)"))["success"]
            assert not (await pool.execute(c, f"INSERT INTO {table} VALUES (1)"))["success"]
            assert (await pool.execute(c, "COMMIT"))["success"]
        assert (await run(pool, f"SELECT count(*) AS n FROM {table}"))["data"] == [{"n": 1}]
    finally:
        await run(pool, f"DROP TABLE IF EXISTS {table}")
        await pool.close()


# ---------------------------------------------------------------- 5. COPY and timeouts


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql", ["COPY {t} FROM STDIN", "COPY {t} (id) FROM stdin WITH (FORMAT csv)",
            "COPY (SELECT 1) TO STDOUT", "copy {t} to stdout"],
)  # fmt: skip
async def test_copy_through_stdin_or_stdout_is_refused_before_it_is_sent(
    table: str, sql: str
) -> None:
    pool = one_connection_pool(server_dsn("KN_PG_DSN"), query_timeout=5)
    try:
        await run(pool, f"CREATE TABLE {table} (id int)")
        async with pool.connection() as c:
            with pytest.raises(UnsupportedStatement, match="INSERT"):
                await asyncio.wait_for(pool.execute(c, sql.format(t=table)), HANG_GUARD)
            assert (await pool.execute(c, "SELECT 1 AS one"))["data"] == [{"one": 1}]
        assert (await run(pool, "SELECT 2 AS two"))["data"] == [{"two": 2}]
    finally:
        await run(pool, f"DROP TABLE IF EXISTS {table}")
        await pool.close()


_SLOW = {
    "postgresql": "SELECT pg_sleep(3)",
    "mysql": "SELECT SLEEP(3)",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
    "SELECT count(*) FROM c",  # endless: only the timeout stops it
}


async def test_after_a_query_timeout_the_next_caller_gets_a_working_connection(
    backend: Backend,
) -> None:
    """PostgreSQL cancels the statement and SQLite interrupts it, so the connection is
    kept; MySQL's reply would still be on the wire, so that connection is replaced."""
    pool = one_connection_pool(backend.dsn, query_timeout=0.3)
    try:
        await run(pool, "SELECT 1")
        res = await run(pool, _SLOW[backend.name])
        assert res["success"] is False and res["error_type"] == "QueryTimeout", res
        for _ in range(3):
            assert (await run(pool, "SELECT 1 AS one"))["data"] == [{"one": 1}]
        created = (await pool.process({"operation": "stats"}))["connections"]["created"]
        assert created == (2 if backend.name == "mysql" else 1)
    finally:
        await pool.close()


@pytest.mark.mysql
async def test_load_data_local_infile_is_refused_and_the_connection_stays_usable() -> None:
    pool = one_connection_pool(server_dsn("KN_MYSQL_DSN"))
    try:
        async with pool.connection() as c:
            await pool.execute(c, "CREATE TEMPORARY TABLE kn_ld (a int)")
            res = await pool.execute(c, "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE kn_ld")
            assert res["success"] is False and "local infile" in res["error"].lower(), res
            assert (await pool.execute(c, "SELECT count(*) AS n FROM kn_ld"))["data"] == [{"n": 0}]
    finally:
        await pool.close()


# ---------------------------------------------------------------- 6. NUL and surrogates


@pytest.mark.parametrize(
    ("bad", "index"),
    [("SELECT 1 /*\x00*/", 11), ("SELECT 1 AS \ud800x", 12)],
    ids=["nul", "surrogate"],
)
async def test_bad_characters_in_the_text_are_typed_and_harm_nothing(
    backend: Backend, table: str, bad: str, index: int
) -> None:
    pool = one_connection_pool(backend.dsn)
    try:
        await run(pool, f"CREATE TABLE {table} (id int)")
        created = (await pool.process({"operation": "stats"}))["connections"]["created"]
        async with pool.connection() as c:
            assert (await pool.execute(c, "BEGIN"))["success"]
            assert (await pool.execute(c, f"INSERT INTO {table} VALUES (1)"))["success"]
            for _ in range(2):  # the second one comes from the scan cache
                with pytest.raises(InvalidQueryText, match=f"index {index}"):
                    await pool.execute(c, bad)
            assert (await pool.execute(c, "COMMIT"))["success"]
        assert (await run(pool, f"SELECT count(*) AS n FROM {table}"))["data"] == [{"n": 1}]
        stats = await pool.process({"operation": "stats"})
        assert stats["connections"]["created"] == created  # nothing was replaced
    finally:
        await run(pool, f"DROP TABLE IF EXISTS {table}")
        await pool.close()


@pytest.mark.postgres
async def test_bad_text_in_a_router_session_keeps_the_transaction(table: str) -> None:
    runtime, router = router_bed(server_dsn("KN_PG_DSN"), max_connections=2)
    async with runtime:
        assert (await route(router, f"CREATE TABLE {table} (id int)"))["success"]
        try:
            assert (await route(router, "BEGIN", session="tx"))["success"]
            assert (await route(router, f"INSERT INTO {table} VALUES (1)", session="tx"))["success"]
            with pytest.raises(InvalidQueryText, match="index"):
                await route(router, f"INSERT INTO {table} VALUES (2) -- \x00", session="tx")
            assert (await route(router, "COMMIT", session="tx"))["success"]
            rows = await route(router, f"SELECT id FROM {table}")
            assert rows["data"] == [{"id": 1}]
        finally:
            await route(router, f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
async def test_bad_text_read_does_not_ban_a_replica_or_replace_connections() -> None:
    runtime = LocalRuntime()
    for name, env in (("prim", "KN_PG_DSN"), ("repl", "KN_PG_REPLICA_DSN")):
        runtime.register_node(
            name,
            WorkflowConnectionPool(
                name=name, connection_string=server_dsn(env), min_connections=1, max_connections=2
            ),
        )
    router = QueryRouterNode(name="r_bad", connection_pool="prim", read_replicas=["repl"])
    runtime.register_node("r_bad", router)
    async with runtime:
        assert (await route(router, "SELECT 1 AS one"))["success"]
        for bad in ("SELECT 1 -- \x00", "SELECT '\udfff'"):
            with pytest.raises(InvalidQueryText):
                await route(router, bad)
        replica = (await router.get_metrics())["replicas"]["repl"]
        assert replica["healthy"] and replica["failures"] == 0 and replica["last_error"] is None
        for name in ("prim", "repl"):
            stats = await runtime.get_node(name).process({"operation": "stats"})  # type: ignore[attr-defined]
            assert stats["connections"]["failed"] == 0 and stats["connections"]["recycled"] == 0


@pytest.mark.postgres
async def test_a_timeout_through_pgbouncer_leaves_the_connection_usable() -> None:
    pool = one_connection_pool(server_dsn("KN_PGBOUNCER_DSN"), query_timeout=0.3)
    try:
        async with pool.connection() as c:
            res = await asyncio.wait_for(pool.execute(c, "SELECT pg_sleep(3)"), HANG_GUARD)
            assert res["error_type"] == "QueryTimeout", res
            assert (await pool.execute(c, "SELECT 1 AS one"))["data"] == [{"one": 1}]
        assert (await run(pool, "SELECT 2 AS two"))["data"] == [{"two": 2}]
    finally:
        await pool.close()
