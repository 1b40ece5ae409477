"""The demo: a workflow run by `LocalRuntime`, the router in front of an adaptive pool.

`run_demo` builds a `WorkflowConnectionPool` (adaptive sizing, statement recording) and a
`QueryRouterNode` (read/write split, pattern learning), optionally with a read-replica
pool, runs a three-step workflow once per customer, two session transactions and a burst
of concurrent reads, and prints what the router, the pattern tracker, the sizing
controller and the stats report about them. It uses public API only: node ``process()``
operations, ``get_metrics()``, ``adaptive_controller.get_adjustment_history()``,
``pattern_tracker.predict_next()`` and the names exported from `kailash_nodes`.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowBuilder, WorkflowConnectionPool
from kailash_nodes.secret import redact_dsn

__all__ = ["Demo", "report", "run_demo"]

CUSTOMERS = 20
STEPS = {  # the workflow: one customer's lookup -> top orders -> mark shipped
    "lookup": "SELECT customer, count(*) AS orders, sum(amount) AS total FROM {t} "
    "WHERE customer = ? GROUP BY customer",
    "top_orders": "SELECT id, amount, status FROM {t} WHERE customer = ? "
    "ORDER BY amount DESC LIMIT 3",
    "mark_shipped": "UPDATE {t} SET status = 'S' WHERE customer = ? AND status = 'N'",
}
# A read that does some work, so that concurrent callers hold their connections a while.
BURST_QUERY = "SELECT count(*) AS pairs FROM {t} a JOIN {t} b ON a.amount < b.amount"


class Demo:
    """The nodes of the demo, what the router answered, and the printing."""

    def __init__(self, dsn: str, replica_dsn: str | None, out: TextIO) -> None:
        self.dsn, self.replica_dsn, self.out = dsn, replica_dsn, out
        self.table = f"demo_orders_{uuid.uuid4().hex[:6]}"
        self.pools = {"db_pool": _pool("db_pool", dsn)}
        if replica_dsn:
            self.pools["replica_pool"] = _pool("replica_pool", replica_dsn)
        self.router = QueryRouterNode(
            name="router",
            connection_pool="db_pool",
            read_replicas=["replica_pool"] if replica_dsn else [],
            enable_read_write_split=True,
            pattern_learning=True,
        )
        self.runtime = LocalRuntime()
        for name, pool in self.pools.items():
            self.runtime.register_node(name, pool)
        self.runtime.register_node("router", self.router)
        self.log: list[tuple[str, dict[str, Any]]] = []  # (query, routing_metadata)
        self.shapes: dict[str, str] = {}  # workflow step -> its statement's fingerprint

    def say(self, text: str = "") -> None:
        """Print one line of the report."""
        print(text, file=self.out)

    def head(self, title: str) -> None:
        """Print a section heading."""
        self.say(f"\n== {title} ==")

    async def route(
        self,
        query: str,
        params: Sequence[Any] = (),
        session_id: str | None = None,
        *,
        check: bool = True,
    ) -> dict[str, Any]:
        """Send ``query`` through the router, log its routing metadata, return the result.

        Raises RuntimeError if the database rejected the statement, unless ``check`` is
        False (then the result says so).
        """
        inputs: dict[str, Any] = {"query": query, "parameters": list(params)}
        if session_id is not None:
            inputs["session_id"] = session_id
        return self.logged(query, await self.router.process(inputs), check)

    def logged(self, query: str, res: dict[str, Any], check: bool = True) -> dict[str, Any]:
        """Log a router result; raise RuntimeError if it failed and ``check`` is True."""
        self.log.append((query, res["routing_metadata"]))
        if check and not res["success"]:
            raise RuntimeError(f"{_short(query, 60)!r} failed: {res['error']}")
        return res

    # ------------------------------------------------------------------ the workload

    async def setup(self, rows: int) -> None:
        """Create the orders table and insert ``rows`` orders, 50 per statement."""
        await self.route(
            f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, customer VARCHAR(20) NOT NULL,"
            " amount NUMERIC(10, 2) NOT NULL, status VARCHAR(10) NOT NULL)"
        )
        rng = random.Random(7)
        orders = [
            (i, _customer(i % CUSTOMERS), round(rng.uniform(5, 500), 2), rng.choice("NPS"))
            for i in range(1, rows + 1)
        ]
        for start in range(0, rows, 50):
            chunk = orders[start : start + 50]
            values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            await self.route(
                f"INSERT INTO {self.table} VALUES {values}", [v for o in chunk for v in o]
            )

    async def workflow_runs(self, runs: int) -> dict[str, Any]:
        """Run the three-step workflow ``runs`` times; return the last run's results."""
        wf = WorkflowBuilder()
        for step, query in STEPS.items():
            wf.add_node(step, self.router, query=query.format(t=self.table))
        wf.add_connection("lookup", "success", "top_orders", "after")  # run in this order
        wf.add_connection("top_orders", "success", "mark_shipped", "after")
        workflow = wf.build()
        results: dict[str, Any] = {}
        for run in range(runs):
            params = {step: {"parameters": [_customer(run % CUSTOMERS)]} for step in STEPS}
            results, _ = await self.runtime.execute_async(workflow, parameters=params)
            for step in STEPS:
                self.logged(STEPS[step].format(t=self.table), results[step])
                self.shapes[step] = results[step]["routing_metadata"]["fingerprint"]
        return results

    async def transactions(self) -> list[str]:
        """Commit one insert and roll back another in router sessions; return report lines."""
        lines = []
        for session, end, order_id in (
            ("demo-commit", "COMMIT", 9001),
            ("demo-rollback", "ROLLBACK", 9002),
        ):
            await self.route("BEGIN", session_id=session)
            await self.route(
                f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                [order_id, "cust-new", 42.0, "N"],
                session,
            )
            await self.route(end, session_id=session)
            back = await self.route(
                f"SELECT id FROM {self.table} WHERE id = ?", [order_id], session
            )
            await self.router.process({"operation": "end_session", "session_id": session})
            found = "present" if back["data"] else "absent"
            lines.append(f"  session {session!r}: BEGIN; INSERT order {order_id}; {end}")
            lines.append(
                f"    read back in the session on {back['routing_metadata']['target']}:"
                f" {back['row_count']} row(s): order {order_id} {found}"
            )
        return lines

    async def burst(self, callers: int, seconds: float) -> int:
        """Send ``BURST_QUERY`` from ``callers`` concurrent callers for ``seconds``; return
        how many statements ran."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        query = BURST_QUERY.format(t=self.table)

        async def caller() -> int:
            done = 0
            while loop.time() < deadline:
                await self.route(query)
                done += 1
            return done

        return sum(await asyncio.gather(*(caller() for _ in range(callers))))

    async def drop(self) -> None:
        """Drop the demo's table (on the primary)."""
        await self.route(f"DROP TABLE IF EXISTS {self.table}")


