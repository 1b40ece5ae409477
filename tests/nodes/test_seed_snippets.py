"""Seed 003's snippets, verbatim but for the import and the connection details."""

from __future__ import annotations

from typing import Any

from kailash_nodes import WorkflowConnectionPool
from tests.conftest import Backend


async def _make_users(backend: Backend, connection: dict[str, Any]) -> None:
    setup = WorkflowConnectionPool(name="setup", **connection, min_connections=1)
    async with setup.connection() as conn:
        await setup.execute(conn, "DROP TABLE IF EXISTS users")
        await setup.execute(
            conn, "CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(20), active BOOLEAN)"
        )
        await setup.execute(
            conn, "INSERT INTO users VALUES (1, 'ann', ?), (2, 'bob', ?)", [True, False]
        )
    await setup.close()


def _connection(backend: Backend) -> dict[str, Any]:
    """The snippet's host/database fields, pointed at the server under test."""
    from kailash_nodes.config import parse_dsn

    kind, fields = parse_dsn(backend.dsn)
    fields.pop("options")
    return {"database_type": kind, **{k: v for k, v in fields.items() if v is not None}}


async def test_before_phase_1_snippet_runs(backend: Backend) -> None:
    connection = _connection(backend)
    await _make_users(backend, connection)
    # --- seed 003, "Before (Phase 1 Only)" (connection fields from the test server) ---
    pool = WorkflowConnectionPool(
        name="db_pool",
        **connection,
        min_connections=5,
        max_connections=20
    )  # fmt: skip

    # Direct query execution
    conn_result = await pool.process({"operation": "acquire"})
    conn_id = conn_result["connection_id"]

    result = await pool.process({
        "operation": "execute",
        "connection_id": conn_id,
        "query": "SELECT * FROM users WHERE active = ?",
        "params": [True]
    })  # fmt: skip

    await pool.process({
        "operation": "release",
        "connection_id": conn_id
    })  # fmt: skip
    # --- end of snippet ---
    assert result["success"], result
    assert [(r["id"], r["name"]) for r in result["data"]] == [(1, "ann")]
    stats = await pool.process({"operation": "stats"})
    assert stats["current_state"]["total_connections"] == 5
    await pool.close()


async def test_old_way_python_api_snippet_runs(backend: Backend) -> None:
    connection = _connection(backend)
    await _make_users(backend, connection)
    pool = WorkflowConnectionPool(name="db_pool", **connection)
    query = "SELECT count(*) AS n FROM users"
    # --- seed 003, "Add Query Router", the old way ---
    conn = await pool.acquire()
    result = await pool.execute(conn, query)
    await pool.release(conn)
    # --- end of snippet ---
    assert result["data"] == [{"n": 2}]
    await pool.close()
