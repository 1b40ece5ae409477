"""Cancellation storm: thousands of tasks cancelled at random points of the pool and router.

Tasks wait for a connection, run a short ``pg_sleep``, hold a transaction (through the pool
API and in router sessions), leave session state (a custom setting, a temp table, an
advisory lock; user variables and ``@@session`` settings on MariaDB; pragmas on SQLite),
give a dirty connection back, make the pool grow, and pre-warm (router, pool and runtime
hooks); each is cancelled after a random delay, a random number of event-loop turns, or
just after it took or began giving back its connection. Afterwards: no connection leaked,
none lent in a transaction or with state left on it, the pool's counts agree with each
other and with the server, and the pool still works. docs/reliability.md has the figures;
``python benchmarks/reliability.py`` is the long mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kailash_nodes import KailashNodesError, LocalRuntime, WorkflowConnectionPool
from kailash_nodes.pool import engine as engine_module
from kailash_nodes.runtime import WorkflowBuilder
from tests.conftest import server_dsn
from tests.reliability.conftest import Figures, ProxyFactory
from tests.reliability.workload import (
    STORM_BED,
    StormReport,
    WriteLedger,
    audit_pool,
    check_writes,
    router_bed,
    run_storm,
)

# 10,000 cancellations in all, as the issue asks of the suite: most on PostgreSQL (the
# router, the replica and pre-warming), 1,000 each on MariaDB and SQLite. About a minute
# on the 2-vCPU VM (docs/reliability.md); the long mode runs more.
PG_CANCELLATIONS = 8000
SMALL_CANCELLATIONS = 1000


def _record(reliability: Figures, report: StormReport) -> None:
    reliability.add(
        f"cancellation storm {report.backend}", cancelled=report.total,
        finished_first=report.finished, seconds=report.seconds,
        where=report.where(), growing=report.cancelled["acquire:growing"],
        errors=dict(report.errors) or "none", samples=report.samples or "none",
        writes_acked=len(report.writes.acked), writes_rolled_back=len(report.writes.failed),
        writes_unknown=len(report.writes.unknown),
        unknown_present=report.writes.unknown_present,
        problems=len(report.problems()),
    )  # fmt: skip


def _phases(report: StormReport) -> set[str]:
    return {phase.split(":")[0] for phase in report.cancelled}


@pytest.mark.postgres
@pytest.mark.replica
async def test_cancellation_storm_leaks_nothing_and_leaves_no_state_on_postgresql(
    reliability: Figures,
) -> None:
    async with router_bed(
        "postgresql", server_dsn("KN_PG_DSN"), replica_dsn=server_dsn("KN_PG_REPLICA_DSN"),
        **STORM_BED,
    ) as bed:  # fmt: skip
        report = await run_storm(bed, cancellations=PG_CANCELLATIONS)
    _record(reliability, report)
    assert report.problems() == []
    assert report.total >= PG_CANCELLATIONS
    assert {"acquire", "query", "session", "release", "workflow"} <= _phases(report)
    assert report.cancelled["acquire:growing"] and report.cancelled["release:dirty"]


@pytest.mark.mysql
async def test_cancellation_storm_leaks_nothing_and_leaves_no_state_on_mariadb(
    reliability: Figures,
) -> None:
    async with router_bed("mysql", server_dsn("KN_MYSQL_DSN"), **STORM_BED) as bed:
        report = await run_storm(bed, cancellations=SMALL_CANCELLATIONS)
    _record(reliability, report)
    assert report.problems() == []
    assert {"acquire", "session", "release"} <= _phases(report)


@pytest.mark.sqlite
async def test_cancellation_storm_leaks_nothing_and_leaves_no_state_on_sqlite(
    reliability: Figures, tmp_path: Path
) -> None:
    async with router_bed("sqlite", f"sqlite:///{tmp_path / 'storm.db'}", **STORM_BED) as bed:
        report = await run_storm(bed, cancellations=SMALL_CANCELLATIONS)
    _record(reliability, report)
    assert report.problems() == []
    assert {"acquire", "session", "release"} <= _phases(report)


# ------------------------------------------------------------------ the checks can fail


@pytest.mark.postgres
async def test_the_audit_sees_a_transaction_state_and_a_stray_backend(table: str) -> None:
    """What the storm and load tests would miss if the audit were blind: state put on idle
    connections behind the pool's back, and a backend the pool does not count."""
    dsn = server_dsn("KN_PG_DSN")
    async with router_bed("postgresql", dsn, min_connections=3, max_connections=3) as bed:
        idle = bed.pool.engine.idle_entries()
        raw = [e.conn._conn for e in idle]  # type: ignore[attr-defined]  # asyncpg underneath
        await raw[0].execute("BEGIN")
        await raw[1].execute("SET kn.mark = 'behind the pool'")
        await raw[2].execute("CREATE TEMP TABLE kn_behind (x int)")
        stray = await asyncpg.connect(
            dsn, server_settings={"application_name": bed.pool.pool_config.connect.application_name}
        )
        try:
            audit = await audit_pool(bed.pool, "postgresql", dsn)
        finally:
            await stray.close()
            await raw[0].execute("ROLLBACK")
        found = " | ".join(audit.problems)
        for expected in ("idle in transaction", "lent while in a transaction", "kn.mark",
                         "temp table", "server has 4 backends"):  # fmt: skip
            assert expected in found, (expected, found)


