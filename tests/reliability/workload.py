"""Scenarios of the reliability suite's load and cancellation-storm parts, and their checks.

Shared by ``tests/reliability/test_load.py`` / ``test_cancellation.py`` (short, CI) and
``benchmarks/reliability.py`` (the long mode): one copy of each scenario, parametrised by
duration and counts. Everything runs against real servers:

- :func:`router_bed` builds what users build: pools and a ``QueryRouterNode`` registered in
  a ``LocalRuntime`` (PostgreSQL with the shared streaming standby as a read replica,
  MariaDB, SQLite), plus a table of its own.
- :func:`run_load` drives many concurrent callers through the router (reads, autocommit
  writes, session transactions, reads after writes) and checks every write's fate.
- :func:`run_storm` starts tasks at random points of the pool's and router's paths and
  cancels them (``storm.py``-style waves), recording where each cancellation landed.
- :func:`audit_pool` is the leak and session-state audit both end with: the pool's own
  counts, the server's view of the pool's backends, and a probe of every idle connection.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import CommitOutcomeUnknown, KailashNodesError, OutcomeUnknown
from kailash_nodes.pool import PooledConnection

__all__ = [
    "STORM_BED",
    "Bed",
    "LoadReport",
    "StormReport",
    "WriteLedger",
    "audit_pool",
    "percentile",
    "router_bed",
    "run_load",
    "run_storm",
]

MARK = "kn.mark"  # the custom GUC cancelled tasks leave behind (PostgreSQL)
# The storm's bed: small pools, so tasks contend; sessions reaped fast; pattern learning
# and runtime pre-warming on; connections retired by lifetime and idle time, and checked
# after 5 ms idle, while the storm runs.
STORM_BED: dict[str, Any] = {
    "min_connections": 1, "max_connections": 4, "replica_max": 3, "session_timeout": 0.3,
    "pattern_learning": True, "runtime_prewarm": True, "timeout": 5.0,
    "check_idle_after": 0.005, "max_lifetime": 1.0, "max_idle": 0.3,
    "maintenance_interval": 0.1,
}  # fmt: skip
MYSQL_WAIT = 12345  # the @@session.wait_timeout cancelled tasks set (MariaDB)
SQLITE_CACHE = -4321  # the PRAGMA cache_size cancelled tasks set (SQLite)


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` quantile (0..1) of ``values`` (nan when empty).

    >>> percentile([3.0, 1.0, 2.0, 4.0], 0.5), percentile([3.0, 1.0, 2.0, 4.0], 0.99)
    (2.0, 4.0)
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---------------------------------------------------------------------------- the bed


@dataclass
class Bed:
    """A runtime with a primary pool, an optional replica pool and a router over them."""

    backend: str
    dsn: str
    runtime: LocalRuntime
    pool: WorkflowConnectionPool
    replica: WorkflowConnectionPool | None
    replica_dsn: str | None
    router: QueryRouterNode
    table: str

    async def q(self, query: str, params: Any = None, session: str | None = None) -> Any:
        """Route one statement (``?`` placeholders work on every backend)."""
        inputs: dict[str, Any] = {"query": query, "parameters": params}
        if session is not None:
            inputs["session_id"] = session
        return await self.router.process(inputs)

    async def end(self, session: str) -> None:
        """End a router session (rolls back what it left open)."""
        await self.router.process({"operation": "end_session", "session_id": session})

    async def primary_rows(self) -> Counter[int]:
        """Return how many rows each id has, read on the primary through the pool API."""
        async with self.pool.connection() as conn:
            res = await self.pool.execute(conn, f"SELECT id FROM {self.table}")
        assert res["success"], res
        return Counter(int(r["id"]) for r in res["data"])


def _create_table(backend: str, table: str) -> str:
    # Deliberately no unique key on id: a write applied twice must show as two rows.
    kind = "VARCHAR(16)" if backend == "mysql" else "text"
    return f"CREATE TABLE {table} (id BIGINT NOT NULL, caller INT NOT NULL, kind {kind})"


@asynccontextmanager
async def router_bed(
    backend: str,
    dsn: str,
    *,
    replica_dsn: str | None = None,
    min_connections: int = 2,
    max_connections: int = 20,
    replica_max: int | None = None,
    session_timeout: float = 30.0,
    pattern_learning: bool = False,
    runtime_prewarm: bool = False,
    timeout: float = 30.0,
    **pool_options: Any,
) -> AsyncIterator[Bed]:
    """Build and open a bed on ``dsn`` with a fresh table; drop the table and close after.

    Pool names (and so ``application_name``) are unique per bed, so the server's view of a
    pool's backends is not mixed with other tests running at the same time.
    ``pool_options`` go to both pools (e.g. ``max_lifetime``, ``check_idle_after``).
    """
    tag = uuid.uuid4().hex[:8]
    runtime = LocalRuntime(prewarm=runtime_prewarm, prewarm_timeout=0.002)
    pool = WorkflowConnectionPool(
        name=f"kn_rel_{tag}", connection_string=dsn, min_connections=min_connections,
        max_connections=max_connections, timeout=timeout, enable_query_routing=pattern_learning,
        **pool_options,
    )  # fmt: skip
    runtime.register_node("db_pool", pool)
    replica = None
    if replica_dsn is not None:
        replica = WorkflowConnectionPool(
            name=f"kn_rel_{tag}_r", connection_string=replica_dsn, min_connections=1,
            max_connections=replica_max or max_connections, timeout=timeout, **pool_options,
        )  # fmt: skip
        runtime.register_node("replica_pool", replica)
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", session_timeout=session_timeout,
        read_replicas=["replica_pool"] if replica is not None else [],
        replica_check_interval=0.2, pattern_learning=pattern_learning,
    )  # fmt: skip
    runtime.register_node("router", router)
    table = f"kn_rel_{tag}"
    bed = Bed(backend, dsn, runtime, pool, replica, replica_dsn, router, table)
    async with runtime:
        res = await bed.q(_create_table(backend, table))
        assert res["success"], res
        if replica is not None:  # plain reads go there, with no read-your-writes
            await _replayed(replica, table)
        try:
            yield bed
        finally:
            await bed.q(f"DROP TABLE IF EXISTS {table}")


async def _replayed(replica: WorkflowConnectionPool, table: str, timeout: float = 10.0) -> None:
    """Wait until the replica has replayed the table's creation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with replica.connection() as conn:
            res = await replica.execute(conn, f"SELECT to_regclass('{table}') IS NOT NULL AS ok")
        if res["success"] and res["data"] == [{"ok": True}]:
            return
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- the audit


