"""Point selects through QueryRouterNode, side by side with the pool, the raw driver and kailash.

Every contender runs ``SELECT id, name FROM bench_items WHERE id = <key>`` (10k-row table,
primary key) and returns the row's id. The floor is a raw asyncpg connection with no pool;
at N concurrent callers it is min(N, 10) workers each owning one raw connection. Router
contenders own a LocalRuntime with 10-connection pools (primary, and the streaming standby
for the replica row, whose floor is a raw connection to the standby). Each mode warms every
contender up, then runs them in a fresh random order each round; tables show medians
and the per-round paired ratio to the floor. Compare ratios, not absolute µs, across runs.

Modes: sequential, concurrent callers, prepared vs unprepared (``prepare_statements``),
the prepared-statement hit rate next to the server's ``pg_prepared_statements``, and the
classification cost on a cache hit and a miss. MySQL (sequential only) when its DSN is set,
and SQLite (sequential only, a file database) always.

    python benchmarks/bench_router.py                  # full run, ≤ 3 min
    python benchmarks/bench_router.py --quick          # ≤ 30 s
    python benchmarks/bench_router.py --profile 5000   # also cProfile router.process
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from _common import (
    Contender,
    LeanLayer,
    RawFloor,
    Result,
    RunSample,
    compare,
    describe,
    format_table,
    machine_facts,
    make_rounds,
    verdict,
    write_json,
)
from _common import fmt_ratio as _fmt
from _placement import local_postmasters, separate_cpus
from bench_classify import REALISTIC
from bench_pool import (
    CONNECTIONS,
    LITE_QUERY,
    PCT_QUERY,
    PG_QUERY,
    REPO_ROOT,
    ROWS,
    Ours,
    _lite_connect,
    _lite_fetch,
    _lite_prepare,
    _lite_rows,
    _my_fetch,
    _my_prepare,
    _mysql_params,
    _pg_fetch,
    _pg_prepare,
    _row_id,
    pg_lean,
)

PACKAGES = ["asyncpg", "aiomysql", "aiosqlite", "sqlglot", "sqlglotc", "kailash", "kailash-nodes"]
RAW, RAW_REPLICA, RAW_UNPREPARED = (
    "asyncpg raw (floor)",
    "asyncpg raw replica",
    "asyncpg raw unprepared",
)
POOL, ROUTER, ROUTER_REPLICA = (
    "ours pool.process",
    "ours router primary-only",
    "ours router + replica",
)
ROUTER_PREP, ROUTER_UNPREP = "ours router prepared", "ours router unprepared"
K_PARAMS, K_LITERAL, K_FIXED = (
    "kailash router + parameters",
    "kailash router literal id",
    "kailash router params-fix",
)
# Rows whose ratios refer to another row than the table's first (see format_table).
FLOORS = {ROUTER_REPLICA: RAW_REPLICA, ROUTER_UNPREP: RAW_UNPREPARED}
MODES = ("sequential", "concurrent", "prepared", "mysql", "sqlite", "classify")
Keep = Callable[[str, int, Sequence[Result], dict[str, float]], None]


def _import_ours() -> Any:
    """Return the kailash_nodes package (from the repository when it is not installed)."""
    try:
        import kailash_nodes
    except ImportError:
        sys.path.insert(0, REPO_ROOT)
        import kailash_nodes
    return kailash_nodes


# --- Contenders whose unit of work is one awaited call -----------------------------------


class CallContender:
    """A contender driven as ``callers`` tasks each awaiting ``call(key)`` in a loop."""

    name = ""
    note = ""

    async def start(self) -> None:
        """Open whatever the contender needs."""

    async def close(self) -> None:
        """Close it; a no-op when ``start`` never succeeded."""

    async def call(self, key: int) -> int:
        """Select ``key``; return the fetched row's id."""
        raise NotImplementedError

    async def report(self) -> str:
        """Return the contender's own view of the run (empty when it has none)."""
        return ""

    async def once(self, key: int) -> int:
        """Select ``key`` once (the harness checks the id during warm-up)."""
        return await self.call(key)

    async def run(self, keys: Sequence[int], callers: int) -> RunSample:
        """Select every key: in a plain loop (``callers == 0``) or split over callers."""
        start = time.perf_counter()
        if callers == 0:
            await self._worker(keys)
        else:
            await asyncio.gather(*(self._worker(keys[i::callers]) for i in range(callers)))
        return RunSample(time.perf_counter() - start, len(keys))

    async def _worker(self, keys: Sequence[int]) -> None:
        call = self.call
        for key in keys:
            await call(key)