def _pool(name: str, dsn: str) -> WorkflowConnectionPool:
    return WorkflowConnectionPool(
        name=name,
        connection_string=dsn,
        min_connections=2,
        max_connections=8,
        adaptive_sizing=True,
        enable_query_routing=True,
    )


def _customer(n: int) -> str:
    return f"cust-{n:02d}"


def _short(text: str, width: int) -> str:
    """Return ``text`` on one line, cut to ``width`` characters.

    >>> _short("SELECT a,\\n  b FROM t", 12)
    'SELECT a,...'
    """
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 3] + "..."


async def report(demo: Demo, rows: int, runs: int) -> None:
    """Run the workload and print each section."""
    replicas = [name for name in demo.pools if name != "db_pool"] or "none"
    demo.say(
        "  pools: min_connections=2, max_connections=8, adaptive_sizing=True,"
        " enable_query_routing=True"
    )
    demo.say(
        f"  router: enable_read_write_split=True, pattern_learning=True, read_replicas={replicas}"
    )
    await demo.setup(rows)
    workflow_section(demo, await demo.workflow_runs(runs), rows, runs)
    await replica_section(demo)
    demo.head("session transactions (router session_id)")
    for line in await demo.transactions():
        demo.say(line)
    loop = asyncio.get_running_loop()
    started = loop.time()
    ran = await demo.burst(callers=24, seconds=0.8)
    await asyncio.sleep(1.2)  # quiet: the sizing controller may shrink the pool back
    routing_section(demo)
    await cache_section(demo)
    prediction_section(demo)
    for pool in demo.pools.values():  # the workload is over: what was decided is final
        if pool.adaptive_controller is not None:
            await pool.adaptive_controller.stop()
    stats = {name: await pool.process({"operation": "stats"}) for name, pool in demo.pools.items()}
    demo.head("adaptive sizing (adaptive_controller.get_adjustment_history())")
    demo.say(
        f"  burst through the router: 24 concurrent callers, {ran} reads in 0.8 s,"
        f" then 1.2 s quiet ({loop.time() - started:.1f} s)"
    )
    for name, pool in demo.pools.items():
        sizing_lines(demo, name, pool, stats[name])
    demo.head("pool stats (process({'operation': 'stats'}))")
    for pool_stats in stats.values():
        pool_lines(demo, pool_stats)
    await router_section(demo)