@dataclass
class Audit:
    """What :func:`audit_pool` found; ``problems`` empty means no leak and no state left."""

    pool: str
    state: dict[str, int]
    server_backends: int | None  # None: the server cannot tell (SQLite, MariaDB)
    probed: int
    problems: list[str] = field(default_factory=list)


async def settle(bed: Bed, timeout: float = 15.0) -> None:
    """Wait until no session holds a connection and every pool is back at rest."""
    deadline = time.monotonic() + timeout
    pools = [p for p in (bed.pool, bed.replica) if p is not None]
    while time.monotonic() < deadline:
        metrics = await bed.router.get_metrics()
        states = [p.engine.state() for p in pools]
        if metrics["pinned_sessions"] == 0 and all(_at_rest(s) for s in states):
            return
        await asyncio.sleep(0.05)


def _at_rest(s: dict[str, int]) -> bool:
    return (
        s["active_connections"] == 0
        and s["waiting_requests"] == 0
        and s["opening_connections"] == 0
        and s["total_connections"] == s["idle_connections"]
    )


async def _pg_server_view(
    dsn: str, pool: WorkflowConnectionPool, tries: int = 20
) -> tuple[int, list[str]]:
    """Return the server's count of the pool's backends and what is wrong with them.

    What changes on its own is looked at again, up to ``tries`` times 50 ms apart, and
    only what persists is reported: a backend busy right now (the replica monitor's lag
    check runs every 0.2 s), a connection the pool's maintenance retires meanwhile (the
    count is compared only when the pool's own count did not move during the query), a
    closed backend the server has not yet removed.
    """
    import asyncpg

    engine = pool.engine
    app = pool.pool_config.connect.application_name
    mon = await asyncpg.connect(dsn)
    try:
        for _ in range(tries):
            before = (len(engine.entries()), engine.closing)
            rows = await mon.fetch(
                "SELECT a.state, a.wait_event, left(a.query, 60) AS query, "
                "(SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid "
                "AND l.locktype = 'advisory') AS advisory "
                "FROM pg_stat_activity a WHERE a.application_name = $1",
                app,
            )
            problems = [_backend_problem(r) for r in rows if r["state"] != "idle" or r["advisory"]]
            if before == (len(engine.entries()), engine.closing) and len(rows) != sum(before):
                problems.append(
                    f"server has {len(rows)} backends for {app!r}, "
                    f"pool counts {before[0]} (+{before[1]} closing)"
                )
            if not problems:
                break
            await asyncio.sleep(0.05)
    finally:
        await mon.close()
    return len(rows), problems


