"""The `kailash-nodes` command: ``demo`` runs the router in front of an adaptive pool.

Embedded SQLite by default (no server); ``--dsn`` for PostgreSQL or MySQL, and
``--replica-dsn`` for a PostgreSQL streaming replica of ``--dsn``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from kailash_nodes.demo import run_demo
from kailash_nodes.errors import KailashNodesError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return its exit status.

    Returns 1 after printing the error when the demo raises a `KailashNodesError` (a
    database that is down, a bad DSN); argparse exits with 2 on a bad command line.
    """
    parser = argparse.ArgumentParser(prog="kailash-nodes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo workflow")
    demo.add_argument(
        "--dsn", help="database URL (postgresql://, mysql://, sqlite:///path); default: SQLite"
    )
    demo.add_argument(
        "--replica-dsn", help="a PostgreSQL streaming replica of --dsn: reads are routed there"
    )
    demo.add_argument("--rows", type=int, default=200, help="orders to insert (default 200)")
    demo.add_argument("--runs", type=int, default=12, help="workflow runs (default 12)")
    args = parser.parse_args(argv)
    if args.replica_dsn and not args.dsn:
        parser.error("--replica-dsn needs --dsn (the primary it replicates)")
    try:
        return asyncio.run(run_demo(args.dsn, args.replica_dsn, rows=args.rows, runs=args.runs))
    except KailashNodesError as exc:  # a database down, a bad DSN: say so without a traceback
        print(f"kailash-nodes demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
