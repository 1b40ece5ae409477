"""Part 6 of the reliability suite: through PgBouncer in transaction mode, with the defaults.

Concurrent callers through the router and through the pool, every option at its default
(no ``prepare_statements=False``, no ``statement_cache_size=0``). Each caller sends
statements whose answers it can check exactly — parameter values distinct per caller and
round, of several types, reads, writes, row counts and transactions — so a statement that
ran on the wrong server connection, or bound another client's statement, shows up as a
wrong answer. Figures: statements tried, wrong answers, errors (the goal: 0 and 0).
``KN_RELIABILITY_LONG=1`` runs more callers and rounds.

    KN_REQUIRE_SERVERS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -rA \\
        tests/reliability/test_pgbouncer_defaults.py
"""

from __future__ import annotations

import asyncio
import collections
import decimal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import KailashNodesError
from tests.conftest import server_dsn
from tests.reliability.conftest import LONG, Figures

pytestmark = pytest.mark.postgres

CALLERS = 48 if LONG else 16
ROUNDS = 100 if LONG else 12
GUARD = 120.0 if LONG else 45.0  # hang guard for the whole run, never a timing assertion


@dataclass
class Tally:
    """What the callers saw: statements sent, wrong answers, errors (with samples)."""

    statements: int = 0
    wrong: list[Any] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def check(self, sql: str, res: dict[str, Any], expected: Any, rows: int | None) -> None:
        """Count one answer: an error, a wrong answer, or right."""
        self.statements += 1
        if not res["success"]:
            self.errors[f"{res['error_type']} {res['sqlstate']}"] += 1
        elif expected is not None and res["data"] != expected:
            self.wrong.append((sql, res["data"], expected))
        elif rows is not None and res["row_count"] != rows:
            self.wrong.append((sql, res["row_count"], rows))

    def report(self, reliability: Figures, path: str) -> None:
        """Record the figures, then require no wrong answer and no error."""
        reliability.add(
            f"pgbouncer transaction mode, {path} defaults",
            callers=CALLERS,
            statements=self.statements,
            wrong=len(self.wrong),
            errors=sum(self.errors.values()),
        )
        assert self.wrong == [] and self.errors == {}, (self.wrong[:5], self.errors)


Run = Callable[[str, list[Any]], Awaitable[dict[str, Any]]]


async def one_round(run: Run, tally: Tally, t: str, c: int, i: int) -> None:
    """Reads and writes of caller ``c``, round ``i``, each answer checked exactly."""
    k = c * 10_000 + i
    price = decimal.Decimal(k) / 100
    steps: list[tuple[str, list[Any], Any, int | None]] = [
        (f"INSERT INTO {t} (id, caller, v, price) VALUES ($1, $2, $3, $4)",
         [k, c, f"v{k}", price], None, 1),
        (f"SELECT v, price FROM {t} WHERE id = $1", [k], [{"v": f"v{k}", "price": price}], None),
        ("SELECT $1::int + $2::int AS s, $3::text AS tag", [k, c, f"t{c}"],
         [{"s": k + c, "tag": f"t{c}"}], None),
        ("SELECT $1::bigint * 3 AS b", [k], [{"b": 3 * k}], None),
        (f"SELECT {c} + $1::int AS lit", [i], [{"lit": c + i}], None),  # a text per caller
        (f"UPDATE {t} SET v = $2 WHERE id = $1", [k, f"u{k}"], None, 1),
        (f"SELECT count(*) AS n FROM {t} WHERE caller = $1", [c], [{"n": i + 1}], None),
        (f"DELETE FROM {t} WHERE id = $1 AND v = $2", [k, f"nope{k}"], None, 0),
    ]  # fmt: skip
    for sql, params, expected, rows in steps:
        tally.check(sql, await run(sql, params), expected, rows)


async def bounded(calls: list[Awaitable[None]]) -> None:
    await asyncio.wait_for(asyncio.gather(*calls), GUARD)


async def create_table(pool: WorkflowConnectionPool) -> str:
    table = f"kn_pgb_{uuid.uuid4().hex[:8]}"
    async with pool.connection() as c:
        res = await pool.execute(
            c, f"CREATE TABLE {table} (id int PRIMARY KEY, caller int, v text, price numeric)"
        )
    assert res["success"], res
    return table