@pytest.mark.sqlite
async def test_the_write_check_sees_a_lost_a_duplicated_and_a_phantom_write(
    tmp_path: Path,
) -> None:
    async with router_bed("sqlite", f"sqlite:///{tmp_path / 'w.db'}") as bed:
        insert = f"INSERT INTO {bed.table} (id, caller, kind) VALUES (?, 0, 'x')"
        for wid in (1, 2, 2, 3):
            await bed.q(insert, [wid])
        writes = WriteLedger(acked={1, 2, 4}, failed={3})
        await check_writes(bed, writes)
    assert (writes.missing, writes.duplicated, writes.phantom) == ([4], [2], [3])


# ------------------------------------------------------------------ defects found here


class _CountingDriver:
    """The real driver, remembering every connection it opened (to find strays)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.opened: list[Any] = []
        self.on_open: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def connect(self, params: Any, cache_size: int) -> Any:
        conn = await self.inner.connect(params, cache_size)
        self.opened.append(conn)
        if self.on_open is not None:
            self.on_open()
        return conn


@pytest.mark.postgres
async def test_cancelling_the_first_acquire_closes_what_the_opening_made() -> None:
    pool = WorkflowConnectionPool(
        name="kn_rel_first", connection_string=server_dsn("KN_PG_DSN"),
        min_connections=5, max_connections=5,
    )  # fmt: skip
    driver = pool.engine.driver = _CountingDriver(pool.engine.driver)
    first = asyncio.create_task(pool.acquire())
    driver.on_open = first.cancel  # the caller gives up once one connection is open
    await asyncio.gather(first, return_exceptions=True)
    owned = {id(e.conn) for e in pool.engine.entries()}
    strays = [c for c in driver.opened if id(c) not in owned and not c.is_closed()]
    await pool.close()
    for conn in strays:
        conn.terminate()
    assert strays == []


@pytest.mark.postgres
async def test_a_prewarmed_idle_connection_does_not_block_ddl() -> None:
    dsn = server_dsn("KN_PG_DSN")
    async with router_bed("postgresql", dsn, min_connections=1, max_connections=1) as bed:
        query = f"SELECT id FROM {bed.table} WHERE id = $1"
        assert await bed.router.prewarm({"query": query}) == 1
        other = await asyncpg.connect(dsn)
        try:
            await other.execute("SET lock_timeout = '1s'")
            await other.execute(f"ALTER TABLE {bed.table} ADD COLUMN extra int")
        finally:
            await other.close()


@pytest.mark.postgres
async def test_a_cancelled_workflow_returns_the_connection_it_acquired() -> None:
    runtime = LocalRuntime()
    pool = WorkflowConnectionPool(
        name="kn_rel_wf", connection_string=server_dsn("KN_PG_DSN"),
        min_connections=1, max_connections=2,
    )  # fmt: skip
    runtime.register_node("db_pool", pool)
    wf = WorkflowBuilder()
    wf.add_node("get", pool, operation="acquire")
    wf.add_node("run", pool, operation="execute", query="SELECT pg_sleep(5)")
    wf.add_node("put", pool, operation="release")
    wf.add_connection("get", "connection_id", "run", "connection_id")
    wf.add_connection("run", "connection_id", "put", "connection_id")
    async with runtime:
        run = asyncio.create_task(runtime.execute_async(wf.build()))
        await asyncio.sleep(0.3)  # in the sleep, holding the connection "get" acquired
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await asyncio.sleep(0.1)
        active = pool.engine.state()["active_connections"]
        await pool.close(timeout=0.1)  # not the default 5 s wait for the stranded one
    assert active == 0


@pytest.mark.postgres
async def test_a_failed_run_returns_its_connection_and_a_finished_one_keeps_it() -> None:
    """A run that fails after its acquire node can never release (the caller never got the
    id); a run that succeeds hands the id on in its results, so that lease stays."""
    runtime = LocalRuntime()
    pool = WorkflowConnectionPool(
        name="kn_rel_wf2", connection_string=server_dsn("KN_PG_DSN"),
        min_connections=1, max_connections=2,
    )  # fmt: skip
    runtime.register_node("db_pool", pool)
    failing = WorkflowBuilder()
    failing.add_node("get", pool, operation="acquire")
    failing.add_node("run", pool, operation="execute", query="SELECT 1", fetch_mode="bogus")
    failing.add_connection("get", "connection_id", "run", "connection_id")
    keeping = WorkflowBuilder()
    keeping.add_node("get", pool, operation="acquire")
    async with runtime:
        with pytest.raises(KailashNodesError, match="fetch_mode"):
            await runtime.execute_async(failing.build())
        for _ in range(100):
            if pool.engine.state()["active_connections"] == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.engine.state()["active_connections"] == 0
        results, _ = await runtime.execute_async(keeping.build())
        cid = results["get"]["connection_id"]
        assert pool.engine.state()["active_connections"] == 1  # the caller holds it
        res = await pool.process({"operation": "execute", "connection_id": cid,
                                  "query": "SELECT 7 AS v"})  # fmt: skip
        assert res["data"] == [{"v": 7}]
        await pool.process({"operation": "release", "connection_id": cid})
        assert pool.engine.state()["active_connections"] == 0


@pytest.mark.postgres
async def test_closing_the_pool_while_a_replacement_connects_still_closes_the_old_one(
    make_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection retired at the floor waits for its replacement to open before it is
    closed; when the pool closes meanwhile, that wait is cancelled: the old connection
    must be closed all the same, not left open outside the pool."""
    monkeypatch.setattr(engine_module, "CLEANUP_TIMEOUT", 0.2)  # close() waits this long
    proxy = await make_proxy(server_dsn("KN_PG_DSN"))
    pool = WorkflowConnectionPool(
        name="kn_rel_retire", connection_string=proxy.dsn(server_dsn("KN_PG_DSN")),
        min_connections=1, max_connections=2, connect_timeout=30, max_lifetime=0.3,
        maintenance_interval=0.05,
    )  # fmt: skip
    await pool.initialize()
    old = pool.engine.idle_entries()[-1]
    proxy.stall()  # the replacement's connect hangs from here
    for _ in range(250):  # until it is retired by lifetime, its replacement opening
        if old not in pool.engine.entries():
            break
        await asyncio.sleep(0.02)
    await pool.close()
    assert old.conn.is_closed()
