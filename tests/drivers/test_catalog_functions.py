"""``Driver.function_catalog`` on every real backend: which functions a replica may run.

Runs against the driver directly, like tests/drivers/test_contract.py: SQLite (no catalog),
the PostgreSQL primary and its standby (the same catalog, replayed), MariaDB.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import DriverConnection, FunctionCatalog, get_driver
from kailash_nodes.errors import ConnectionFailed
from tests.conftest import server_dsn

TIMEOUT = 10.0
TARGETS = {
    "sqlite": None,
    "postgresql": "KN_PG_DSN",
    "postgresql-replica": "KN_PG_REPLICA_DSN",
    "mysql": "KN_MYSQL_DSN",
}
MARKS = {"sqlite": "sqlite", "postgresql": "postgres", "postgresql-replica": "replica"}


class Target:
    def __init__(self, name: str, dsn: str) -> None:
        self.name = name
        self.params = PoolConfig.from_options({"connection_string": dsn, "name": "fc"}).connect
        self.driver = get_driver(self.params.backend)
        self.opened: list[DriverConnection] = []

    async def connect(self) -> DriverConnection:
        conn = await self.driver.connect(self.params, 16)
        self.opened.append(conn)
        return conn


@pytest.fixture(
    params=[pytest.param(n, marks=getattr(pytest.mark, MARKS.get(n, n))) for n in TARGETS]
)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    env = TARGETS[request.param]
    dsn = f"sqlite:///{tmp_path / 'fc.db'}" if env is None else server_dsn(env)
    t = Target(request.param, dsn)
    yield t
    for conn in t.opened:
        if not conn.is_closed():
            await conn.close(TIMEOUT)


async def test_function_catalog_names_what_a_replica_may_run(target: Target) -> None:
    conn = await target.connect()
    catalog = await target.driver.function_catalog(conn, TIMEOUT)
    if target.driver.dialect == "sqlite":
        assert catalog is None  # no catalog, no replicas: the classifier's builtins only
        return
    assert isinstance(catalog, FunctionCatalog)
    assert catalog.safe.isdisjoint(catalog.unsafe) and catalog.builtin <= catalog.unsafe.keys()
    assert all(n == n.lower() for n in catalog.safe | catalog.unsafe.keys())
    if target.driver.dialect == "postgres":
        for name in ("pg_is_in_recovery", "inet_server_port", "now", "upper", "count"):
            assert name in catalog.safe, name
        for name, why in (
            ("pg_walfile_name", "cannot run on a standby, or acts on the server that runs it"),
            ("pg_current_wal_lsn", "cannot run on a standby, or acts on the server that runs it"),
            ("random", "volatile"),
            ("inet_client_port", "parallel restricted"),
            ("txid_current", "cannot run on a standby, or acts on the server that runs it"),
        ):
            assert catalog.unsafe.get(name) == why and name in catalog.builtin, name
        assert catalog.source == "pg_proc"


@pytest.mark.postgres
async def test_pg_function_catalog_keys_qualified_and_search_path_names() -> None:
    target = Target("postgresql", server_dsn("KN_PG_DSN"))
    conn = await target.connect()
    name = f"kn_fc_{uuid.uuid4().hex[:10]}"
    schema = f"kn_fc_s_{uuid.uuid4().hex[:8]}"
    await conn.execute_script(
        f"CREATE SCHEMA {schema}; CREATE FUNCTION {schema}.{name}() RETURNS int LANGUAGE sql "
        f"STABLE PARALLEL SAFE AS $$ SELECT 1 $$; CREATE PROCEDURE {name}() LANGUAGE sql "
        "AS $$ SELECT 1 $$",
        TIMEOUT,
    )
    try:
        catalog = await target.driver.function_catalog(conn, TIMEOUT)
        assert catalog is not None
        assert f"{schema}.{name}" in catalog.safe  # qualified: any schema
        assert name not in catalog.safe  # its schema is not in the search path...
        assert catalog.unsafe[name] == "a procedure"  # ...but public's procedure is
        assert catalog.unsafe[f"public.{name}"] == "a procedure"
        assert name not in catalog.builtin
    finally:
        await conn.execute_script(f"DROP SCHEMA {schema} CASCADE; DROP PROCEDURE {name}()", TIMEOUT)
    for conn in target.opened:
        await conn.close(TIMEOUT)


@pytest.mark.mysql
async def test_maria_function_catalog_reads_declared_data_access() -> None:
    target = Target("mysql", server_dsn("KN_MYSQL_DSN"))
    conn = await target.connect()
    reads, writes = (f"kn_fc_{uuid.uuid4().hex[:10]}" for _ in range(2))
    for name, access in ((reads, "READS SQL DATA"), (writes, "MODIFIES SQL DATA")):
        await conn.execute_script(
            f"CREATE FUNCTION {name}(a INT) RETURNS INT {access} RETURN a", TIMEOUT
        )
    try:
        catalog = await target.driver.function_catalog(conn, TIMEOUT)
        assert catalog is not None and catalog.source == "information_schema.ROUTINES"
        db = str(target.params.database).lower()
        assert {reads, f"{db}.{reads}"} <= catalog.safe
        assert catalog.unsafe[writes] == "SQL_DATA_ACCESS MODIFIES SQL DATA"
        assert catalog.unsafe[f"{db}.{writes}"] == "SQL_DATA_ACCESS MODIFIES SQL DATA"
        assert not catalog.builtin
    finally:
        await conn.execute_script(f"DROP FUNCTION {reads}; DROP FUNCTION {writes}", TIMEOUT)
        for c in target.opened:
            await c.close(TIMEOUT)


async def test_function_catalog_on_a_closed_connection_fails_typed(target: Target) -> None:
    if target.driver.dialect == "sqlite":
        pytest.skip("no catalog: no round trip to fail")
    conn = await target.connect()
    await conn.close(TIMEOUT)
    with pytest.raises(ConnectionFailed):
        await target.driver.function_catalog(conn, TIMEOUT)
