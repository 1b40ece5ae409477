"""Faults under load: cut, stalled and refused connections, killed backends, stopped servers.

Every test checks the same contract (docs/reliability.md, "Faults"):

- callers get typed errors (``kailash_nodes.errors``) within their timeouts, never a hang:
  every await is bounded by a generous hang guard, and a guard that fires fails the test;
- nothing is half-applied: each write group (an autocommit INSERT, or a session
  transaction of two INSERTs) is in the database whole or not at all; an acknowledged group
  is there, a group that failed with a definite error is not, and only a group whose
  outcome was reported unknown (``OutcomeUnknown``/``CommitOutcomeUnknown``) may be either;
- a COMMIT whose answer was lost is reported as ``CommitOutcomeUnknown``, never as a plain
  failure; a read that failed on a replica is served by the primary;
- the pool recovers without caller action; the time from "the server is back" to the first
  successful statement is measured and recorded (``reliability`` fixture).

Faults the tests inject with the proxy go in front of the shared servers (which are never
stopped); stops, restarts and paused replay use the private servers of ``servers.py``.
``KN_RELIABILITY_LONG=1`` repeats each fault more often and loads longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiomysql
import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.config import PoolConfig, parse_dsn
from kailash_nodes.drivers import get_driver
from kailash_nodes.errors import (
    CommitOutcomeUnknown,
    ConnectionFailed,
    KailashNodesError,
    OutcomeUnknown,
    SessionError,
)
from tests.conftest import server_dsn
from tests.reliability.conftest import LONG, Figures, ProxyFactory
from tests.reliability.proxy import S2C, FaultProxy
from tests.reliability.servers import MariaDB, PgCluster, PgServer

T = TypeVar("T")
GUARD = 20.0  # hang guard for one call: far above every timeout configured below
ACQUIRE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
QUERY_TIMEOUT = 5.0
TRIES = 20 if LONG else 3  # deterministic faults: how often each is repeated
LOAD_SECONDS = 20.0 if LONG else 1.5  # load before and after a fault
CALLERS = 40 if LONG else 12


class Hang(AssertionError):
    """A call did not return within the hang guard."""


async def guard(aw: Awaitable[T], seconds: float = GUARD) -> T:
    """Await ``aw``; a call that outlives the guard is a hang (a test failure)."""
    # Not wait_for's TimeoutError: the call's own PoolTimeout is a TimeoutError too.
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise Hang(f"call still running after the {seconds:g}s hang guard")
    return task.result()


# ---------------------------------------------------------------------- the bed


@dataclass
class Bed:
    """A router over a primary pool (and maybe a replica pool) in one LocalRuntime."""

    runtime: LocalRuntime
    router: QueryRouterNode
    primary: WorkflowConnectionPool
    replica: WorkflowConnectionPool | None
    table: str
    check_dsn: str  # the real server (not through the proxy), for checking rows

    async def q(self, query: str, params: Any = None, session: str | None = None) -> Any:
        inputs: dict[str, Any] = {"query": query, "parameters": params}
        if session is not None:
            inputs["session_id"] = session
        return await guard(self.router.process(inputs))

    async def ok(self, query: str, params: Any = None, session: str | None = None) -> Any:
        """Run a statement that must succeed; return its result."""
        res = await self.q(query, params, session)
        assert res["success"], res
        return res

    async def end(self, session: str) -> None:
        """End a session after a failure; a typed error here is fine (its connection died)."""
        with contextlib.suppress(KailashNodesError):
            await guard(self.router.process({"operation": "end_session", "session_id": session}))

    async def groups(self) -> dict[int, int]:
        """Return rows per write group, read on the real server."""
        backend, _ = parse_dsn(self.check_dsn)
        sql = f"SELECT grp, count(*) AS n FROM {self.table} GROUP BY grp"
        if backend == "postgresql":
            conn = await guard(asyncpg.connect(self.check_dsn))
            try:
                return {r["grp"]: r["n"] for r in await guard(conn.fetch(sql))}
            finally:
                await conn.close()
        f = parse_dsn(self.check_dsn)[1]
        conn = await guard(
            aiomysql.connect(
                host=f["host"], port=f["port"], user=f["user"], password=f["password"],
                db=f["database"], autocommit=True,
            )
        )  # fmt: skip
        try:
            async with conn.cursor() as cur:
                await guard(cur.execute(sql))
                return {int(g): int(n) for g, n in await cur.fetchall()}
        finally:
            conn.close()

    async def probe(self, query: str = "SELECT 1 AS one") -> bool:
        """Run one statement; return whether it succeeded (typed errors are a no)."""
        try:
            return bool((await self.q(query))["success"])
        except KailashNodesError:
            return False

    async def recovery(self, since: float, query: str = "SELECT 1 AS one") -> float:
        """Return the seconds from ``since`` to the first successful statement."""
        deadline = time.monotonic() + GUARD
        while not await self.probe(query):
            if time.monotonic() > deadline:
                raise Hang(f"the pool did not serve again within {GUARD:g}s")
            await asyncio.sleep(0.01)
        return time.monotonic() - since


@asynccontextmanager
async def router_bed(
    primary_dsn: str,
    *,
    replica_dsn: str | None = None,
    check_dsn: str | None = None,
    pool: dict[str, Any] | None = None,
    router: dict[str, Any] | None = None,
) -> AsyncIterator[Bed]:
    """A router bed with a fresh table ``(id bigint primary key, grp bigint)``."""
    tag = uuid.uuid4().hex[:8]
    options: dict[str, Any] = {
        "min_connections": 2, "max_connections": 8, "timeout": ACQUIRE_TIMEOUT,
        "connect_timeout": CONNECT_TIMEOUT, "query_timeout": QUERY_TIMEOUT,
        **(pool or {}),
    }  # fmt: skip
    runtime = LocalRuntime()
    primary = WorkflowConnectionPool(name=f"rel_p_{tag}", connection_string=primary_dsn, **options)
    runtime.register_node("db_pool", primary)
    replica = None
    if replica_dsn is not None:
        replica = WorkflowConnectionPool(
            name=f"rel_r_{tag}", connection_string=replica_dsn, **options
        )
        runtime.register_node("replica_pool", replica)
    node = QueryRouterNode(
        name="router", connection_pool="db_pool",
        read_replicas=["replica_pool"] if replica is not None else [],
        replica_check_interval=0.2, session_timeout=10.0, **(router or {}),
    )  # fmt: skip
    runtime.register_node("router", node)
    table = f"rel_{tag}"
    async with runtime:
        bed = Bed(runtime, node, primary, replica, table, check_dsn or primary_dsn)
        await bed.ok(f"CREATE TABLE {table} (id bigint PRIMARY KEY, grp bigint NOT NULL)")
        if replica is not None:  # plain reads may go there at once: let it have the table
            await guard(_replica_has(replica, table))
        try:
            yield bed
        finally:
            with contextlib.suppress(Exception):
                await bed.q(f"DROP TABLE IF EXISTS {table}")


async def _replica_has(replica: WorkflowConnectionPool, table: str) -> None:
    while True:
        with contextlib.suppress(KailashNodesError):
            async with replica.connection() as pc:
                res = await replica.execute(pc, f"SELECT count(*) AS n FROM {table}")
                if res["success"]:
                    return
        await asyncio.sleep(0.02)


def _backend(bed: Bed) -> str:
    return bed.primary.pool_config.connect.backend


async def assert_no_leak(bed: Bed) -> None:
    """Nothing checked out, nobody waiting, no session holding a connection (the replica
    monitor's check holds one for a moment: allow it a second to give it back)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        pools = [p for p in (bed.primary, bed.replica) if p is not None]
        if all(p.engine.state()["active_connections"] == 0 for p in pools):
            break
        await asyncio.sleep(0.01)
    sessions = bed.router.engine.sessions if bed.router.engine is not None else None
    held = [] if sessions is None else list(sessions.sessions.items())
    pinned = {sid: s.in_transaction for sid, s in held if s.pinned}
    assert not pinned, f"sessions still holding a connection: {pinned}"
    for pool in (bed.primary, bed.replica):
        if pool is None:
            continue
        state = pool.engine.state()
        assert state["active_connections"] == 0, (pool.name, state)
        assert state["waiting_requests"] == 0, (pool.name, state)


# ---------------------------------------------------------------------- the workload


@dataclass
class Ledger:
    """What every write group was told, to compare with what the database holds."""

    expected: dict[int, int] = field(default_factory=dict)  # group -> rows if applied
    acked: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)  # definite failure (why): absent
    unknown: set[int] = field(default_factory=set)  # outcome unknown: whole or absent
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)  # hangs, untyped errors
    slowest: float = 0.0  # the longest single call, seconds

    def check(self, rows: dict[int, int]) -> dict[str, int]:
        """Compare with rows per group in the database; return the counts to report."""
        half = {g: n for g, n in rows.items() if n != self.expected.get(g)}
        lost = [g for g in self.acked if rows.get(g) != self.expected[g]]
        phantom = {g: why for g, why in self.failed.items() if g in rows}
        stray = [g for g in rows if g not in self.expected]
        assert not self.violations, self.violations[:5]
        assert not half, f"half-applied groups (group: rows): {dict(list(half.items())[:5])}"
        assert not lost, f"acknowledged writes missing: {lost[:10]}"
        assert not phantom, (
            "writes reported failed (not unknown) but applied: "
            f"{dict(list(phantom.items())[:9])}; outcomes {dict(self.outcomes)}"
        )
        assert not stray, stray[:10]
        return {
            "acked": len(self.acked),
            "failed": len(self.failed),
            "unknown": len(self.unknown),
            "unknown_applied": sum(1 for g in self.unknown if g in rows),
            "lost": 0,
        }


