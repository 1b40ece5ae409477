"""The router through PgBouncer in transaction mode (Debian's pgbouncer, from scripts/db-up).

PgBouncer lends a server connection to a client for one transaction at a time. A statement
prepared on the server under a name stays on the server connection it was prepared on,
which the client's next transaction may not get, while another client's statement of the
same name may be waiting there. The driver detects the proxy when it connects (the
handshake's backend pid is not ``pg_backend_pid()``) and sends only unnamed statements,
which transaction pooling supports: every test here uses the router's default settings.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import KailashNodesError
from tests.conftest import server_dsn

pytestmark = pytest.mark.postgres

CALLERS = 16
ROUNDS = 50


def _router_bed(dsn: str, *, size: int) -> tuple[LocalRuntime, QueryRouterNode]:
    """A runtime holding one pool on ``dsn`` and a router with default settings over it."""
    runtime = LocalRuntime()
    pool = f"pgb_{uuid.uuid4().hex[:6]}"
    runtime.register_node(
        pool,
        WorkflowConnectionPool(
            name=pool, connection_string=dsn, min_connections=min(2, size), max_connections=size
        ),
    )
    router = QueryRouterNode(name=f"router_{pool}", connection_pool=pool, session_timeout=5.0)
    runtime.register_node(router.name, router)
    return runtime, router


async def q(
    router: QueryRouterNode, query: str, params: Any = None, session: str | None = None
) -> Any:
    inputs: dict[str, Any] = {"query": query, "parameters": params}
    if session is not None:
        inputs["session_id"] = session
    return await asyncio.wait_for(router.process(inputs), 30)  # never hang


@pytest.fixture
async def bouncer(table: str) -> AsyncIterator[QueryRouterNode]:
    """A router with default settings over a pool on KN_PGBOUNCER_DSN."""
    runtime, router = _router_bed(server_dsn("KN_PGBOUNCER_DSN"), size=CALLERS)
    async with runtime:
        res = await q(router, f"CREATE TABLE {table} (id int PRIMARY KEY, caller int, v text)")
        assert res["success"], res
        yield router
        await q(router, f"DROP TABLE IF EXISTS {table}")


async def test_the_dsn_reaches_the_primary_through_a_proxy(bouncer: QueryRouterNode) -> None:
    res = await q(bouncer, "SELECT inet_server_port() AS port, current_setting('port') AS cfg")
    row = res["data"][0]
    dsn_port = int(server_dsn("KN_PGBOUNCER_DSN").rsplit(":", 1)[1].split("/")[0])
    assert row["port"] == int(row["cfg"]) != dsn_port  # the server listens elsewhere


async def test_concurrent_callers_with_default_settings_get_correct_results(
    bouncer: QueryRouterNode, table: str
) -> None:
    t = table
    wrong: list[Any] = []
    backends: dict[str, set[int]] = collections.defaultdict(set)  # client conn -> server pids

    async def caller(c: int) -> None:
        for i in range(ROUNDS):
            k = c * 1000 + i
            checks: list[tuple[str, list[Any], Any]] = [
                (f"INSERT INTO {t} VALUES ($1, $2, $3)", [k, c, f"v{k}"], None),
                (f"SELECT v FROM {t} WHERE id = $1", [k], [{"v": f"v{k}"}]),
                ("SELECT $1::int + $2::int AS s, $3::text AS tag", [k, c, f"t{c}"],
                 [{"s": k + c, "tag": f"t{c}"}]),
                (f"SELECT count(*) AS n FROM {t} WHERE caller = $1", [c], [{"n": i + 1}]),
                (f"UPDATE {t} SET v = $2 WHERE id = $1", [k, f"u{k}"], None),
                ("SELECT pg_backend_pid() AS pid", [], None),
            ]  # fmt: skip
            for sql, params, expected in checks:
                res = await q(bouncer, sql, params)
                if not res["success"]:
                    wrong.append((sql, params, res["error"]))
                elif sql.startswith(("INSERT", "UPDATE")) and res["row_count"] != 1:
                    wrong.append((sql, params, res["row_count"]))
                elif expected is not None and res["data"] != expected:
                    wrong.append((sql, params, res["data"]))
                elif "pg_backend_pid" in sql:
                    backends[res["connection_id"].split("#")[0]].add(res["data"][0]["pid"])

    await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    assert wrong == []
    final = await q(
        bouncer, f"SELECT count(*) AS n, count(*) FILTER (WHERE v LIKE 'u%') AS u FROM {t}"
    )
    assert final["data"] == [{"n": CALLERS * ROUNDS, "u": CALLERS * ROUNDS}]
    # Transaction pooling: one client connection was served by several server backends.
    assert max(len(pids) for pids in backends.values()) > 1, dict(backends)

    metrics = await bouncer.get_metrics()
    stats = metrics["cache_stats"]
    assert stats["total_entries"] == 0 and stats["prepared"]["lookups"] == 0
    assert stats["statement_cache"] == "client_text"  # only the router's per-text work
    assert stats["server_side_prepare"] is False  # read from the connections, not the config
    assert metrics["router_metrics"]["routing_errors"] == 0
    engine = bouncer.engine
    assert engine is not None
    for entry in engine.primary.entries():  # no statement was ever prepared by name
        assert entry.conn.behind_proxy is True  # type: ignore[attr-defined]
        assert entry.conn.server_prepare is False
        assert entry.conn.cached_statements() == 0
        assert entry.conn.statements_prepared == 0  # type: ignore[attr-defined]


async def test_session_transaction_rolls_back_through_pgbouncer(
    bouncer: QueryRouterNode, table: str
) -> None:
    t = table
    assert (await q(bouncer, "BEGIN", session="tx"))["success"]
    pid = (await q(bouncer, "SELECT pg_backend_pid() AS p", session="tx"))["data"]
    ins = await q(bouncer, f"INSERT INTO {t} VALUES ($1, $2, $3)", [1, 0, "x"], session="tx")
    assert ins["success"] and ins["row_count"] == 1
    # others run meanwhile on other server connections and do not see the row
    others = await asyncio.gather(*(q(bouncer, f"SELECT count(*) AS n FROM {t}") for _ in range(8)))
    assert all(o["data"] == [{"n": 0}] for o in others)
    inside = await q(bouncer, f"SELECT count(*) AS n FROM {t}", session="tx")
    assert inside["data"] == [{"n": 1}]
    # PgBouncer keeps the transaction on one server backend until it ends
    assert (await q(bouncer, "SELECT pg_backend_pid() AS p", session="tx"))["data"] == pid
    assert (await q(bouncer, "ROLLBACK", session="tx"))["success"]
    after = await q(bouncer, f"SELECT count(*) AS n FROM {t}")
    assert after["data"] == [{"n": 0}]
    metrics = await bouncer.get_metrics()
    # pg_backend_pid() reads session state, so the router keeps the session pinned past
    # the ROLLBACK until the session ends
    assert metrics["active_transactions"] == 0 and metrics["pinned_sessions"] == 1
    await bouncer.process({"operation": "end_session", "session_id": "tx"})
    assert (await bouncer.get_metrics())["pinned_sessions"] == 0


async def test_rotating_statements_never_use_a_named_statement_through_the_proxy() -> None:
    """The case that broke with named statements (a statement prepared on one backend looked
    for on another, 26000): 16 callers rotating 4 statements, default settings. Every
    answer is right, and no statement was prepared by name."""
    runtime, router = _router_bed(server_dsn("KN_PGBOUNCER_DSN"), size=8)
    outcomes: collections.Counter[str] = collections.Counter()
    statements = (
        ("SELECT $1::int AS a", lambda i: [i], lambda i: [{"a": i}]),
        ("SELECT $1::text AS b, $2::text AS c", lambda i: [str(i), "x"],
         lambda i: [{"b": str(i), "c": "x"}]),
        ("SELECT $1::int * 2 AS d", lambda i: [i], lambda i: [{"d": 2 * i}]),
        ("SELECT $1::bigint AS f", lambda i: [i], lambda i: [{"f": i}]),
    )  # fmt: skip

    async def caller(n: int) -> None:
        for i in range(20):
            sql, params, expected = statements[(n + i) % len(statements)]
            try:
                res = await q(router, sql, params(n * 100 + i))
            except KailashNodesError as exc:
                outcomes[f"raised {type(exc).__name__}"] += 1
                continue
            if not res["success"]:
                outcomes[f"{res['sqlstate']} {res['error_type']}"] += 1
            else:
                outcomes["ok" if res["data"] == expected(n * 100 + i) else "wrong"] += 1

    async with runtime:
        await asyncio.wait_for(asyncio.gather(*(caller(n) for n in range(16))), 30)
        engine = router.engine
        assert engine is not None
        prepared = [e.conn.statements_prepared for e in engine.primary.entries()]  # type: ignore[attr-defined]
    assert outcomes == {"ok": 16 * 20}
    assert prepared and sum(prepared) == 0