class OursRouter(CallContender):
    """kailash_nodes.QueryRouterNode over WorkflowConnectionPool nodes in a LocalRuntime."""

    def __init__(
        self,
        name: str,
        note: str,
        dsn: str,
        *,
        replica_dsn: str | None = None,
        prepare: bool = True,
        query: str = PG_QUERY,
    ) -> None:
        self.name, self.note = name, note
        self._dsn, self._replica_dsn, self._prepare, self._query = dsn, replica_dsn, prepare, query
        self._target = "replica:" if replica_dsn else "primary"
        self.runtime: Any = None
        self.router: Any = None
        # filled by report(): hit_rate, lookups, server (pg_prepared_statements), cached
        self.prepared: dict[str, Any] = {}

    async def start(self) -> None:
        """Register the pool(s) and the router in a fresh LocalRuntime and start it."""
        kn = _import_ours()
        rt = kn.LocalRuntime()
        size = {"min_connections": CONNECTIONS, "max_connections": CONNECTIONS}
        pool = kn.WorkflowConnectionPool(name="db_pool", connection_string=self._dsn, **size)
        rt.register_node("db_pool", pool)
        replicas = []
        if self._replica_dsn:
            replica = kn.WorkflowConnectionPool(
                name="replica_pool", connection_string=self._replica_dsn, **size
            )
            rt.register_node("replica_pool", replica)
            replicas.append("replica_pool")
        self.router = kn.QueryRouterNode(
            name="router",
            connection_pool="db_pool",
            read_replicas=replicas,
            cache_size=1000,
            prepare_statements=self._prepare,
        )
        rt.register_node("router", self.router)
        self.runtime = rt
        await rt.start()

    async def close(self) -> None:
        """Stop the runtime (router first, then the pools)."""
        if self.runtime is not None:
            await self.runtime.stop()

    async def call(self, key: int) -> int:
        """Route the point select with ``parameters``; return the row's id."""
        res = await self.router.process({"query": self._query, "parameters": [key]})
        return _row_id(res)

    async def once(self, key: int) -> int:
        """Route once and check the statement went where this row says it goes."""
        res = await self.router.process({"query": self._query, "parameters": [key]})
        target = res["routing_metadata"]["target"]
        if not target.startswith(self._target):
            replicas = (await self.router.get_metrics()).get("replicas")
            raise RuntimeError(
                f"expected target {self._target!r}, routed to {target!r}; replicas: {replicas}"
            )
        return _row_id(res)

    async def report(self) -> str:
        """Return hit rate and targets from get_metrics(), and the server's prepared count."""
        m = await self.router.get_metrics()
        rm, cs = m["router_metrics"], m["cache_stats"]
        cached = self.router.engine.cached_statements()
        server = "n/a (not PostgreSQL)"
        self.prepared = {"hit_rate": cs["hit_rate"], "lookups": cs["lookups"], "cached": cached}
        if self._query == PG_QUERY:
            count, conns = await server_prepared(self.router)
            server = f"{count} over {conns} conns"
            self.prepared["server"] = count
        return (
            f"hit rate {cs['hit_rate']:.2%} ({cs['hits']}/{cs['lookups']} lookups); "
            f"pg_prepared_statements={server}, cached_statements()={cached}; "
            f"reads primary/replica {rm['reads_to_primary']}/{rm['reads_to_replicas']}, "
            f"fallbacks {rm['replica_fallbacks']}"
        )


class OursPool(Ours):
    """bench_pool's contender for our pool through ``process``, without its stats line."""

    name = POOL
    note = "our pool used directly: process(acquire) → process(execute) → process(release)"

    async def report(self) -> str:
        """Report nothing: acquire waits are bench_pool's subject."""
        return ""


async def server_prepared(router: Any) -> tuple[int, int]:
    """Sum ``pg_prepared_statements`` over every connection of the router's pools.

    Reads each idle connection's asyncpg connection directly (no statement is prepared:
    asyncpg's own cache is off), so call it between rounds, never while measuring.
    """
    engine = router.engine
    pools = [engine.primary, *(s.pool for s in engine.replicas.states)]
    total = conns = 0
    for pool in pools:
        for entry in list(pool.entries()):
            sql = "SELECT count(*) FROM pg_prepared_statements"
            total += int(await entry.conn._conn.fetchval(sql))
            conns += 1
    return total, conns


