"""The reliability suite's long mode: the load and cancellation-storm scenarios, longer.

Runs the same scenario code as ``tests/reliability/test_load.py`` and
``test_cancellation.py`` (imported from ``tests/reliability/workload.py``, so run it from
the repository), with longer durations and more cancellations, and prints one table:

- load: ``--callers`` (200) concurrent callers through ``QueryRouterNode`` over a pool of
  20 for ``--load-seconds`` (60) on PostgreSQL (the standby as read replica), and a quarter
  of that on MariaDB and SQLite (100 and 50 callers): reads, autocommit writes, session
  transactions (COMMIT 70 % / ROLLBACK), reads after writes; statements/s, p50/p99 per
  ``router.process`` call, and what happened to every write (acknowledged, failed or
  rolled back, unknown outcome) checked against the table afterwards;
- storm: ``--cancellations`` (10,000) tasks cancelled at random points on PostgreSQL and
  a fifth of that on MariaDB and SQLite, over pools of 4 (replica 3), then the leak and
  session-state audit.

The last column lists every violated guarantee (``-`` when none). Exit status 1 if any.

    source /tmp/dbenv.sh                       # KN_PG_DSN, KN_PG_REPLICA_DSN, KN_MYSQL_DSN
    python benchmarks/reliability.py           # ~4 min here
    python benchmarks/reliability.py --backends pg --load-seconds 120 --cancellations 50000
    python benchmarks/reliability.py --quick   # CI sizes (5 s of load, 4,000 cancellations)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability.workload import (  # noqa: E402  (needs ROOT on sys.path)
    STORM_BED,
    LoadReport,
    StormReport,
    router_bed,
    run_load,
    run_storm,
)


def _dsns(backend: str, tmp: str) -> tuple[str, str | None] | None:
    if backend == "sqlite":
        return f"sqlite:///{tmp}/reliability-{time.monotonic_ns()}.db", None
    env = {"pg": "KN_PG_DSN", "mysql": "KN_MYSQL_DSN"}[backend]
    dsn = os.environ.get(env)
    if not dsn:
        print(f"# {backend}: skipped ({env} not set)")
        return None
    return dsn, (os.environ.get("KN_PG_REPLICA_DSN") if backend == "pg" else None)


_NAMES = {"pg": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}


async def _load(
    backend: str, dsn: str, replica: str | None, args: argparse.Namespace
) -> LoadReport:
    share = 1.0 if backend == "pg" else 0.25
    callers = {"pg": args.callers, "mysql": args.callers // 2, "sqlite": args.callers // 4}
    async with router_bed(_NAMES[backend], dsn, replica_dsn=replica) as bed:
        return await run_load(bed, callers=callers[backend], seconds=args.load_seconds * share)


async def _storm(
    backend: str, dsn: str, replica: str | None, args: argparse.Namespace
) -> StormReport:
    count = args.cancellations if backend == "pg" else args.cancellations // 5
    async with router_bed(_NAMES[backend], dsn, replica_dsn=replica, **STORM_BED) as bed:
        return await run_storm(bed, cancellations=count, seed=args.seed)


def _load_row(r: LoadReport) -> list[str]:
    f = r.figures()
    writes = f"{f['writes_acked']:.0f} / {f['writes_failed']:.0f} / {f['writes_unknown']:.0f}"
    return [
        f"load {r.backend}", f"{r.callers} callers, {r.seconds:.0f} s",
        f"{f['statements']:.0f} stmts, {f['throughput']:.0f}/s",
        f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms", writes,
        ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "-",
        "; ".join(r.problems()) or "-",
    ]  # fmt: skip


def _storm_row(r: StormReport) -> list[str]:
    return [
        f"storm {r.backend}", f"{r.total} cancelled, {r.seconds:.0f} s",
        f"{r.finished} finished first", r.where(),
        f"{len(r.writes.acked)} / {len(r.writes.failed)} / {len(r.writes.unknown)}",
        ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "-",
        "; ".join(r.problems()) or "-",
    ]  # fmt: skip


def _print_table(rows: list[list[str]]) -> None:
    head = ["scenario", "size", "done", "latency / cancelled where", "writes ok/failed/unknown",
            "typed errors", "problems"]  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


async def _main(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    notes: list[str] = []  # the first message of each typed error the storm saw
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            dsns = _dsns(backend, tmp)
            if dsns is None:
                continue
            if "load" in args.parts:
                report: LoadReport | StormReport = await _load(backend, *dsns, args)
                rows.append(_load_row(report))
                failed |= bool(report.problems())
            if "storm" in args.parts:
                report = await _storm(backend, *dsns, args)
                rows.append(_storm_row(report))
                failed |= bool(report.problems())
                notes += [f"# storm {backend}, first {k}: {v}" for k, v in report.samples.items()]
            print(f"# {backend} done", flush=True)
    _print_table(rows)
    print("\n".join(notes))
    return 1 if failed else 0


def main() -> None:
    """Parse the options, run the parts, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", default="pg,mysql,sqlite", help="comma list of pg,mysql,sqlite"
    )
    parser.add_argument("--parts", default="load,storm", help="comma list of load,storm")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--cancellations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the CI sizes")
    args = parser.parse_args()
    if args.quick:
        args.load_seconds, args.cancellations = 5.0, 4000
    logging.basicConfig(level=logging.ERROR)  # the reaper's warnings would flood the table
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load {args.load_seconds:g} s x {args.callers} callers (pool max 20), "
        f"{args.cancellations} cancellations (pools of 4)"
    )
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