MID_PROTOCOL = "waiting for the client inside an implicit transaction"


def _backend_problem(row: Any) -> str:
    if row["state"] == "active" and row["wait_event"] == "ClientRead":
        # Parse/Describe/Flush with no Sync yet (asyncpg's prepare): the backend holds the
        # locks of that statement's tables until the connection's next query.
        what = f"{MID_PROTOCOL} after {row['query']!r}"
    else:
        what = f"in state {row['state']!r} after {row['query']!r}"
    return f"server backend {what}" + (" holding an advisory lock" if row["advisory"] else "")


_PROBES = {
    "postgresql": (
        "SELECT current_setting('kn.mark', true) AS mark, "
        "current_setting('application_name') AS app, "
        "(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temps"
    ),
    # @kn_mark makes this probe itself dirty: the connection is replaced on release.
    "mysql": ("SELECT @kn_mark AS mark, @@session.wait_timeout AS wait, @@in_transaction AS trx"),
    "sqlite": "SELECT (SELECT count(*) FROM temp.sqlite_master) AS temps",
}


def _probe_problems(backend: str, app: str, row: dict[str, Any]) -> list[str]:
    found = []
    if backend == "postgresql":
        if row["mark"] not in (None, ""):
            found.append(f"{MARK} = {row['mark']!r} left set")
        if row["app"] != app:
            found.append(f"application_name changed to {row['app']!r}")
    if backend == "mysql":
        if row["mark"] is not None:
            found.append(f"@kn_mark = {row['mark']!r} left set")
        if int(row["wait"]) == MYSQL_WAIT:
            found.append("@@session.wait_timeout left changed")
        if row["trx"]:
            found.append("an open transaction (@@in_transaction)")
    if row.get("temps"):
        found.append(f"{row['temps']} temp table(s) left")
    return found


async def _probe_idle(pool: WorkflowConnectionPool, backend: str) -> tuple[int, list[str]]:
    """Check out every idle connection at once and look at what it carries."""
    engine = pool.engine
    app = pool.pool_config.connect.application_name
    held: list[PooledConnection] = []
    problems: list[str] = []
    try:
        for _ in range(len(engine.idle_entries())):
            held.append(await engine.acquire(timeout=5))
        for pc in held:
            if pc.entry.conn.in_transaction():
                problems.append(f"{pc.entry.name}: lent while in a transaction")
            res = await engine.execute(pc, _PROBES[backend], fetch_mode="one", observe=False)
            if backend == "sqlite":
                size = await engine.execute(pc, "PRAGMA cache_size", fetch_mode="one")
                if next(iter(size.data.values())) == SQLITE_CACHE:
                    problems.append(f"{pc.entry.name}: PRAGMA cache_size left changed")
            problems += [f"{pc.entry.name}: {p}" for p in _probe_problems(backend, app, res.data)]
    finally:
        for pc in held:
            await engine.release(pc)
    return len(held), problems


async def audit_pool(pool: WorkflowConnectionPool, backend: str, dsn: str) -> Audit:
    """Check a pool at rest: counts consistent, server agrees, no idle connection carries
    a transaction or session state. Call after :func:`settle`."""
    engine = pool.engine
    for _ in range(20):  # the pool's upkeep may be replacing a connection right now
        state = engine.state()
        problems = [f"pool not at rest: {engine.describe_state()}"] * (not _at_rest(state))
        if len(engine.entries()) != state["idle_connections"] + state["active_connections"]:
            problems.append(f"entries != idle + active: {engine.describe_state()}")
        if not problems:
            break
        await asyncio.sleep(0.05)
    audit = Audit(pool.name, state, None, 0, problems)
    if backend == "postgresql":
        audit.server_backends, server_problems = await _pg_server_view(dsn, pool)
        audit.problems += server_problems
    audit.probed, probe_problems = await _probe_idle(pool, backend)
    audit.problems += probe_problems
    return audit


async def still_works(bed: Bed, n: int = 20) -> list[str]:
    """Run ``n`` reads through the router and the pool API; return what failed."""
    failed = []
    for i in range(n):
        res = await bed.q(f"SELECT count(*) AS n FROM {bed.table} WHERE caller = ?", [i])
        if not res["success"]:
            failed.append(f"router read failed: {res['error']}")
        async with bed.pool.connection(timeout=5) as conn:
            res = await bed.pool.execute(conn, "SELECT 1 AS one")
        if res["data"] != [{"one": 1}]:
            failed.append(f"pool read returned {res['data']!r}")
    return failed