class MiniRuntime:
    """The 10-line runtime kailash's router needs: it has no ``register_node`` of its own."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}

    def register_node(self, name: str, node: Any) -> None:
        """Register ``node`` and point its ``runtime`` here."""
        self.nodes[name] = node
        node.runtime = self

    def get_node(self, name: str) -> Any:
        """Return the node registered as ``name``."""
        return self.nodes[name]


class ParamsFix:
    """Hands the router's ``parameters`` to kailash's pool as ``params`` (the missing rename)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def process(self, request: dict[str, Any]) -> dict[str, Any]:
        """Forward ``request``, copying ``parameters`` to ``params``."""
        if "parameters" in request:
            request = {**request, "params": request["parameters"]}
        result: dict[str, Any] = await self._pool.process(request)
        return result


# variant → (row name, row note)
KAILASH_VARIANTS: Final[Mapping[str, tuple[str, str]]] = {
    "params": (
        K_PARAMS,
        "as shipped: placeholder + parameters=[key]; its pool reads `params`: dropped",
    ),
    "literal": (K_LITERAL, "as shipped, the id in the SQL text so it runs at all; 10 conns held"),
    "fixed": (K_FIXED, "placeholder + parameters, renamed `params` by a proxy pool (the fix)"),
}


class KailashRouter(CallContender):
    """The ``kailash`` package's QueryRouterNode over its WorkflowConnectionPool.

    Its router executes on a connection it never acquires, so the pool refuses it
    (``Invalid connection_id``) unless that connection is checked out by someone: this
    contender checks out all 10 connections at start and holds them for the whole run.
    """

    def __init__(self, variant: str, db_type: str, target: str, query: str) -> None:
        self.name, self.note = KAILASH_VARIANTS[variant]
        self._variant, self._db_type, self._target, self._query = variant, db_type, target, query
        self._literal = query.rsplit("=", 1)[0] + "= {}"
        self._pool: Any = None
        self._held: list[str] = []
        self._used: Counter[str] = Counter()
        self.router: Any = None

    async def start(self) -> None:
        """Open the pool, check out every connection, register pool and router."""
        from kailash.nodes.data.query_router import QueryRouterNode
        from kailash.nodes.data.workflow_connection_pool import WorkflowConnectionPool

        self._pool = WorkflowConnectionPool(
            name=f"kailash_{self._variant}",
            database_type=self._db_type,
            connection_string=self._target,
            min_connections=CONNECTIONS,
            max_connections=CONNECTIONS,
        )
        await self._pool.process({"operation": "initialize"})
        for _ in range(CONNECTIONS):
            got = await self._pool.process({"operation": "acquire"})
            self._held.append(got["connection_id"])
        runtime = MiniRuntime()
        runtime.register_node("db_pool", self._pool)
        if self._variant == "fixed":
            runtime.nodes["db_pool"] = ParamsFix(self._pool)
        self.router = QueryRouterNode(name="router", connection_pool="db_pool")
        runtime.register_node("router", self.router)

    async def close(self) -> None:
        """Release the held connections and close the pool (only its __aexit__ does)."""
        if self._pool is None:
            return
        for cid in self._held:
            await self._pool.process({"operation": "release", "connection_id": cid})
        self._held.clear()
        await self._pool.__aexit__(None, None, None)

    async def call(self, key: int) -> int:
        """Route the point select; raise when the pool reports a failure."""
        if self._variant == "literal":
            res = await self.router.process({"query": self._literal.format(key)})
        else:
            res = await self.router.process({"query": self._query, "parameters": [key]})
        if not res.get("success", False):
            error = str(res.get("error")).splitlines()[0]
            raise RuntimeError(f"{'params dropped: ' if self._variant == 'params' else ''}{error}")
        self._used[res["connection_id"]] += 1
        return int(res["data"][0]["id"])

    async def report(self) -> str:
        """Return the router's own cache counters."""
        m = await self.router.get_metrics()
        rm, cs = m["router_metrics"], m["cache_stats"]
        busiest = self._used.most_common(1)[0][1] / max(1, self._used.total())
        return (
            f"own metrics: routed {rm['queries_routed']}, cache_hits {rm['cache_hits']}, "
            f"cache_misses {rm['cache_misses']}, 'hit_rate' {cs['hit_rate']:.3f}; ran on "
            f"{len(self._used)} of {CONNECTIONS} conns, the busiest one ran {busiest:.1%}"
        )


def _kailash_missing() -> str | None:
    """Return why kailash's router cannot be imported, or None when it can."""
    try:
        logging.getLogger("kailash").setLevel(logging.CRITICAL)  # it logs every failed route
        from kailash.nodes.data.query_router import QueryRouterNode  # noqa: F401
        from kailash.nodes.data.workflow_connection_pool import WorkflowConnectionPool  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _kailash(db_type: str, target: str, query: str) -> list[Contender]:
    if _kailash_missing():
        return []
    return [KailashRouter(v, db_type, target, query) for v in ("params", "literal", "fixed")]