class Workload:
    """Callers running mixed reads, autocommit writes and session transactions."""

    def __init__(self, bed: Bed, callers: int = CALLERS, *, reads: float = 0.4) -> None:
        self.bed = bed
        self.callers = callers
        self.reads = reads
        self.ledger = Ledger()
        self.read_targets: Counter[str] = Counter()
        self.wrong_reads: list[Any] = []
        self.samples: dict[str, str] = {}  # one traceback per kind of error, for diagnosis
        self._ids = itertools.count(1)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random(12)

    async def __aenter__(self) -> Workload:
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(self.callers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await guard(asyncio.gather(*self._tasks), GUARD * 2)

    async def _caller(self, n: int) -> None:
        while not self._stop.is_set():
            r = self._rng.random()
            group = next(self._ids)
            began = time.monotonic()
            kind = "read" if r < self.reads else "write" if r < (1 + self.reads) / 2 else "tx"
            try:
                await getattr(self, f"_{kind}")(group, f"w{n}-{group}")
            except Hang as exc:
                self.ledger.violations.append(f"{kind} {group}: {exc}")
            except KailashNodesError as exc:
                key = f"{kind}:{type(exc).__name__}"
                self.ledger.outcomes[key] += 1
                self.samples.setdefault(key, "".join(traceback.format_exception(exc)))
                await asyncio.sleep(0.01)
            except Exception as exc:  # untyped: a defect
                self.ledger.violations.append(f"{kind} {group}: {type(exc).__name__}: {exc}")
            self.ledger.slowest = max(self.ledger.slowest, time.monotonic() - began)
            await asyncio.sleep(0)

    def failed(self, kind: str) -> dict[str, int]:
        """Return the counts of failed calls of ``kind`` (read, write, tx), by error."""
        out = self.ledger.outcomes.items()
        return {k: v for k, v in out if k.startswith(f"{kind}:") and k != f"{kind}:ok"}

    def _classify(self, group: int, exc: BaseException) -> None:
        if isinstance(exc, OutcomeUnknown):
            self.ledger.unknown.add(group)
        else:
            self.ledger.failed[group] = f"raised {type(exc).__name__}"

    def _answered(self, group: int, what: str, res: dict[str, Any]) -> None:
        if res["success"]:
            self.ledger.acked.add(group)
        else:
            self.ledger.failed[group] = f"{what}: success False, {res['error_type']}"

    async def _read(self, group: int, session: str) -> None:
        res = await self.bed.q(f"SELECT count(*) AS n FROM {self.bed.table}")
        if res["success"]:
            self.read_targets[res["routing_metadata"]["target"]] += 1
            if not (isinstance(res["data"], list) and res["data"][0]["n"] >= 0):
                self.wrong_reads.append(res)
        self.ledger.outcomes["read:" + ("ok" if res["success"] else res["error_type"])] += 1

    async def _write(self, group: int, session: str) -> None:
        self.ledger.expected[group] = 1
        try:
            res = await self.bed.q(f"INSERT INTO {self.bed.table} VALUES (?, ?)", [group, group])
        except KailashNodesError as exc:
            self._classify(group, exc)
            raise
        self._answered(group, "INSERT", res)
        self.ledger.outcomes["write:" + ("ok" if res["success"] else res["error_type"])] += 1

    async def _tx(self, group: int, sid: str) -> None:
        self.ledger.expected[group] = 2
        t = self.bed.table
        committing = False
        try:
            for sql, params in (
                ("BEGIN", None),
                (f"INSERT INTO {t} VALUES (?, ?)", [-2 * group, group]),
                (f"INSERT INTO {t} VALUES (?, ?)", [-2 * group - 1, group]),
            ):
                res = await self.bed.q(sql, params, session=sid)
                if not res["success"]:
                    self.ledger.failed[group] = f"{sql.split()[0]}: {res['error_type']}"
                    self.ledger.outcomes[f"tx:{res['error_type']}"] += 1
                    await self.bed.end(sid)
                    return
            committing = True
            res = await self.bed.q("COMMIT", session=sid)
        except KailashNodesError as exc:
            if committing:
                self._classify(group, exc)
            else:
                self.ledger.failed[group] = f"before COMMIT: raised {type(exc).__name__}"
            await self.bed.end(sid)
            raise
        self._answered(group, "COMMIT", res)
        self.ledger.outcomes["tx:" + ("ok" if res["success"] else res["error_type"])] += 1
        await self.bed.end(sid)


async def run_fault(
    bed: Bed,
    fault: Callable[[], Awaitable[None]],
    back: Callable[[], Awaitable[None]] | None = None,
    *,
    down: float = 0.5,
    callers: int = CALLERS,
) -> tuple[Workload, float]:
    """Load the bed, inject ``fault``, wait ``down`` s, undo it with ``back`` and measure
    the seconds from the end of ``back`` to the first successful statement."""
    async with Workload(bed, callers) as load:
        await asyncio.sleep(LOAD_SECONDS / 2)
        await guard(fault(), 120)
        await asyncio.sleep(down)
        if back is not None:
            await guard(back(), 120)
        recovered = await bed.recovery(time.monotonic())
        await asyncio.sleep(LOAD_SECONDS / 2)
    return load, recovered


def report(
    figures: Figures,
    fault: str,
    load: Workload,
    recovered: float,
    counts: dict[str, int],
    **kw: Any,
) -> None:
    """Record the figures of one fault (printed at the end of the run)."""
    errors = {k: v for k, v in load.ledger.outcomes.items() if not k.endswith(":ok")}
    figures.add(
        fault, **counts, recover_s=recovered, slowest_call_s=load.ledger.slowest,
        errors=dict(errors), **kw,
    )  # fmt: skip


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
async def proxied(make_proxy: ProxyFactory) -> AsyncIterator[tuple[Bed, FaultProxy]]:
    """A router bed whose primary pool reaches the shared primary through a proxy."""
    dsn = server_dsn("KN_PG_DSN")
    proxy = await make_proxy(dsn)
    async with router_bed(proxy.dsn(dsn), check_dsn=dsn) as bed:
        yield bed, proxy
        await proxy.restore()


@pytest.fixture(params=[pytest.param("postgresql"), pytest.param("mysql", marks=pytest.mark.mysql)])
async def proxied_db(
    request: pytest.FixtureRequest, make_proxy: ProxyFactory
) -> AsyncIterator[tuple[Bed, FaultProxy]]:
    """A router bed behind a proxy: on the shared PostgreSQL primary, or on the private
    MariaDB (the shared one serves other tests that do not expect cut connections)."""
    if request.param == "postgresql":
        dsn = server_dsn("KN_PG_DSN")
    else:
        dsn = request.getfixturevalue("private_mariadb").dsn
    proxy = await make_proxy(dsn)
    async with router_bed(proxy.dsn(dsn), check_dsn=dsn) as bed:
        yield bed, proxy
        await proxy.restore()


pytestmark = pytest.mark.postgres


# ---------------------------------------------------------------------- proxy: cuts


async def test_cut_mid_query_fails_typed_and_the_pool_recovers(
    proxied: tuple[Bed, FaultProxy], reliability: Figures
) -> None:
    bed, proxy = proxied
    recover = []
    for _ in range(TRIES):
        rule = proxy.cut_on_statement(r"pg_sleep", forward=True)
        with pytest.raises(ConnectionFailed):
            await bed.q("SELECT pg_sleep(2) AS slept")
        assert rule.fired == 1
        recover.append(await bed.recovery(time.monotonic()))
    await assert_no_leak(bed)
    reliability.add("cut mid-query (read)", tries=TRIES, lost=0, recover_s=max(recover))


async def test_cut_mid_transaction_applies_nothing_and_frees_the_session(
    proxied: tuple[Bed, FaultProxy], reliability: Figures
) -> None:
    bed, proxy = proxied
    t = bed.table
    recover = []
    for k in range(TRIES):
        sid = f"mid-{k}"
        await bed.ok("BEGIN", session=sid)
        await bed.ok(f"INSERT INTO {t} VALUES (?, ?)", [k, k], session=sid)
        proxy.cut_on_statement(rf"INSERT INTO {t}")  # the second INSERT never arrives
        with pytest.raises(ConnectionFailed):
            await bed.q(f"INSERT INTO {t} VALUES (?, ?)", [1000 + k, k], session=sid)
        with pytest.raises(SessionError):  # the transaction died with its connection
            await bed.q("COMMIT", session=sid)
        cut = time.monotonic()
        # the session is not pinned to the dead connection: a new transaction works
        await bed.ok("BEGIN", session=sid)
        await bed.ok(f"INSERT INTO {t} VALUES (?, ?)", [5000 + k, 5000 + k], session=sid)
        await bed.ok("COMMIT", session=sid)
        recover.append(time.monotonic() - cut)
    assert await bed.groups() == {5000 + k: 1 for k in range(TRIES)}
    await assert_no_leak(bed)
    reliability.add("cut mid-transaction", tries=TRIES, lost=0, recover_s=max(recover))


async def _commit_with_cut(bed: Bed, proxy: FaultProxy, sid: str, group: int, where: str) -> None:
    t = bed.table
    await bed.ok("BEGIN", session=sid)
    for row in (2 * group, 2 * group + 1):
        await bed.ok(f"INSERT INTO {t} VALUES (?, ?)", [row, group], session=sid)
    if where == "before":  # COMMIT never reaches the server
        rule = proxy.cut_on_statement(r"^\s*COMMIT\b")
    else:  # the server commits; its answer never reaches the client
        rule = proxy.cut_on_answer_to(r"^\s*COMMIT\b")
    with pytest.raises(CommitOutcomeUnknown):
        await bed.q("COMMIT", session=sid)
    assert rule.fired == 1


@pytest.mark.parametrize("where", ["before", "after"])
async def test_cut_mid_commit_is_reported_as_outcome_unknown(
    proxied_db: tuple[Bed, FaultProxy], reliability: Figures, where: str
) -> None:
    """Cut before COMMIT reaches the server (nothing committed) or after the server
    committed (the answer is lost): either way the caller cannot know, and is told so."""
    bed, proxy = proxied_db
    recover = []
    for k in range(TRIES):
        await _commit_with_cut(bed, proxy, f"c-{k}", k, where)
        cut = time.monotonic()
        await bed.ok("BEGIN", session=f"c-{k}")  # not pinned to the dead one
        await bed.ok("ROLLBACK", session=f"c-{k}")
        recover.append(time.monotonic() - cut)
    expected = {} if where == "before" else {k: 2 for k in range(TRIES)}
    assert await bed.groups() == expected  # whole or nothing, never half
    await assert_no_leak(bed)
    reliability.add(
        f"cut mid-COMMIT ({where} the server got it, {_backend(bed)})", tries=TRIES, lost=0,
        committed=len(expected), recover_s=max(recover),
    )  # fmt: skip


async def test_lost_answer_to_an_autocommit_write_is_outcome_unknown(
    proxied_db: tuple[Bed, FaultProxy], reliability: Figures
) -> None:
    bed, proxy = proxied_db
    for k in range(TRIES):
        proxy.cut_on_answer_to(r"^\s*INSERT\b")
        with pytest.raises(OutcomeUnknown):
            await bed.q(f"INSERT INTO {bed.table} VALUES (?, ?)", [k, k])
    assert await bed.groups() == {k: 1 for k in range(TRIES)}  # the server did apply them
    reliability.add(f"lost answer to an autocommit INSERT ({_backend(bed)})", tries=TRIES, lost=0)


@pytest.mark.parametrize("statement", ["INSERT", "COMMIT"])
@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql"), pytest.param("mysql", marks=pytest.mark.mysql)]
)
async def test_answer_held_past_query_timeout_is_outcome_unknown(
    request: pytest.FixtureRequest,
    make_proxy: ProxyFactory,
    reliability: Figures,
    statement: str,
    backend: str,
) -> None:
    """The server applies the statement; its answer is held (no reset) until the caller's
    query_timeout has passed. The caller cannot know the outcome, and must be told so."""
    if backend == "postgresql":
        dsn = server_dsn("KN_PG_DSN")
    else:
        dsn = request.getfixturevalue("private_mariadb").dsn
    proxy = await make_proxy(dsn)
    async with router_bed(proxy.dsn(dsn), check_dsn=dsn, pool={"query_timeout": 0.5}) as bed:
        for k in range(TRIES):
            proxy.stall_on_answer_to(rf"^\s*{statement}\b")
            insert = f"INSERT INTO {bed.table} VALUES (?, ?)"
            try:
                if statement == "COMMIT":
                    await bed.ok("BEGIN", session=f"t{k}")
                    await bed.ok(insert, [k, k], session=f"t{k}")
                    res = await bed.q("COMMIT", session=f"t{k}")
                else:
                    res = await bed.q(insert, [k, k])
            except OutcomeUnknown:
                told = "outcome unknown"
            else:  # a late success would be right too; a failure is wrong
                told = "success" if res["success"] else f"failure ({res['error_type']})"
            finally:
                await proxy.restore()
                await bed.end(f"t{k}")
            assert told in ("outcome unknown", "success"), f"{statement} applied, told {told}"
        assert await bed.groups() == {k: 1 for k in range(TRIES)}  # all applied
        await assert_no_leak(bed)
    reliability.add(f"answer to {statement} held past query_timeout ({backend})", tries=TRIES)