# ---------------------------------------------------------------------------- writes


@dataclass
class WriteLedger:
    """Every write by what its caller was told, and what the table showed afterwards."""

    acked: set[int] = field(default_factory=set)  # success: must be there exactly once
    failed: set[int] = field(default_factory=set)  # failed or rolled back: must be absent
    unknown: set[int] = field(default_factory=set)  # outcome unknown: either way
    missing: list[int] = field(default_factory=list)  # acknowledged, absent
    duplicated: list[int] = field(default_factory=list)  # present more than once
    phantom: list[int] = field(default_factory=list)  # failed or rolled back, present
    unknown_present: int = 0

    def problems(self) -> list[str]:
        """Return what was lost, doubled or applied after failing, in words."""
        found = []
        for what, ids in (
            ("acknowledged writes missing", self.missing),
            ("writes duplicated", self.duplicated),
            ("failed or rolled-back writes present", self.phantom),
        ):
            if ids:
                found.append(f"{len(ids)} {what}: {ids[:5]}")
        return found


async def check_writes(bed: Bed, writes: WriteLedger) -> None:
    """Compare the table on the primary with what each write was told."""
    rows = await bed.primary_rows()
    writes.missing = sorted(i for i in writes.acked if rows[i] == 0)
    writes.duplicated = sorted(i for i, n in rows.items() if n > 1)
    writes.phantom = sorted(i for i in writes.failed if rows[i])
    writes.unknown_present = sum(1 for i in writes.unknown if rows[i])


# ---------------------------------------------------------------------------- load


@dataclass
class LoadReport:
    """Everything one load run did and what the checks found."""

    backend: str
    callers: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds per router.process call
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # error type -> count
    writes: WriteLedger = field(default_factory=lambda: WriteLedger())
    stale_reads: int = 0
    audits: list[Audit] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # the bed's state after the run

    def figures(self) -> dict[str, float]:
        """Return the headline figures (throughput in statements/s, latencies in ms)."""
        n = len(self.latencies)
        return {
            "statements": n,
            "operations": sum(self.operations.values()),
            "throughput": n / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(self.latencies, 0.5) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "writes_acked": len(self.writes.acked),
            "writes_failed": len(self.writes.failed),
            "writes_unknown": len(self.writes.unknown),
        }

    def problems(self) -> list[str]:
        """Return every violated guarantee, in words (empty: nothing lost or leaked)."""
        found = self.writes.problems()
        found += [f"{self.stale_reads} reads missed their session's write"] * bool(self.stale_reads)
        for audit in self.audits:
            found += [f"{audit.pool}: {p}" for p in audit.problems]
        return found + self.broken