# --- Line-ups ------------------------------------------------------------------------------


def _raw(name: str, note: str, dsn: str, **connect: Any) -> RawFloor:
    import asyncpg

    floor = RawFloor(name, lambda: asyncpg.connect(dsn, **connect), _pg_fetch, size=CONNECTIONS)
    floor.note = note
    return floor


def pg_lineup(dsn: str, replica_dsn: str | None) -> list[Contender]:
    """Return the sequential/concurrent line-up: floors, our pool and router, kailash.

    The order is shuffled each round (see _common.compare), so no row always follows the
    same neighbour; the paired ratio compares rows within each round.
    """
    out: list[Contender] = [
        _raw(RAW, "floor: raw connection(s) to the primary, no pool", dsn),
        pg_lean(dsn),
        OursRouter(ROUTER, "router.process, no replicas: everything on the primary", dsn),
        OursPool("postgresql", dsn, PG_QUERY),
    ]
    if replica_dsn:
        note = "router.process, read_replicas=[standby]: point selects go to the standby"
        out += [
            _raw(RAW_REPLICA, "floor of the replica row: raw conn(s) to the standby", replica_dsn),
            OursRouter(ROUTER_REPLICA, note, dsn, replica_dsn=replica_dsn),
        ]
    return out + _kailash("postgresql", dsn, PG_QUERY)


def prepared_lineup(dsn: str) -> list[Contender]:
    """Return prepared vs unprepared: raw asyncpg both ways, our router both ways."""
    return [
        _raw(RAW, "floor: asyncpg's own statement cache (named prepared statements)", dsn),
        _raw(
            RAW_UNPREPARED,
            "statement_cache_size=0: unnamed Parse + Bind each query (2 round trips)",
            dsn,
            statement_cache_size=0,
        ),
        OursRouter(ROUTER_PREP, "prepare_statements=True: kn_N statements, per-conn LRU", dsn),
        OursRouter(
            ROUTER_UNPREP, "prepare_statements=False: unnamed (PgBouncer-safe)", dsn, prepare=False
        ),
    ]


def mysql_lineup(dsn: str) -> list[Contender]:
    """Return the MySQL line-up: raw aiomysql, our pool and router, kailash's router."""
    import aiomysql

    params = _mysql_params(dsn)
    floor = RawFloor(
        "aiomysql raw (floor)", lambda: aiomysql.connect(**params), _my_fetch, size=CONNECTIONS
    )
    pool = OursPool("mysql", dsn, PCT_QUERY)
    router = OursRouter("ours router (mysql)", "router.process, primary only", dsn, query=PCT_QUERY)
    return [floor, pool, router, *_kailash("mysql", dsn, PCT_QUERY)]


def sqlite_lineup(path: str) -> list[Contender]:
    """Return the SQLite line-up: raw aiosqlite, the lean layer, our pool and router,
    kailash's router; all on the file database at ``path``."""
    connect = lambda: _lite_connect(path)  # noqa: E731
    floor = RawFloor("aiosqlite raw (floor)", connect, _lite_fetch, size=CONNECTIONS)
    lean = LeanLayer("lean layer (calibration)", connect, _lite_rows, CONNECTIONS)
    pool = OursPool("sqlite", path, LITE_QUERY)
    router = OursRouter(
        "ours router (sqlite)", "router.process", f"sqlite:///{path}", query=LITE_QUERY
    )
    return [floor, lean, pool, router, *_kailash("sqlite", path, LITE_QUERY)]


def _acceptance_driver(results: Sequence[Result], floor: str, router: str) -> None:
    """Print issue #14's sequential goal for aiomysql and aiosqlite: the pool's process()
    and the router each ≤ 1.2× the raw driver, paired."""
    for name in (POOL, router):
        ratio = _paired(results, name, floor)
        print(
            f"  acceptance: {name} = {_fmt(ratio)} {floor}, paired (target ≤ 1.2): "
            f"{verdict(ratio, 1.2)}"
        )


# --- Modes -------------------------------------------------------------------------------