def workflow_section(demo: Demo, last: dict[str, Any], rows: int, runs: int) -> None:
    """Print the workflow and the results of its last run."""
    demo.head(f"workflow (LocalRuntime): lookup -> top_orders -> mark_shipped, {runs} runs")
    demo.say(f"  {rows} orders of {CUSTOMERS} customers; one run per customer; the last run:")
    for step in STEPS:
        res = last[step]
        shown = "; ".join(" ".join(f"{k}={v}" for k, v in row.items()) for row in res["data"])
        demo.say(
            f"  {step:<13} on {res['routing_metadata']['target']:<20}"
            f" row_count={res['row_count']} {_short(shown, 56)}".rstrip()
        )


async def replica_section(demo: Demo) -> None:
    """Print where reads go; with a replica, prove it with ``pg_is_in_recovery()``."""
    demo.head("read/write split")
    if not demo.replica_dsn:
        demo.say("  no --replica-dsn: no replica pool, so reads run on the primary")
        return
    # The primary's catalog says pg_is_in_recovery() only reads (a replica may run it);
    # txid_current() assigns a transaction id, which a standby cannot: the primary.
    for query, for_replica in (
        ("SELECT pg_is_in_recovery() AS in_recovery", True),
        ("SELECT pg_is_in_recovery() AS in_recovery, txid_current() > 0 AS xid", False),
    ):
        res = await demo.route(query, check=False)
        answer = res["data"][0]["in_recovery"] if res["success"] else f"error: {res['error']}"
        routing = res["routing_metadata"]
        demo.say(f"  {query:<70} on {routing['target']}: in_recovery={answer}")
        if for_replica and not routing["target"].startswith("replica:"):
            # say why the replica did not serve it (a lag, a ban, or the classification)
            replicas = (await demo.router.get_metrics())["replicas"]
            demo.say(f"    not on a replica: {routing['reason']}; replicas: {replicas}")


def routing_section(demo: Demo) -> None:
    """Print each distinct statement's routing decision, with counts."""
    demo.head("routing decisions (routing_metadata of every statement, grouped)")
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for query, meta in demo.log:
        text = _short(query.replace(demo.table, "T"), 36)
        key = (text, meta["query_type"], meta["target"], meta["reason"])
        counts = groups.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += bool(meta["cache_hit"])
    demo.say(f"  (T = {demo.table}; hits = cache_hit true)")
    demo.say(f"  {'n':>4} {'hits':>4}  {'query_type':<13} {'target':<20} {'reason':<24} statement")
    for (text, qtype, target, reason), (n, hits) in groups.items():
        demo.say(f"  {n:>4} {hits:>4}  {qtype:<13} {target:<20} {_short(reason, 24):<24} {text}")


async def cache_section(demo: Demo) -> None:
    """Print the statement-cache hits the router reported."""
    demo.head("statement cache")
    cache = (await demo.router.get_metrics())["cache_stats"]
    hits = sum(1 for _, meta in demo.log if meta["cache_hit"])
    demo.say(f"  routing_metadata: cache_hit true for {hits} of {len(demo.log)} statements")
    demo.say(
        f"  cache_stats: {cache['statement_cache']} hit_rate {cache['hit_rate']:.2f}"
        f" ({cache['hits']} hits of {cache['lookups']} lookups),"
        f" {cache['total_entries']} statements cached now,"
        f" server_side_prepare={cache['server_side_prepare']}"
    )
    if cache["prepared"]["why"]:
        demo.say(f"  nothing prepared on the server: {cache['prepared']['why']}")


def prediction_section(demo: Demo) -> None:
    """Print what the pool's pattern tracker predicts after each workflow step."""
    demo.head("learned next-statement predictions (pool.pattern_tracker.predict_next)")
    tracker = demo.pools["db_pool"].pattern_tracker
    if tracker is None:
        demo.say("  the pool records nothing (enable_query_routing is off)")
        return
    names = {shape: step for step, shape in demo.shapes.items()}
    for step, shape in demo.shapes.items():
        best = tracker.predict_next(shape, k=1)
        if not best:
            demo.say(f"  after {step:<13} no prediction: nothing followed it in a session")
            continue
        p = best[0]
        demo.say(
            f"  after {step:<13} -> {names.get(p.shape, _short(p.shape, 30)):<13}"
            f" probability {p.probability:.2f}, confidence {p.confidence:.2f}"
            f" ({p.support} observations)"
        )
    totals = tracker.insights(top=1)["totals"]
    demo.say(
        f"  tracker: {totals['records']} statements recorded, {totals['shapes']} shapes,"
        f" {totals['transitions']} transitions"
    )