class _Caller:
    """One of the concurrent callers of a load run: a loop of random operations."""

    def __init__(self, bed: Bed, report: LoadReport, number: int, ids: Any, rng: random.Random):
        self.bed, self.report, self.number, self.ids, self.rng = bed, report, number, ids, rng
        self.insert = f"INSERT INTO {bed.table} (id, caller, kind) VALUES (?, ?, ?)"
        self.runs = 0

    async def call(self, query: str, params: Any = None, session: str | None = None) -> Any:
        """Route one statement, timed; a typed error becomes ``None`` (and is counted)."""
        began = time.monotonic()
        try:
            res = await self.bed.q(query, params, session)
        except OutcomeUnknown:
            raise
        except KailashNodesError as exc:
            self.report.errors[type(exc).__name__] += 1
            return None
        finally:
            self.report.latencies.append(time.monotonic() - began)
        if not res["success"]:
            self.report.errors[str(res["error_type"])] += 1
        return res

    async def run(self, deadline: float) -> None:
        ops: list[Callable[[], Coroutine[Any, Any, Any]]] = [
            self.read, self.write, self.transaction, self.read_own_write,
        ]  # fmt: skip
        while time.monotonic() < deadline:
            op = self.rng.choices(ops, weights=(40, 25, 20, 15))[0]
            self.report.operations[op.__name__] += 1
            await op()

    async def read(self) -> None:
        await self.call(
            f"SELECT count(*) AS n FROM {self.bed.table} WHERE caller = ?", [self.number]
        )

    async def write(self, session: str | None = None) -> int | None:
        """Insert one row; file its id by outcome; return it when acknowledged."""
        wid = next(self.ids)
        try:
            res = await self.call(self.insert, [wid, self.number, "auto"], session)
        except OutcomeUnknown:
            self.report.errors["OutcomeUnknown"] += 1
            self.report.writes.unknown.add(wid)
            return None
        writes = self.report.writes
        (writes.acked if res and res["success"] else writes.failed).add(wid)
        return wid if res and res["success"] else None

    async def transaction(self) -> None:
        """BEGIN; 1-4 inserts, one read of its own row; COMMIT (70%) or ROLLBACK."""
        self.runs += 1
        sid = f"tx-{self.number}-{self.runs}"
        written: list[int] = []
        outcome = self.report.writes.failed
        try:
            res = await self.call("BEGIN", session=sid)
            if not (res and res["success"]):
                return
            for _ in range(self.rng.randint(1, 4)):
                wid = next(self.ids)
                written.append(wid)
                res = await self.call(self.insert, [wid, self.number, "tx"], sid)
                if not (res and res["success"]):
                    await self.call("ROLLBACK", session=sid)
                    return
            seen = await self.call(
                f"SELECT id FROM {self.bed.table} WHERE id = ?", written[-1:], sid
            )
            self.report.stale_reads += bool(seen and seen["data"] != [{"id": written[-1]}])
            if self.rng.random() < 0.7:
                try:
                    res = await self.call("COMMIT", session=sid)
                except CommitOutcomeUnknown:
                    self.report.errors["CommitOutcomeUnknown"] += 1
                    outcome = self.report.writes.unknown
                    return
                if res and res["success"]:
                    outcome = self.report.writes.acked
            else:
                await self.call("ROLLBACK", session=sid)
        except OutcomeUnknown:
            self.report.errors["OutcomeUnknown"] += 1
        finally:
            outcome.update(written)
            await self.bed.end(sid)

    async def read_own_write(self) -> None:
        """An autocommit write in a session, then a read in that session that must see it."""
        self.runs += 1
        sid = f"ryw-{self.number}-{self.runs}"
        try:
            wid = await self.write(sid)
            if wid is None:
                return
            res = await self.call(f"SELECT id FROM {self.bed.table} WHERE id = ?", [wid], sid)
            self.report.stale_reads += bool(res and res["data"] != [{"id": wid}])
        finally:
            await self.bed.end(sid)


async def run_load(
    bed: Bed, *, callers: int = 200, seconds: float = 5.0, seed: int = 0
) -> LoadReport:
    """Run ``callers`` concurrent callers through the router for ``seconds``, then check.

    Every acknowledged write must be present exactly once, every failed or rolled-back one
    absent (writes of unknown outcome are counted, either way), no connection may leak and
    no idle connection may be left in a transaction.
    """
    report = LoadReport(bed.backend, callers)
    ids = itertools.count(1)
    began = time.monotonic()
    deadline = began + seconds
    rngs = [random.Random(seed * 1_000_003 + i) for i in range(callers)]
    await asyncio.gather(
        *(_Caller(bed, report, i, ids, rngs[i]).run(deadline) for i in range(callers))
    )
    report.seconds = time.monotonic() - began
    await check_writes(bed, report.writes)
    await settle(bed)
    for pool, dsn in ((bed.pool, bed.dsn), (bed.replica, bed.replica_dsn)):
        if pool is not None and dsn is not None:
            report.audits.append(await audit_pool(pool, bed.backend, dsn))
    report.broken += await still_works(bed, 5)
    return report


# ---------------------------------------------------------------------------- storm

# Statements of the storm, per backend: a short sleep, and what a caller may leave on a
# session (a setting, a user variable or pragma, a temp table, an advisory lock).
_STORM_SQL: dict[str, dict[str, str]] = {
    "postgresql": {
        "sleep": "SELECT pg_sleep(0.002)",
        "mark": "SET kn.mark = 'left'",
        "mark2": "SELECT set_config('kn.mark', 'left2', false)",
        "temp": "CREATE TEMP TABLE IF NOT EXISTS kn_storm_tmp (x int)",
        "lock": "SELECT pg_advisory_lock(?)",
    },
    "mysql": {
        "sleep": "SELECT SLEEP(0.002)",
        "mark": "SET @kn_mark = 'left'",
        "mark2": f"SET SESSION wait_timeout = {MYSQL_WAIT}",
        "temp": "CREATE TEMPORARY TABLE IF NOT EXISTS kn_storm_tmp (x int)",
        "lock": "SELECT GET_LOCK(CAST(? AS CHAR), 0)",
    },
    "sqlite": {
        "sleep": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 3000) SELECT count(*) FROM c",
        "mark": f"PRAGMA cache_size = {SQLITE_CACHE}",
        "mark2": f"PRAGMA cache_size = {SQLITE_CACHE}",
        "temp": "CREATE TEMP TABLE IF NOT EXISTS kn_storm_tmp (x int)",
        "lock": "SELECT ?",  # SQLite has no advisory locks
    },
}