class CpuTimed:
    """Wrap a contender to record this process's CPU time per query of each run.

    Wall time on this machine swings ~2x with the vCPUs' idle state; the client's CPU
    time per query does not, and it is exactly what our layers add over the driver.
    """

    def __init__(self, inner: Contender) -> None:
        self.inner = inner
        self.name, self.note = inner.name, inner.note
        self.cpu_us: list[float] = []  # per run; the first is the warm-up

    async def start(self) -> None:
        """Start the wrapped contender."""
        await self.inner.start()

    async def close(self) -> None:
        """Close the wrapped contender."""
        await self.inner.close()

    async def once(self, key: int) -> int:
        """Select ``key`` once through the wrapped contender."""
        return await self.inner.once(key)

    async def report(self) -> str:
        """Return the wrapped contender's report."""
        return await self.inner.report()

    async def run(self, keys: Sequence[int], callers: int) -> RunSample:
        """Run the wrapped contender, recording process CPU µs per query."""
        cpu = time.process_time()
        sample = await self.inner.run(keys, callers)
        self.cpu_us.append((time.process_time() - cpu) / sample.n * 1e6)
        return sample

    @property
    def cpu(self) -> float | None:
        """Median CPU µs per query over the measured rounds (warm-up excluded)."""
        return statistics.median(self.cpu_us[1:]) if len(self.cpu_us) > 1 else None