async def test_cut_while_reading_the_commit_position_keeps_the_commit(
    make_proxy: ProxyFactory, pg_cluster: PgCluster, reliability: Figures
) -> None:
    """With a replica the router reads the primary's WAL position after COMMIT (for
    read-your-writes); losing the connection there must not turn a commit into a failure,
    nor leave the session pinned to a dead connection (issue #12, defect 4)."""
    dsn, replica = pg_cluster.primary.dsn, _replica(pg_cluster)
    proxy = await make_proxy(dsn)
    async with router_bed(proxy.dsn(dsn), replica_dsn=replica.dsn, check_dsn=dsn) as bed:
        for k in range(TRIES):
            sid = f"lsn-{k}"
            await bed.ok("BEGIN", session=sid)
            await bed.ok(f"INSERT INTO {bed.table} VALUES (?, ?)", [k, k], session=sid)
            proxy.cut_on_statement(r"pg_current_wal_lsn")
            try:
                res = await bed.q("COMMIT", session=sid)
                assert res["success"], res  # committed, position unknown
            except ConnectionFailed as exc:
                assert isinstance(exc, CommitOutcomeUnknown), f"a committed COMMIT raised {exc!r}"
            await bed.ok("BEGIN", session=sid)
            await bed.ok("ROLLBACK", session=sid)
            proxy.rules.clear()  # fired or not: the router need not read the position
        assert await bed.groups() == {k: 1 for k in range(TRIES)}
        await assert_no_leak(bed)
    reliability.add("cut while reading the WAL position after COMMIT", tries=TRIES, lost=0)