@dataclass
class StormReport:
    """Where the cancellations of a storm landed and what the audit found."""

    backend: str
    target: int
    seconds: float = 0.0
    cancelled: Counter[str] = field(default_factory=Counter)  # phase -> tasks cancelled there
    by_scenario: Counter[str] = field(default_factory=Counter)  # scenario -> cancelled
    finished: int = 0  # tasks that completed before their cancel arrived
    errors: Counter[str] = field(default_factory=Counter)  # typed errors the tasks raised
    samples: dict[str, str] = field(default_factory=dict)  # error type -> first message
    untyped: list[str] = field(default_factory=list)  # anything else: a defect
    writes: WriteLedger = field(default_factory=lambda: WriteLedger())  # in transactions
    audits: list[Audit] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Return the number of tasks cancelled."""
        return sum(self.cancelled.values())

    def where(self) -> str:
        """Return where the cancellations landed, by kind of phase, most first."""
        groups: Counter[str] = Counter()
        for phase, n in self.cancelled.items():
            groups[phase.split(":")[0]] += n
        return ", ".join(f"{k} {n}" for k, n in groups.most_common())

    def problems(self) -> list[str]:
        """Return every violated guarantee, in words (empty: no leak, no state left)."""
        found = [f"untyped error: {u}" for u in self.untyped[:10]] + self.writes.problems()
        for audit in self.audits:
            found += [f"{audit.pool}: {p}" for p in audit.problems]
        return found + self.broken


class _Storm:
    """The scenarios of a storm over one bed; each sets ``phase`` before every await."""

    def __init__(self, bed: Bed, report: StormReport, rng: random.Random) -> None:
        self.bed, self.report, self.rng = bed, report, rng
        self.sql = _STORM_SQL[bed.backend]
        self.insert = f"INSERT INTO {bed.table} (id, caller, kind) VALUES (?, ?, 'storm')"
        self.seq = itertools.count()
        self.scenarios: list[Callable[[_Probe], Coroutine[Any, Any, None]]] = [
            self.pool_wait, self.pool_sleep, self.pool_transaction, self.pool_transaction,
            self.router_read, self.router_transaction, self.router_session_state,
            self.router_stateless_state, self.growth, self.pool_prewarm,
        ]  # fmt: skip
        if bed.backend == "postgresql":
            self.scenarios += [self.router_prewarm, self.workflow]
            self.workflow_nodes = _chain(bed)

    async def pool_wait(self, p: _Probe) -> None:
        """Acquire on a contended pool, one statement, release."""
        await self._with_connection(p, [("SELECT 1", None)])

    async def pool_sleep(self, p: _Probe) -> None:
        """A statement that takes a few ms on the server (cancelled mid-query)."""
        await self._with_connection(p, [(self.sql["sleep"], None)])

    async def pool_transaction(self, p: _Probe) -> None:
        """BEGIN, writes and session state on a held connection; commit or not; release."""
        steps = [("BEGIN", None), (self.insert, [self.rng.getrandbits(40), 1])]
        steps += self.rng.sample(self._state_steps(), k=self.rng.randint(1, 3))
        steps += [(self.insert, [self.rng.getrandbits(40), 2])]
        if self.rng.random() < 0.5:
            steps.append(("COMMIT", None))
        await self._with_connection(p, steps)

    def _state_steps(self) -> list[tuple[str, Any]]:
        sql = self.sql
        return [
            (sql["mark"], None), (sql["mark2"], None), (sql["temp"], None),
            (sql["lock"], [self.rng.getrandbits(40)]),
        ]  # fmt: skip

    async def _with_connection(self, p: _Probe, steps: list[tuple[str, Any]]) -> None:
        pool = self.bed.pool
        p.phase = "acquire:" + (
            "growing" if pool.engine.state()["opening_connections"] else "waiting"
        )
        pc = await pool.acquire()
        p.acquired.set()

        async def run(query: str, params: Any) -> Any:
            return await pool.execute(pc, query, params)

        try:
            await self._steps(p, "query", run, steps)
        finally:
            p.phase = "release:" + (
                "dirty" if pc.entry.dirty or pc.entry.conn.in_transaction() else "clean"
            )
            p.release.set()
            await pool.release(pc)

    async def _steps(
        self,
        p: _Probe,
        where: str,
        run: Callable[[str, Any], Coroutine[Any, Any, Any]],
        steps: list[tuple[str, Any]],
    ) -> None:
        """Run ``steps``, stopping at a failure; file the rows they insert by what the
        caller was told: committed (COMMIT answered success), unknown (COMMIT sent, its
        answer not seen), else rolled back (never committed: must be absent)."""
        writes = self.report.writes
        ids = [params[0] for query, params in steps if query == self.insert]
        fate = writes.failed
        try:
            for query, params in steps:
                p.phase = f"{where}:{query.split()[0].lower()}"
                if query == "COMMIT":
                    fate = writes.unknown
                res = await run(query, params)
                p.acquired.set()  # (a session holds its connection from here)
                if query == "COMMIT":
                    fate = writes.acked if res["success"] else writes.failed
                if not res["success"]:
                    self.report.errors[str(res["error_type"])] += 1
                    break
        except asyncio.CancelledError:
            p.cut = p.phase  # the caller's finally moves on to the release
            raise
        finally:
            fate.update(ids)

    async def router_read(self, p: _Probe) -> None:
        """Plain reads through the router (to the replica when there is one)."""
        p.phase = "router:read"
        await self.bed.q(self.sql["sleep"])
        await self.bed.q(f"SELECT count(*) AS n FROM {self.bed.table}")

    async def router_transaction(self, p: _Probe) -> None:
        """BEGIN; writes and session state in a router session; COMMIT or ROLLBACK."""
        steps = [("BEGIN", None), (self.insert, [self.rng.getrandbits(40), 3])]
        steps += self.rng.sample(self._state_steps(), k=self.rng.randint(0, 2))
        steps += [(self.rng.choice(("COMMIT", "ROLLBACK")), None)]
        await self._session(p, steps)

    async def router_session_state(self, p: _Probe) -> None:
        """Session state pinned to a router session (no transaction), then a read."""
        steps = self.rng.sample(self._state_steps(), k=self.rng.randint(1, 3))
        steps += [(f"SELECT count(*) AS n FROM {self.bed.table}", None)]
        await self._session(p, steps)

    async def router_stateless_state(self, p: _Probe) -> None:
        """Session state sent without a session: the router resets it on release."""
        for query, params in self.rng.sample(self._state_steps(), k=self.rng.randint(1, 2)):
            p.phase = "router:" + query.split()[0].lower()
            await self.bed.q(query, params)

    async def _session(self, p: _Probe, steps: list[tuple[str, Any]]) -> None:
        sid = f"storm-{next(self.seq)}"
        abandon = self.rng.random() < 0.4  # left to the session reaper

        async def run(query: str, params: Any) -> Any:
            return await self.bed.q(query, params, sid)

        try:
            await self._steps(p, "session", run, steps)
        finally:
            if not abandon:
                p.phase = "session:end"
                p.release.set()
                await self.bed.end(sid)

    async def growth(self, p: _Probe) -> None:
        """Shrink the pool to its floor, then acquire: connects are in flight when cut."""
        engine = self.bed.pool.engine
        engine.resize(engine.config.min_connections)
        await self._with_connection(p, [("SELECT 1", None)])

    async def pool_prewarm(self, p: _Probe) -> None:
        """The pool node's runtime hook: open a connection ahead of an acquire."""
        p.phase = "prewarm:pool"
        await self.bed.pool.prewarm({"operation": "acquire"})

    async def router_prewarm(self, p: _Probe) -> None:
        """The router node's runtime hook: prepare a statement on the next checkout's
        connection (a fresh text each time, so it really prepares)."""
        p.phase = "prewarm:router"
        n = self.rng.randrange(10_000)
        await self.bed.router.prewarm(
            {"query": f"SELECT {n} AS n, id FROM {self.bed.table} WHERE id = $1"}
        )

    async def workflow(self, p: _Probe) -> None:
        """A three-level workflow of router nodes, pre-warmed by the runtime as it runs."""
        p.phase = "workflow"
        await self.bed.runtime.execute_async(self.workflow_nodes)