async def _measure_mode(
    title: str,
    lineup: list[Contender],
    callers: int,
    args: argparse.Namespace,
    rng: random.Random,
) -> tuple[list[Result], dict[str, float]]:
    """Measure one mode, print its table; return the results and CPU µs/query by name."""
    rounds = make_rounds(rng, args.rounds, args.queries, callers, ROWS)
    warmup = [rng.randint(1, ROWS) for _ in range(max(100, args.queries // 4))]
    timed = [CpuTimed(c) for c in lineup]
    results = await compare(timed, rounds, warmup, callers, args.timeout)
    print("\n" + format_table(title, results, waits=False, floors=FLOORS))
    failed = {r.name for r in results if r.error is not None}
    cpu = {t.name: t.cpu for t in timed if t.cpu is not None and t.name not in failed}
    print("  client CPU µs/query, median of rounds (what each stack costs this process):")
    print("    " + "; ".join(f"{name} {us:.1f}" for name, us in cpu.items()))
    for result in results:
        if result.report:
            print(f"  {result.name}: {result.report}")
    return results, cpu


def _paired(results: Sequence[Result], name: str, floor: str) -> float | None:
    by_name = {r.name: r for r in results}
    a, b = by_name.get(name), by_name.get(floor)
    if a is None or b is None or a.error or b.error:
        return None
    return a.paired_ratio(b)


def _paired_gap(results: Sequence[Result], name: str, floor: str) -> float | None:
    """Median over rounds of ``name``'s µs/query minus ``floor``'s in the same round."""
    by_name = {r.name: r for r in results}
    a, b = by_name.get(name), by_name.get(floor)
    if a is None or b is None or a.error or b.error or not a.round_us:
        return None
    return statistics.median(x - y for x, y in zip(a.round_us, b.round_us, strict=False))


def _quartiles(results: Sequence[Result], name: str, floor: str) -> str:
    """Return the quartiles of ``name``'s per-round ratios to ``floor`` as "q1–q3"."""
    by_name = {r.name: r for r in results}
    a, b = by_name.get(name), by_name.get(floor)
    if a is None or b is None or a.error or b.error or len(a.round_us) < 4:
        return "n/a"
    ratios = [x / y for x, y in zip(a.round_us, b.round_us, strict=False) if y]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"q1–q3 {q1:.2f}–{q3:.2f}"


def _acceptance_sequential(results: Sequence[Result], cpu: Mapping[str, float]) -> None:
    """Print: router ≤ 1.15× raw asyncpg (issue #14); kailash's router ≥ 3× slower."""
    vs_raw = _paired(results, ROUTER, RAW)
    print(
        f"  acceptance: router.process primary-only = {_fmt(vs_raw)} raw asyncpg, paired "
        f"(target ≤ 1.15): {verdict(vs_raw, 1.15)}; "
        f"per-round ratios {_quartiles(results, ROUTER, RAW)}; "
        f"it adds {_fmt(_paired_gap(results, ROUTER, RAW), ' µs')}/query "
        f"(pool.process adds {_fmt(_paired_gap(results, POOL, RAW), ' µs')})"
    )
    if ROUTER in cpu and RAW in cpu:
        extra = cpu[ROUTER] - cpu[RAW]
        pool = f"{cpu[POOL] - cpu[RAW]:.1f}" if POOL in cpu else "n/a"
        print(
            f"  client CPU per query: router {cpu[ROUTER]:.1f} µs vs raw asyncpg {cpu[RAW]:.1f} µs"
            f" (+{extra:.1f} µs; pool.process +{pool} µs)"
        )
    lit, fix = _paired(results, K_LITERAL, ROUTER), _paired(results, K_FIXED, ROUTER)
    if lit is None and fix is None:
        print("  acceptance: ours vs kailash's router: n/a (kailash not importable or failed)")
    else:
        print(
            f"  acceptance: kailash router literal id (as shipped) / ours = {_fmt(lit)}, paired "
            f"(target ≥ 3): {verdict(lit, 3, at_least=True)}; with the params fix: {_fmt(fix)}"
        )
    rep = _paired(results, ROUTER_REPLICA, RAW_REPLICA)
    if rep is not None:
        gap = _fmt(_paired_gap(results, ROUTER_REPLICA, RAW_REPLICA), " µs")
        print(f"  router + replica = {_fmt(rep)} raw replica connection, paired (adds {gap})")


def _acceptance_prepared(results: Sequence[Result], lineup: Sequence[Contender]) -> None:
    """Print the prepared/unprepared ratios and the hit-rate acceptance line."""
    print(
        f"  unprepared / prepared router = {_fmt(_paired(results, ROUTER_UNPREP, ROUTER_PREP))}"
        f", prepared router = {_fmt(_paired(results, ROUTER_PREP, RAW))} raw"
        f", raw unprepared / raw = {_fmt(_paired(results, RAW_UNPREPARED, RAW))} (paired)"
    )
    failed = {r.name for r in results if r.error is not None}
    for contender in lineup:
        stats = getattr(contender, "prepared", None)
        if contender.name != ROUTER_PREP or not stats or "server" not in stats:
            continue
        if contender.name in failed:
            print(f"  acceptance: prepared hit rate n/a ({contender.name} failed)")
            continue
        rate, server, cached = stats["hit_rate"], stats["server"], stats["cached"]
        outcome = "PASS" if rate >= 0.95 and server == cached else "FAIL"
        print(
            f"  acceptance: prepared hit rate {rate:.2%} over {stats['lookups']} lookups "
            f"(target ≥ 95%), pg_prepared_statements {server} vs cached_statements() "
            f"{cached} (must match): {outcome}"
        )


# --- Classification ----------------------------------------------------------------------


def classification_summary(rounds: int, hit_calls: int) -> list[str]:
    """Time classify() on a cache hit and a miss over two corpora; return summary lines.

    Hit: the module-level ``classify`` the router calls, warm, in a tight loop (median over
    rounds of ns per call). Miss: a fresh ``Classifier`` per round on texts with a
    round-numbered comment appended (µs per statement, median). bench_classify.py has the
    detailed version (pure vs compiled sqlglot, bare parse).
    """
    from kailash_nodes.sql import Classifier, classify

    sets: dict[str, Sequence[tuple[str, str]]] = {"realistic": REALISTIC}
    try:
        sys.path.insert(0, REPO_ROOT)
        from tests.sql.corpus import CORPUS

        sets["tricky corpus"] = [(c.sql, c.dialect) for c in CORPUS]
    except ImportError:
        pass
    lines = []
    for label, statements in sets.items():
        for q, d in statements:
            classify(q, d)
        keys = [statements[i % len(statements)] for i in range(hit_calls)]
        hit, miss = [], []
        for r in range(rounds):
            t0 = time.perf_counter()
            for q, d in keys:
                classify(q, d)
            hit.append((time.perf_counter() - t0) / hit_calls * 1e9)
            fresh, classifier = [(f"{q} /* r{r} */", d) for q, d in statements], Classifier()
            t0 = time.perf_counter()
            for q, d in fresh:
                classifier.classify(q, d)
            miss.append((time.perf_counter() - t0) / len(fresh) * 1e6)
        lines.append(
            f"  {label} ({len(statements)} statements, pg/mysql/sqlite): hit "
            f"{statistics.median(hit):.0f} ns/call (min {min(hit):.0f}), miss "
            f"{statistics.median(miss):.0f} µs/statement (min {min(miss):.0f}); "
            f"miss/hit ≈ {statistics.median(miss) * 1e3 / statistics.median(hit):.0f}×"
        )
    return lines


# --- Profile -----------------------------------------------------------------------------


async def profile_router(dsn: str, calls: int, top: int = 15) -> str:
    """cProfile ``calls`` sequential router.process point selects; return the top lines."""
    contender = OursRouter(ROUTER, "", dsn)
    await contender.start()
    try:
        keys = [random.Random(7).randint(1, ROWS) for _ in range(calls)]
        await contender.run(keys[:500], 0)
        profiler = cProfile.Profile()
        profiler.enable()
        sample = await contender.run(keys, 0)
        profiler.disable()
    finally:
        await contender.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    body = text[text.find("   ncalls") :].rstrip()
    per_call = sample.wall_s / calls * 1e6
    head = f"cProfile of {calls} sequential router.process calls ({per_call:.0f} µs/call profiled)"
    return head + ", by tottime:\n" + body + "\n" + _own_time(stats, calls, per_call)


def _own_time(stats: pstats.Stats, calls: int, per_call: float) -> str:
    """Sum tottime per kailash_nodes module: the Python our stack adds per call."""
    by_module: Counter[str] = Counter()
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _func), row in table.items():
        if (mark := filename.find("kailash_nodes/")) >= 0:
            by_module[filename[mark + len("kailash_nodes/") :]] += row[2]
    total = sum(by_module.values()) / calls * 1e6
    parts = ", ".join(f"{m} {t / calls * 1e6:.1f}" for m, t in by_module.most_common(6))
    return (
        f"kailash_nodes code's own time: {total:.1f} µs/call ({total / per_call:.0%} of the "
        f"profiled call; profiling inflates it): {parts}"
    )


# --- Driving -----------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-dsn", default=os.environ.get("KN_PG_DSN"))
    parser.add_argument("--replica-dsn", default=os.environ.get("KN_PG_REPLICA_DSN"))
    parser.add_argument("--mysql-dsn", default=os.environ.get("KN_MYSQL_DSN"))
    parser.add_argument(
        "--sqlite-path", default=str(Path(tempfile.gettempdir()) / "kn_bench_router.sqlite3")
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}"
    )
    parser.add_argument("--queries", type=int, help="queries per contender per round")
    parser.add_argument("--rounds", type=int, help="measured rounds per contender")
    parser.add_argument("--concurrency", help="concurrent caller counts, e.g. 16,64")
    parser.add_argument("--quick", action="store_true", help="3 rounds × 1000, 64 callers: ≤ 30 s")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N calls")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per round")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave CPU placement to the scheduler (default: local PostgreSQL on its own CPUs)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.queries = args.queries or 1000
    args.rounds = args.rounds or (3 if args.quick else 15)
    concurrency = args.concurrency or ("64" if args.quick else "16,64")
    args.concurrency = [int(c) for c in concurrency.split(",")]
    if min(args.queries, args.rounds, *args.concurrency) < 1:
        parser.error("--queries, --rounds and --concurrency values must be >= 1")
    args.modes = set(args.modes.split(","))
    if unknown := args.modes - set(MODES):
        parser.error(f"unknown mode(s) {sorted(unknown)}; choose from {', '.join(MODES)}")
    if not args.pg_dsn:
        parser.error("no PostgreSQL DSN: pass --pg-dsn or set KN_PG_DSN")
    return args