async def test_random_cuts_under_load_lose_no_acknowledged_write(
    proxied: tuple[Bed, FaultProxy], reliability: Figures
) -> None:
    bed, proxy = proxied
    cuts = 0

    async def cutter() -> None:
        nonlocal cuts
        rng = random.Random(7)
        for _ in range(10 if not LONG else 200):
            links = [link for link in proxy.links if not link.closed]
            if links:
                rng.choice(links).cut()
                cuts += 1
            await asyncio.sleep(0.05)

    load, recovered = await run_fault(bed, cutter, down=0.0)
    counts = load.ledger.check(await bed.groups())
    await assert_no_leak(bed)
    report(reliability, "random connection cuts under load", load, recovered, counts, cuts=cuts)


# ---------------------------------------------------------------------- proxy: connect, stall


async def test_cut_during_connect_fails_typed_until_restored(
    proxied: tuple[Bed, FaultProxy], reliability: Figures
) -> None:
    bed, proxy = proxied

    async def fault() -> None:
        proxy.cut_after_bytes(5, S2C)  # new connections die in the authentication exchange
        proxy.cut_all()

    load, recovered = await run_fault(bed, fault, proxy.restore)
    counts = load.ledger.check(await bed.groups())
    assert proxy.rules == [] and proxy.cuts > 0
    assert load.ledger.outcomes, "no caller ran"
    await assert_no_leak(bed)
    name = "every connection cut, reconnects cut during connect"
    report(reliability, name, load, recovered, counts)