def sizing_lines(
    demo: Demo, name: str, pool: WorkflowConnectionPool, stats: dict[str, Any]
) -> None:
    """Print the size changes ``pool``'s adaptive controller recorded."""
    controller = pool.adaptive_controller
    history = controller.get_adjustment_history() if controller is not None else []
    if not history:
        perf = stats["performance"]
        demo.say(
            f"  {name}: no size change recorded (the controller records every change);"
            f" its acquires waited p95 {perf['p95_acquisition_time_ms']:.2f} ms"
            f" ({perf['acquisition_samples']} samples)"
        )
        return
    for h in history[:6]:
        demo.say(
            f"  {name} {h['timestamp'][11:23]}  {h['from_size']} -> {h['to_size']}:"
            f" {h['reason']} ({h['samples']} samples)"
        )
    if len(history) > 6:
        demo.say(f"  {name}: {len(history) - 6} more")


def pool_lines(demo: Demo, stats: dict[str, Any]) -> None:
    """Print a few key lines of one pool's stats."""
    state, conns, perf = stats["current_state"], stats["connections"], stats["performance"]
    demo.say(
        f"  {stats['pool_name']}: {state['total_connections']} connections"
        f" ({state['active_connections']} active, {state['idle_connections']} idle),"
        f" {conns['created']} created, {conns['recycled']} recycled, {conns['failed']} failed;"
        f" {stats['queries']['executed']} queries, {stats['queries']['errors']} errors"
    )
    for what, key, samples in (
        ("acquire wait", "acquisition", "acquisition_samples"),
        ("query time  ", "query", "query_samples"),
    ):
        demo.say(
            f"    {what} p50/p95/p99 {perf[f'p50_{key}_time_ms']:.2f}/"
            f"{perf[f'p95_{key}_time_ms']:.2f}/{perf[f'p99_{key}_time_ms']:.2f} ms"
            f" ({perf[samples]} samples)"
        )


async def router_section(demo: Demo) -> None:
    """Print a few key lines of the router's metrics."""
    m = await demo.router.get_metrics()
    r, learning = m["router_metrics"], m["pattern_learning"]
    demo.head("router metrics (router.get_metrics())")
    demo.say(
        f"  {r['queries_routed']} routed: {r['reads_to_replicas']} reads to replicas,"
        f" {r['reads_to_primary']} reads to primary, {r['writes_to_primary']} writes to primary"
    )
    demo.say(f"  {r['replica_fallbacks']} replica fallbacks, {r['routing_errors']} errors")
    demo.say(
        f"  routing time avg/p95/p99 {r['avg_routing_time_ms']:.2f}/"
        f"{r['p95_routing_time_ms']:.2f}/{r['p99_routing_time_ms']:.2f} ms"
        f" ({r['routing_samples']} samples)"
    )
    ahead = "on" if learning["enabled"] else "off (prepare_predicted=False, the default)"
    demo.say(
        f"  preparing predicted statements ahead: {ahead}; {learning['prewarms']} prepared"
        f" ahead, {learning['prewarms_used']} of them used"
    )
    demo.say(
        f"  sessions: {m['active_transactions']} open transactions,"
        f" {m['pinned_sessions']} pinned, {m['sessions_expired']} expired"
    )
    for name, rep in m["replicas"].items():
        lag = "unknown" if rep["lag_seconds"] is None else f"{rep['lag_seconds']:.3f} s"
        demo.say(
            f"  replica {name}: healthy={rep['healthy']}, lag {lag}, {rep['reads']} reads,"
            f" {rep['checks']} checks, {rep['failures']} failures"
        )


async def run_demo(
    dsn: str | None = None,
    replica_dsn: str | None = None,
    *,
    rows: int = 200,
    runs: int = 12,
    out: TextIO | None = None,
) -> int:
    """Run the demo on ``dsn`` (default: SQLite in a temporary directory); return 0.

    ``replica_dsn`` adds a read-replica pool (a PostgreSQL streaming replica of ``dsn``);
    the report goes to ``out`` (default: standard output).
    Raises what the pools and the router raise (ConnectionFailed for a database that is
    down), and RuntimeError if the database rejects a demo statement.
    """
    with tempfile.TemporaryDirectory() as tmp:
        demo = Demo(dsn or f"sqlite:///{Path(tmp) / 'demo.db'}", replica_dsn, out or sys.stdout)
        demo.say(f"kailash-nodes demo on {redact_dsn(demo.dsn)}")
        async with demo.runtime:
            try:
                await report(demo, rows, runs)
            finally:
                await demo.drop()
    return 0