def _chain(bed: Bed) -> Any:
    from kailash_nodes.runtime import WorkflowBuilder

    wf = WorkflowBuilder()
    queries = [
        f"SELECT id FROM {bed.table} WHERE id = $1",
        f"SELECT id, caller FROM {bed.table} WHERE id = $1",
        f"SELECT kind FROM {bed.table} WHERE id = $1",
    ]
    for i, query in enumerate(queries):
        wf.add_node(f"n{i}", bed.router, query=query, parameters=[i])
    for i in range(len(queries) - 1):
        wf.add_connection(f"n{i}", "row_count", f"n{i + 1}", "rows_before")
    return wf.build()


class _Probe:
    """Where a storm task is, and the events its canceller may aim at: ``acquired`` (it
    holds a connection, or its session pinned one) and ``release`` (it starts giving the
    connection back, or ending its session)."""

    __slots__ = ("acquired", "cut", "phase", "release")

    def __init__(self) -> None:
        self.phase = "start"
        self.cut: str | None = None  # the phase a cancellation first surfaced in
        self.acquired = asyncio.Event()
        self.release = asyncio.Event()


async def _cancel(
    task: asyncio.Task[None], anchor: asyncio.Event | None, delay: float | int
) -> None:
    """Cancel ``task`` ``delay`` after ``anchor`` is set (or after now, without one): a
    float is seconds, an int turns of the event loop. Nothing if the task ends first."""
    if anchor is not None:
        waiter = asyncio.ensure_future(anchor.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    if isinstance(delay, float):
        await asyncio.wait({task}, timeout=delay)
    else:
        for _ in range(delay):
            await asyncio.sleep(0)
    task.cancel()


async def _wave(storm: _Storm, size: int, max_delay: float) -> None:
    rng, report = storm.rng, storm.report
    loop = asyncio.get_running_loop()
    jobs: list[tuple[asyncio.Task[None], _Probe, str]] = []
    cancellers: list[asyncio.Task[None]] = []
    for _ in range(size):
        scenario = rng.choice(storm.scenarios)
        p = _Probe()
        task = loop.create_task(scenario(p))
        anchor = rng.choice((None, None, p.acquired, p.release))
        delay = rng.uniform(0, max_delay) if rng.random() < 0.5 else rng.randint(0, 40)
        cancellers.append(loop.create_task(_cancel(task, anchor, delay)))
        jobs.append((task, p, scenario.__name__))
    await asyncio.wait([t for t, _, _ in jobs], timeout=60)
    for task, p, name in jobs:
        if not task.done():
            report.untyped.append(f"{name} still running after 60 s at {p.phase}")
            task.cancel()
            continue
        if task.cancelled():
            report.cancelled[p.cut or p.phase] += 1
            report.by_scenario[name] += 1
        elif (exc := task.exception()) is None:
            report.finished += 1
        elif isinstance(exc, KailashNodesError):
            report.errors[type(exc).__name__] += 1
            report.samples.setdefault(type(exc).__name__, f"{name} at {p.phase}: {exc}")
        else:
            report.untyped.append(f"{name} at {p.phase}: {type(exc).__name__}: {exc}")
    await asyncio.gather(*cancellers, return_exceptions=True)


async def run_storm(
    bed: Bed, *, cancellations: int, wave: int = 100, max_delay: float = 0.01, seed: int = 0
) -> StormReport:
    """Cancel at least ``cancellations`` tasks at random points, then audit the bed.

    Tasks run in waves of ``wave`` over the bed's (small) pools; each is cancelled after a
    random delay (up to ``max_delay`` s), after a random number of event-loop turns, or a
    few turns after it starts giving its connection back (or ending its session).
    """
    report = StormReport(bed.backend, cancellations)
    storm = _Storm(bed, report, random.Random(seed))
    began = time.monotonic()
    while report.total < cancellations:
        await _wave(storm, min(wave, max(8, cancellations - report.total)), max_delay)
    report.seconds = time.monotonic() - began
    await settle(bed)  # abandoned sessions rolled back by the reaper first
    await check_writes(bed, report.writes)
    for pool, dsn in ((bed.pool, bed.dsn), (bed.replica, bed.replica_dsn)):
        if pool is not None and dsn is not None:
            report.audits.append(await audit_pool(pool, bed.backend, dsn))
    report.broken += await still_works(bed)
    return report


def env_dsn(name: str) -> str | None:
    """Return the DSN in environment variable ``name`` (None when unset or empty)."""
    return os.environ.get(name) or None
