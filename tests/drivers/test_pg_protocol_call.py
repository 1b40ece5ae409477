"""The PostgreSQL driver's hot path calls asyncpg's protocol directly (drivers/postgres.py,
"The protocol call"): check that it is live with the asyncpg in use, that another asyncpg
falls back to the public path, and that what the skipped frames did is still done.
Real server only (``KN_PG_DSN``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import get_driver
from kailash_nodes.drivers.postgres import PostgresConnection, _has_protocol_call
from kailash_nodes.errors import QueryError
from tests.conftest import server_dsn

pytestmark = pytest.mark.postgres

TIMEOUT = 10.0
READ = "SELECT n, n * 2 AS twice FROM generate_series(1, $1) AS n"


@pytest.fixture
async def conn() -> AsyncIterator[PostgresConnection]:
    params = PoolConfig.from_options(
        {"connection_string": server_dsn("KN_PG_DSN"), "name": "pc"}
    ).connect
    c = await get_driver("postgresql").connect(params, 16)
    assert isinstance(c, PostgresConnection)
    yield c
    await c.close(TIMEOUT)


@pytest.fixture
def public_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every call of asyncpg's public ``PreparedStatement.fetch``."""
    seen: list[str] = []
    real = PreparedStatement.fetch

    async def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.get_query())
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(PreparedStatement, "fetch", spy)
    return seen


async def test_cached_reads_take_the_protocol_call_with_this_asyncpg(
    conn: PostgresConnection, public_fetches: list[str]
) -> None:
    assert conn._direct, f"asyncpg {asyncpg.__version__}: no protocol call"
    for k in (1, 3, 2):
        rows, count = await conn.fetch(READ, (k,), "all", 100, TIMEOUT)
        assert rows == [{"n": n, "twice": 2 * n} for n in range(1, k + 1)]
        assert count == k
    # the first run prepares and reads through PreparedStatement.fetch; the cached
    # ones go straight to the protocol
    assert public_fetches == [READ]


async def test_an_asyncpg_with_another_protocol_call_takes_the_public_path(
    conn: PostgresConnection, public_fetches: list[str]
) -> None:
    class OtherProtocol:
        async def bind_execute(self, state: Any, args: Any, timeout: Any) -> Any:
            raise AssertionError("never called")

    class OtherConnection:
        _protocol = OtherProtocol()

    assert not _has_protocol_call(OtherConnection())
    assert not _has_protocol_call(object())
    conn._direct = False  # what __init__ sets with such an asyncpg
    for k in (2, 2, 4):
        rows, count = await conn.fetch(READ, (k,), "all", 100, TIMEOUT)
        assert [r["n"] for r in rows] == list(range(1, k + 1)) and count == k
    assert public_fetches == [READ] * 3
    assert conn.statements_prepared == 1


async def test_a_composite_type_changed_elsewhere_fails_one_read_then_reads_again(
    conn: PostgresConnection,
) -> None:
    """asyncpg closes a statement whose rows it decoded with a stale composite type
    (OutdatedSchemaCacheError). That read is reported as a QueryError (it ran: not
    retried); the next one is prepared again, never a connection failure."""
    name = f"kn_pc_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn("KN_PG_DSN"))
    try:
        await admin.execute(
            f"CREATE TYPE {name} AS (a int); CREATE TABLE {name}_t (v {name}); "
            f"INSERT INTO {name}_t VALUES (ROW(1))"
        )
        query = f"SELECT (v).a AS a, v FROM {name}_t"
        for _ in range(2):
            rows, _n = await conn.fetch(query, (), "all", 100, TIMEOUT)
            assert rows[0]["a"] == 1
        await admin.execute(f"ALTER TYPE {name} ADD ATTRIBUTE b text")
        with pytest.raises(QueryError, match="composite type"):
            await conn.fetch(query, (), "all", 100, TIMEOUT)
        prepared = conn.statements_prepared
        for _ in range(2):
            rows, _n = await conn.fetch(query, (), "all", 100, TIMEOUT)
            assert rows[0]["a"] == 1 and tuple(rows[0]["v"]) == (1, None)
        assert conn.statements_prepared == prepared + 1
        assert not conn.is_closed()
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {name}_t; DROP TYPE IF EXISTS {name}")
        await admin.close()