async def test_refused_connects_fail_typed_until_restored(
    proxied: tuple[Bed, FaultProxy], reliability: Figures
) -> None:
    bed, proxy = proxied

    async def fault() -> None:
        await proxy.refuse()
        proxy.cut_all()

    load, recovered = await run_fault(bed, fault, proxy.restore)
    counts = load.ledger.check(await bed.groups())
    assert any("ConnectionFailed" in k for k in load.ledger.outcomes), load.ledger.outcomes
    await assert_no_leak(bed)
    report(reliability, "every connection cut, connects refused", load, recovered, counts)


async def test_stalled_connections_time_out_typed(
    make_proxy: ProxyFactory, reliability: Figures
) -> None:
    """No reset, no answer: a black hole. With query_timeout and the acquire and connect
    timeouts set, every caller gets a typed error in about those times, never a hang."""
    dsn = server_dsn("KN_PG_DSN")
    proxy = await make_proxy(dsn)
    short = {"timeout": 1.0, "connect_timeout": 1.0, "query_timeout": 1.0}
    async with router_bed(proxy.dsn(dsn), check_dsn=dsn, pool=short) as bed:

        async def fault() -> None:
            proxy.stall()

        load, recovered = await run_fault(bed, fault, proxy.restore, down=2.5, callers=8)
        counts = load.ledger.check(await bed.groups())
        # 1 s acquire + 1 s connect + 1 s query, and a cleanup: nothing near the guard
        assert load.ledger.slowest < 8.0, load.ledger.slowest
        assert any(not k.endswith(":ok") for k in load.ledger.outcomes), load.ledger.outcomes
        await assert_no_leak(bed)
    report(reliability, "stall without reset (timeouts 1 s)", load, recovered, counts)