async def _replica_ready(dsn: str, timeout: float = 15.0) -> str | None:
    """Wait until the standby holds the table's rows; return why not, or None."""
    import asyncpg

    try:
        con = await asyncpg.connect(dsn, timeout=5)
    except Exception as exc:
        return describe(exc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await con.fetchval("SELECT count(*) FROM bench_items") >= ROWS:
                    return None
            except asyncpg.UndefinedTableError:
                pass
            if time.monotonic() > deadline:
                return f"bench_items has not reached the standby after {timeout:.0f} s"
            await asyncio.sleep(0.2)
    finally:
        await con.close()


def _notes(lineup: Sequence[Contender]) -> str:
    return "\n".join(f"  {c.name}: {c.note}" for c in lineup)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


async def _postgres(args: argparse.Namespace, rng: random.Random, keep: Keep) -> None:
    """Run the PostgreSQL modes selected in ``args.modes``."""
    print(f"\n=== PostgreSQL: {await _pg_prepare(args.pg_dsn)}")
    replica = args.replica_dsn
    if replica and (why := await _replica_ready(replica)):
        print(f"  replica rows skipped: {why}")
        replica = None
    if missing := _kailash_missing():
        print(f"  kailash QueryRouterNode skipped (not importable: {missing[:100]})")
    if {"sequential", "concurrent"} & args.modes:
        print(_notes(pg_lineup(args.pg_dsn, replica)))
    if "sequential" in args.modes:
        title = "PostgreSQL — sequential: one caller in a loop, point select by primary key"
        results, cpu = await _measure_mode(title, pg_lineup(args.pg_dsn, replica), 0, args, rng)
        _acceptance_sequential(results, cpu)
        keep("sequential", 0, results, cpu)
    for callers in args.concurrency if "concurrent" in args.modes else ():
        title = (
            f"PostgreSQL — {callers} concurrent callers, {CONNECTIONS} connections per pool "
            f"(floors: {min(callers, CONNECTIONS)} raw connections, one worker each)"
        )
        lineup = pg_lineup(args.pg_dsn, replica)
        results, cpu = await _measure_mode(title, lineup, callers, args, rng)
        if callers == 64:  # issue #14: router ≤ 1.5× the raw workers at 64 callers
            vs_raw = _paired(results, ROUTER, RAW)
            print(
                f"  acceptance: router.process primary-only = {_fmt(vs_raw)} the raw workers, "
                f"paired (target ≤ 1.5): {verdict(vs_raw, 1.5)}"
            )
        keep("concurrent", callers, results, cpu)
    if "prepared" in args.modes:
        lineup = prepared_lineup(args.pg_dsn)
        print("\n" + _notes(lineup))
        title = "PostgreSQL — prepared vs unprepared, sequential"
        results, cpu = await _measure_mode(title, lineup, 0, args, rng)
        _acceptance_prepared(results, lineup)
        keep("prepared", 0, results, cpu)


async def _mysql(args: argparse.Namespace, rng: random.Random, keep: Keep) -> None:
    """Run the brief MySQL table (sequential, at most 5 rounds)."""
    if not args.mysql_dsn:
        print("\n=== MySQL: skipped, no DSN (--mysql-dsn or KN_MYSQL_DSN)")
        return
    try:
        version = await _my_prepare(args.mysql_dsn)
    except Exception as exc:
        print(f"\n=== MySQL: skipped ({describe(exc)})")
        return
    lineup = mysql_lineup(args.mysql_dsn)
    print(f"\n=== MySQL/MariaDB: {version}\n" + _notes(lineup))
    title = "MySQL/MariaDB — sequential (no server-side prepare in aiomysql)"
    await _brief(title, lineup, "mysql", args, rng, keep)


async def _sqlite(args: argparse.Namespace, rng: random.Random, keep: Keep) -> None:
    """Run the brief SQLite table (sequential, at most 5 rounds)."""
    version = await _lite_prepare(args.sqlite_path)
    lineup = sqlite_lineup(args.sqlite_path)
    print(f"\n=== SQLite: {version}\n" + _notes(lineup))
    title = "SQLite — sequential (a file database; each connection has its worker thread)"
    await _brief(title, lineup, "sqlite", args, rng, keep)


async def _brief(
    title: str,
    lineup: list[Contender],
    backend: str,
    args: argparse.Namespace,
    rng: random.Random,
    keep: Keep,
) -> None:
    """Measure a driver's sequential table in at most 5 rounds; print its goal lines."""
    brief = argparse.Namespace(**{**vars(args), "rounds": min(args.rounds, 5)})
    results, cpu = await _measure_mode(title, lineup, 0, brief, rng)
    _acceptance_driver(results, lineup[0].name, f"ours router ({backend})")
    keep(f"{backend} sequential", 0, results, cpu)


async def _main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print("\n".join(machine_facts(PACKAGES)) + f"; {_load()}")
    print(
        f"per mode: {args.rounds} rounds × {args.queries} queries per contender (sequential: "
        f"{args.rounds * 4} × {args.queries // 4}), in a fresh random order each round, "
        f"median reported; {CONNECTIONS} connections per pool; table of {ROWS} rows"
    )
    rng = random.Random(args.seed)
    report: list[dict[str, Any]] = []

    def keep(mode: str, callers: int, results: Sequence[Result], cpu: dict[str, float]) -> None:
        rows = [{**r.as_dict(), "cpu_us_per_query": cpu.get(r.name)} for r in results]
        report.append({"mode": mode, "callers": callers, "results": rows})

    pg_modes = {"sequential", "concurrent", "prepared"} & args.modes
    postmasters = await local_postmasters([args.pg_dsn, args.replica_dsn] if pg_modes else [])
    with separate_cpus(postmasters, args.pin) as placement:
        print(placement + " (PostgreSQL only; MariaDB is left to the scheduler)")
        if pg_modes:
            await _postgres(args, rng, keep)
        if "mysql" in args.modes:
            await _mysql(args, rng, keep)
        if "sqlite" in args.modes:
            await _sqlite(args, rng, keep)
    if "classify" in args.modes:
        print("\n=== Classification cost (kailash_nodes.sql.classify; router hot path = hit)")
        calls = 20_000 if args.quick else 100_000
        print("\n".join(classification_summary(3 if args.quick else 5, calls)))
    if args.profile:
        print("\n" + await profile_router(args.pg_dsn, args.profile))
    print(f"\ntotal time: {time.perf_counter() - started:.0f} s; {_load()}")
    if args.json:
        write_json(args.json, PACKAGES, report)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(_parse_args())))
