"""The `kailash-nodes` command: a demo workflow on the pool (embedded SQLite by default)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kailash_nodes.nodes import WorkflowConnectionPool
from kailash_nodes.runtime import LocalRuntime, Node, WorkflowBuilder

__all__ = ["main"]


class SeedOrders(Node):
    """Create an orders table and fill it from many concurrent callers."""

    def __init__(self, name: str, pool: WorkflowConnectionPool, table: str) -> None:
        super().__init__(name=name)
        self.pool, self.table = pool, table

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Insert ``rows`` orders with ``workers`` concurrent callers; return the count."""
        rows, workers = int(inputs.get("rows", 500)), int(inputs.get("workers", 8))
        async with self.pool.connection() as conn:
            await self.pool.execute(
                conn,
                f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, customer VARCHAR(20) NOT NULL,"
                " amount NUMERIC(10, 2) NOT NULL, status VARCHAR(10) NOT NULL)",
            )
        rng = random.Random(7)
        orders = [
            (i, f"cust-{rng.randrange(25):02d}", round(rng.uniform(5, 500), 2), rng.choice("NPS"))
            for i in range(1, rows + 1)
        ]

        async def insert(chunk: Sequence[tuple[int, str, float, str]]) -> None:
            for order in chunk:
                async with self.pool.connection() as conn:
                    res = await self.pool.execute(
                        conn, f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)", list(order)
                    )
                    if not res["success"]:
                        raise RuntimeError(res["error"])

        await asyncio.gather(*(insert(orders[w::workers]) for w in range(workers)))
        return {"rows": rows}


class Report(Node):
    """Run one report query through the pool's process() surface."""

    def __init__(self, name: str, pool: WorkflowConnectionPool, query: str) -> None:
        super().__init__(name=name)
        self.pool, self.query = pool, query

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Acquire, execute with ``params``, release; return the rows."""
        conn = await self.pool.process({"operation": "acquire"})
        try:
            res = await self.pool.process(
                {
                    "operation": "execute",
                    "connection_id": conn["connection_id"],
                    "query": self.query,
                    "params": inputs.get("params"),
                }
            )
        finally:
            await self.pool.process(
                {"operation": "release", "connection_id": conn["connection_id"]}
            )
        return {"rows": res["data"], "seeded": inputs.get("seeded")}


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    if not rows:
        print("  (no rows)")
        return
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


def _print_stats(stats: dict[str, Any]) -> None:
    perf, state, conns = stats["performance"], stats["current_state"], stats["connections"]
    print("\npool stats")
    print(
        f"  connections: total={state['total_connections']} active={state['active_connections']}"
        f" idle={state['idle_connections']} created={conns['created']}"
        f" recycled={conns['recycled']} failed={conns['failed']}"
    )
    print(
        f"  queries: {stats['queries']['executed']} executed, {stats['queries']['errors']} errors"
    )
    for what, key in (("acquire wait", "acquisition"), ("query time", "query")):
        samples = perf["acquisition_samples" if key == "acquisition" else "query_samples"]
        print(
            f"  {what}: p50={perf[f'p50_{key}_time_ms']:.3f} ms"
            f" p95={perf[f'p95_{key}_time_ms']:.3f} ms p99={perf[f'p99_{key}_time_ms']:.3f} ms"
            f" ({samples} samples)"
        )


async def demo(dsn: str | None, rows: int) -> int:
    """Run the demo workflow: seed orders concurrently, then two reports."""
    with tempfile.TemporaryDirectory() as tmp:
        dsn = dsn or f"sqlite:///{Path(tmp) / 'demo.db'}"
        table = f"demo_orders_{uuid.uuid4().hex[:8]}"
        pool = WorkflowConnectionPool(
            name="db_pool", connection_string=dsn, min_connections=2, max_connections=8
        )
        runtime = LocalRuntime()
        runtime.register_node("db_pool", pool)
        wf = WorkflowBuilder()
        wf.add_node("seed", SeedOrders("seed", pool, table))
        wf.add_node(
            "by_status",
            Report(
                "by_status",
                pool,
                "SELECT status, count(*) AS orders, ROUND(sum(amount), 2) AS total "
                f"FROM {table} "
                "GROUP BY status ORDER BY status",
            ),
        )
        wf.add_node(
            "top_customers",
            Report(
                "top_customers",
                pool,
                "SELECT customer, count(*) AS orders, ROUND(sum(amount), 2) AS total "
                f"FROM {table} "
                "WHERE amount >= :min_amount GROUP BY customer ORDER BY total DESC LIMIT 5",
            ),
        )
        wf.add_connection("seed", "rows", "by_status", "seeded")
        wf.add_connection("seed", "rows", "top_customers", "seeded")
        async with runtime:
            print(f"kailash-nodes demo on {pool.pool_config.connect.describe()}")
            results, run_id = await runtime.execute_async(
                wf.build(),
                parameters={
                    "seed": {"rows": rows, "workers": 8},
                    "top_customers": {"params": {"min_amount": 100}},
                },
            )
            print(f"run {run_id}: seeded {results['seed']['rows']} orders with 8 callers")
            _print_table("orders by status", results["by_status"]["rows"])
            _print_table("top customers (orders >= 100)", results["top_customers"]["rows"])
            _print_stats(await pool.process({"operation": "stats"}))
            async with pool.connection() as conn:
                await pool.execute(conn, f"DROP TABLE {table}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="kailash-nodes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo_p = sub.add_parser("demo", help="run the demo workflow")
    demo_p.add_argument(
        "--dsn", help="database URL (postgresql://, mysql://, sqlite:///path); default: SQLite"
    )
    demo_p.add_argument("--rows", type=int, default=500, help="orders to insert (default 500)")
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.dsn, args.rows))


if __name__ == "__main__":
    sys.exit(main())