async def test_a_router_started_while_the_server_is_unreachable_serves_once_it_is_back(
    make_proxy: ProxyFactory, reliability: Figures
) -> None:
    """The application starts before its database: the first calls fail typed and fast
    (connects refused), and once the server is reachable the next call starts the router
    and its pool with no caller action."""
    dsn = server_dsn("KN_PG_DSN")
    proxy = await make_proxy(dsn)
    await proxy.refuse()
    runtime = LocalRuntime()
    pool = WorkflowConnectionPool(
        name=f"rel_s_{uuid.uuid4().hex[:8]}", connection_string=proxy.dsn(dsn),
        timeout=ACQUIRE_TIMEOUT, connect_timeout=CONNECT_TIMEOUT,
    )  # fmt: skip
    runtime.register_node("db_pool", pool)
    router = QueryRouterNode(name="router", connection_pool="db_pool")
    runtime.register_node("router", router)
    bed = Bed(runtime, router, pool, None, "", dsn)
    try:
        for _ in range(TRIES):
            with pytest.raises(ConnectionFailed):
                await bed.q("SELECT 1 AS one")
        await proxy.restore()
        recovered = await bed.recovery(time.monotonic())
        await assert_no_leak(bed)
    finally:
        await router.close()
        await pool.close()
    reliability.add("server unreachable when the router starts", tries=TRIES, recover_s=recovered)