async def test_router_with_defaults_through_pgbouncer_gives_no_wrong_result(
    reliability: Figures,
) -> None:
    runtime = LocalRuntime()
    pool = WorkflowConnectionPool(name="pgb_pool", connection_string=server_dsn("KN_PGBOUNCER_DSN"))
    router = QueryRouterNode(name="pgb_router", connection_pool="pgb_pool")
    runtime.register_node("pgb_pool", pool)
    runtime.register_node("pgb_router", router)
    tally = Tally()
    async with runtime:
        t = await create_table(pool)

        async def caller(c: int) -> None:
            async def run(sql: str, params: list[Any], session: str | None = None) -> Any:
                inputs = {"query": sql, "parameters": params, "session_id": session}
                try:
                    return await router.process(inputs)
                except KailashNodesError as exc:
                    return {"success": False, "error_type": type(exc).__name__, "sqlstate": None}

            for i in range(ROUNDS):
                await one_round(run, tally, t, c, i)
                if i % 4 == 3:  # a session transaction: its writes land together
                    sid = f"c{c}r{i}"
                    k = -(c * 10_000 + i)
                    for sql, params, rows in (
                        ("BEGIN", [], None),
                        (f"INSERT INTO {t} (id, caller, v) VALUES ($1, $2, 'tx')", [k, -1], 1),
                        (f"UPDATE {t} SET v = 'txu' WHERE id = $1", [k], 1),
                        ("COMMIT", [], None),
                    ):
                        tally.check(sql, await run(sql, params, sid), None, rows)

        try:
            await bounded([caller(c) for c in range(CALLERS)])
            final = await router.process(
                {"query": f"SELECT count(*) FILTER (WHERE v LIKE 'u%') AS u, "
                 f"count(*) FILTER (WHERE v = 'txu') AS tx FROM {t}"}
            )  # fmt: skip
            named = [e.conn.statements_prepared for e in pool.engine.entries()]  # type: ignore[attr-defined]
        finally:
            await router.process({"query": f"DROP TABLE IF EXISTS {t}"})
    tally.report(reliability, "router")
    assert final["data"] == [{"u": CALLERS * ROUNDS, "tx": CALLERS * (ROUNDS // 4)}]
    assert named and sum(named) == 0  # nothing was ever prepared by name


async def test_pool_with_defaults_through_pgbouncer_gives_no_wrong_result(
    reliability: Figures,
) -> None:
    pool = WorkflowConnectionPool(name="pgb_raw", connection_string=server_dsn("KN_PGBOUNCER_DSN"))
    tally = Tally()
    try:
        t = await create_table(pool)

        async def caller(c: int) -> None:
            async def run(sql: str, params: list[Any]) -> Any:
                async with pool.connection() as conn:
                    return await pool.execute(conn, sql, params)

            for i in range(ROUNDS):
                await one_round(run, tally, t, c, i)
                if i % 4 == 3:  # a transaction on one held connection
                    k = -(c * 10_000 + i)
                    async with pool.connection() as conn:
                        for sql, params, rows in (
                            ("BEGIN", [], None),
                            (f"INSERT INTO {t} (id, caller, v) VALUES ($1, $2, 'tx')", [k, -1], 1),
                            (f"SELECT v FROM {t} WHERE id = $1", [k], None),
                            ("COMMIT", [], None),
                        ):
                            tally.check(sql, await pool.execute(conn, sql, params), None, rows)

        await bounded([caller(c) for c in range(CALLERS)])
        async with pool.connection() as conn:
            final = await pool.execute(
                conn, f"SELECT count(*) AS n, count(*) FILTER (WHERE v = 'tx') AS tx FROM {t}"
            )
        named = [e.conn.statements_prepared for e in pool.engine.entries()]  # type: ignore[attr-defined]
    finally:
        async with pool.connection() as conn:
            await pool.execute(conn, f"DROP TABLE IF EXISTS {t}")
        await pool.close()
    tally.report(reliability, "pool")
    expected_tx = CALLERS * (ROUNDS // 4)
    assert final["data"] == [{"n": CALLERS * ROUNDS + expected_tx, "tx": expected_tx}]
    assert named and sum(named) == 0  # nothing was ever prepared by name