# ---------------------------------------------------------------------- backends killed


async def test_terminated_backends_under_load_lose_nothing(
    make_proxy: ProxyFactory, reliability: Figures
) -> None:
    dsn = server_dsn("KN_PG_DSN")
    admin = await guard(asyncpg.connect(server_dsn("KN_PG_ADMIN_DSN")))
    killed = 0
    try:
        async with router_bed(dsn) as bed:
            name = bed.primary.pool_config.connect.application_name

            async def kill() -> None:  # only this test's pool, found by application_name
                nonlocal killed
                for _ in range(3):
                    killed += await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = $1",
                        name,
                    )
                    await asyncio.sleep(0.1)

            load, recovered = await run_fault(bed, kill, down=0.0)
            counts = load.ledger.check(await bed.groups())
            assert killed > 0
            await assert_no_leak(bed)
            await asyncio.sleep(0.3)
            live = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
            )
            assert live == bed.primary.engine.state()["total_connections"]  # none leaked
    finally:
        await admin.close()
    report(reliability, "pg_terminate_backend under load", load, recovered, counts, killed=killed)


# ---------------------------------------------------------------------- replicas


async def test_replica_cut_reads_are_served_by_the_primary(
    make_proxy: ProxyFactory, pg_cluster: PgCluster, reliability: Figures
) -> None:
    dsn, rdsn = pg_cluster.primary.dsn, _replica(pg_cluster).dsn
    proxy = await make_proxy(rdsn)
    async with router_bed(dsn, replica_dsn=proxy.dsn(rdsn)) as bed:

        async def fault() -> None:
            await proxy.refuse()
            proxy.cut_all()

        load, _ = await run_fault(bed, fault, proxy.restore, down=1.0)
        counts = load.ledger.check(await bed.groups())
        failed_reads = load.failed("read")
        # a replica read that failed went to the primary
        assert not failed_reads, (failed_reads, load.samples)
        assert load.read_targets["primary"] > 0 and not load.wrong_reads
        back = time.monotonic()
        readmitted = await _replica_serves_again(bed, back)
        await assert_no_leak(bed)
    report(reliability, "replica connections cut and refused", load, readmitted, counts,
           reads=dict(load.read_targets))  # fmt: skip


async def _replica_serves_again(bed: Bed, since: float) -> float:
    """Return the seconds from ``since`` until a plain read is routed to the replica."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        res = await bed.q(f"SELECT count(*) AS n FROM {bed.table}")
        if res["success"] and res["routing_metadata"]["target"].startswith("replica"):
            return time.monotonic() - since
        await asyncio.sleep(0.02)
    raise Hang(f"the replica was not used again within {GUARD:g}s")


def _replica(cluster: PgCluster) -> PgServer:
    if cluster.replica is None:
        raise AssertionError("the private cluster has no standby")
    return cluster.replica


@pytest.fixture
async def private_bed(pg_cluster: PgCluster) -> AsyncIterator[Bed]:
    """A router over the private primary and standby (which the test may stop)."""
    replica = _replica(pg_cluster)
    async with router_bed(
        pg_cluster.primary.dsn, replica_dsn=replica.dsn, router={"replica_lag_threshold": 1.0}
    ) as bed:
        yield bed


async def test_primary_stop_and_start_under_load(
    private_bed: Bed, pg_cluster: PgCluster, reliability: Figures
) -> None:
    bed = private_bed

    async def stop() -> None:
        await asyncio.to_thread(pg_cluster.primary.stop, "fast")

    async def start() -> None:
        await asyncio.to_thread(pg_cluster.primary.start)

    load, recovered = await run_fault(bed, stop, start, down=1.0)
    counts = load.ledger.check(await bed.groups())
    down_errors = load.failed("write") or load.failed("tx")
    assert down_errors, load.ledger.outcomes  # writes failed (typed) while it was down
    await assert_no_leak(bed)
    await asyncio.to_thread(pg_cluster.wait_streaming)
    report(reliability, "primary stop/start (fast shutdown)", load, recovered, counts)


async def test_replica_stop_and_start_reads_go_to_the_primary(
    private_bed: Bed, pg_cluster: PgCluster, reliability: Figures
) -> None:
    bed = private_bed
    replica = _replica(pg_cluster)
    started = 0.0

    async def stop() -> None:
        await asyncio.to_thread(replica.stop, "fast")

    async def start() -> None:
        nonlocal started
        await asyncio.to_thread(replica.start)
        started = time.monotonic()

    load, _ = await run_fault(bed, stop, start, down=1.0)
    counts = load.ledger.check(await bed.groups())
    failed_reads = load.failed("read")
    assert not failed_reads, failed_reads
    assert load.read_targets["primary"] > 0 and not load.wrong_reads
    readmitted = await _replica_serves_again(bed, started)
    await assert_no_leak(bed)
    await asyncio.to_thread(pg_cluster.wait_streaming)
    report(reliability, "replica stop/start", load, readmitted, counts,
           reads=dict(load.read_targets))  # fmt: skip


async def test_paused_replay_sends_reads_to_the_primary_until_resumed(
    private_bed: Bed, pg_cluster: PgCluster, reliability: Figures
) -> None:
    """Replay paused, the primary keeps writing: the lag passes the 1 s threshold, reads go
    to the primary and every read of a just-written value (in its session) sees it."""
    bed = private_bed
    replica = _replica(pg_cluster)
    t = bed.table
    replica.psql("SELECT pg_wal_replay_pause()")
    try:
        stale = 0
        deadline = time.monotonic() + GUARD
        targets: Counter[str] = Counter()
        k = 0
        while time.monotonic() < deadline:  # until reads have gone to the primary a while
            k += 1
            await bed.ok(f"INSERT INTO {t} VALUES (?, ?)", [k, k], session="rw")
            res = await bed.q(f"SELECT grp FROM {t} WHERE id = ?", [k], session="rw")
            stale += res["data"] != [{"grp": k}]
            plain = await bed.q(f"SELECT count(*) AS n FROM {t}")
            targets[plain["routing_metadata"]["target"]] += 1
            if targets["primary"] >= 20:
                break
            await asyncio.sleep(0.02)
        assert stale == 0
        assert targets["primary"] >= 20, targets  # lag over the threshold: the primary reads
    finally:
        replica.psql("SELECT pg_wal_replay_resume()")
    resumed = time.monotonic()
    readmitted = await _replica_serves_again(bed, resumed)
    await bed.end("rw")
    await assert_no_leak(bed)
    reliability.add(
        "replica replay paused (lag > 1 s threshold)", tries=1, lost=0, stale_reads=stale,
        recover_s=readmitted, reads=dict(targets),
    )  # fmt: skip


# ---------------------------------------------------------------------- MariaDB


@pytest.mark.mysql
async def test_mariadb_restart_under_load(private_mariadb: MariaDB, reliability: Figures) -> None:
    async with router_bed(private_mariadb.dsn) as bed:

        async def stop() -> None:
            await asyncio.to_thread(private_mariadb.stop)

        async def start() -> None:
            await asyncio.to_thread(private_mariadb.start)

        load, recovered = await run_fault(bed, stop, start, down=1.0)
        counts = load.ledger.check(await bed.groups())
        assert any(not k.endswith(":ok") for k in load.ledger.outcomes), load.ledger.outcomes
        await assert_no_leak(bed)
    report(reliability, "MariaDB restart (SIGTERM, start)", load, recovered, counts)


async def test_a_crash_recovered_primary_reports_no_replay_position(pg_cluster: PgCluster) -> None:
    # After crash recovery PostgreSQL keeps answering pg_last_wal_replay_lsn() with the LSN
    # recovery stopped at; a primary must still report no replay position (CI met this on a
    # state directory that a killed run had left behind).
    primary = pg_cluster.primary
    await asyncio.to_thread(primary.stop, "immediate")
    await asyncio.to_thread(primary.start)
    remembered = await asyncio.to_thread(primary.psql, "SELECT pg_last_wal_replay_lsn()")
    assert remembered, "the restart did not go through crash recovery"
    params = PoolConfig.from_options({"connection_string": primary.dsn, "name": "crash"}).connect
    driver = get_driver("postgresql")
    conn = await driver.connect(params, 4)
    try:
        assert await driver.replay_position(conn, 5.0) is None
        status = await driver.replica_status(conn, 5.0)
        assert status is not None and (status.standby, status.position) == (False, None)
    finally:
        await conn.close(5.0)
    await asyncio.to_thread(pg_cluster.wait_streaming)
