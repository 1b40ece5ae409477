"""Point selects through connection pools, side by side with the raw driver, in one run.

Every pool contender does the same work per query: acquire, run
``SELECT id, name FROM bench_items WHERE id = <key>`` (10k-row table, primary key), fetch
the row as a record/dict, release. The floor is the raw driver connection with no pool; at N
concurrent callers it is min(N, 10) workers each owning one raw connection, the best ten
connections can do. Pools get 10 connections. Numbers are medians of interleaved rounds;
compare ratios, not absolute µs, across runs.

    python benchmarks/bench_pool.py                 # pg, mysql, sqlite from KN_* env vars
    python benchmarks/bench_pool.py --quick --backends pg --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from _common import (
    LeanLayer,
    PoolContender,
    RawFloor,
    Result,
    compare,
    fmt_ratio,
    format_table,
    machine_facts,
    make_rounds,
    verdict,
    write_json,
)
from _placement import local_postmasters, separate_cpus

ROWS = 10_000
REPO_ROOT = str(Path(__file__).resolve().parents[1])  # for kailash_nodes when not installed
CONNECTIONS = 10
PG_QUERY = "SELECT id, name FROM bench_items WHERE id = $1"
PCT_QUERY = "SELECT id, name FROM bench_items WHERE id = %s"  # aiomysql and psycopg
LITE_QUERY = "SELECT id, name FROM bench_items WHERE id = ?"
SA_QUERY = "SELECT id, name FROM bench_items WHERE id = :id"
PACKAGES = ["asyncpg", "psycopg", "psycopg-pool", "aiomysql", "PyMySQL", "aiosqlite"]
PACKAGES += ["SQLAlchemy", "kailash"]


# --- Pools: each does acquire → point select → release its own idiomatic way ---------------


async def _pg_no_reset(con: Any) -> None:
    """Replace asyncpg.Pool's reset query on release (asyncpg >= 0.30 ``reset=``)."""


class AsyncpgPool(PoolContender):
    """asyncpg.Pool, with its default reset on release or with a no-op reset."""

    def __init__(self, dsn: str, *, noop_reset: bool) -> None:
        self.name = "asyncpg.Pool reset=no-op" if noop_reset else "asyncpg.Pool"
        self.note = (
            "reset=<no-op coroutine>: skips the reset query (a ROLLBACK still runs if in a txn)"
            if noop_reset
            else "default: on release runs get_reset_query() (advisory unlock, CLOSE ALL, "
            "UNLISTEN *, RESET ALL) = 1 extra round trip"
        )
        self._dsn, self._noop_reset = dsn, noop_reset
        self._pool: Any = None

    async def start(self) -> None:
        import asyncpg

        extra = {"reset": _pg_no_reset} if self._noop_reset else {}
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=CONNECTIONS, max_size=CONNECTIONS, **extra
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def acquire(self) -> Any:
        return await self._pool.acquire()

    async def fetch_id(self, handle: Any, key: int) -> int:
        return await _pg_fetch(handle, key)

    async def release(self, handle: Any) -> None:
        await self._pool.release(handle)


class PsycopgPool(PoolContender):
    """psycopg_pool.AsyncConnectionPool, autocommit connections, dict rows."""

    name = "psycopg_pool"
    note = "AsyncConnectionPool(autocommit=True, row_factory=dict_row), getconn/putconn"

    def __init__(self, dsn: str) -> None:
        self._dsn, self._pool = dsn, cast(Any, None)

    async def start(self) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        kwargs = {"autocommit": True, "row_factory": dict_row}
        self._pool = AsyncConnectionPool(
            self._dsn, min_size=CONNECTIONS, max_size=CONNECTIONS, kwargs=kwargs, open=False
        )
        await self._pool.open(wait=True)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def acquire(self) -> Any:
        return await self._pool.getconn()

    async def fetch_id(self, handle: Any, key: int) -> int:
        cur = await handle.execute(PCT_QUERY, (key,))
        rows = await cur.fetchall()
        return int(rows[0]["id"])

    async def release(self, handle: Any) -> None:
        await self._pool.putconn(handle)


class SqlAlchemyEngine(PoolContender):
    """SQLAlchemy AsyncEngine with its default QueuePool (pool_size=10, no overflow)."""

    note = "defaults: autobegin + ROLLBACK on return to the pool (reset_on_return)"

    def __init__(self, url: str, driver: str) -> None:
        self.name, self._url = f"SQLAlchemy ({driver})", url
        self._engine: Any = None
        self._stmt: Any = None

    async def start(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(self._url, pool_size=CONNECTIONS, max_overflow=0)
        self._stmt = text(SA_QUERY)
        conns = [await self._engine.connect() for _ in range(CONNECTIONS)]
        for conn in conns:
            await conn.close()

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    async def acquire(self) -> Any:
        return await self._engine.connect()

    async def fetch_id(self, handle: Any, key: int) -> int:
        result = await handle.execute(self._stmt, {"id": key})
        return int(result.all()[0].id)

    async def release(self, handle: Any) -> None:
        await handle.close()


class AiomysqlPool(PoolContender):
    """aiomysql.Pool (autocommit), DictCursor rows."""

    name = "aiomysql.Pool"
    note = "create_pool(autocommit=True); release only checks the transaction flag"

    def __init__(self, params: dict[str, Any]) -> None:
        self._params, self._pool = params, cast(Any, None)

    async def start(self) -> None:
        import aiomysql

        n = CONNECTIONS
        self._pool = await aiomysql.create_pool(minsize=n, maxsize=n, **self._params)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()

    async def acquire(self) -> Any:
        return await self._pool.acquire()

    async def fetch_id(self, handle: Any, key: int) -> int:
        return await _my_fetch(handle, key)

    async def release(self, handle: Any) -> None:
        await self._pool.release(handle)


class ProcessPool(PoolContender):
    """A Kailash-style node pool driven through ``process({"operation": ...})`` dicts."""

    def __init__(self, db_type: str, target: str, query: str) -> None:
        self._db_type, self._target, self._query = db_type, target, query
        self._pool: Any = None

    def _options(self) -> dict[str, Any]:
        return {
            "database_type": self._db_type,
            "connection_string": self._target,
            "min_connections": CONNECTIONS,
            "max_connections": CONNECTIONS,
        }

    async def acquire(self) -> Any:
        return (await self._pool.process({"operation": "acquire"}))["connection_id"]

    async def fetch_id(self, handle: Any, key: int) -> int:
        op = {"operation": "execute", "connection_id": handle, "query": self._query}
        return _row_id(await self._pool.process({**op, "params": [key]}))

    async def release(self, handle: Any) -> None:
        await self._pool.process({"operation": "release", "connection_id": handle})


def _row_id(result: Any) -> int:
    """Return the id of the first row of a ``{"success", "data"}`` result; raise on failure."""
    if not result.get("success", True):
        raise RuntimeError(f"execute failed: {result.get('error')}")
    return int(result["data"][0]["id"])


class KailashPool(ProcessPool):
    """The ``kailash`` package's WorkflowConnectionPool."""

    name = "kailash WorkflowConnPool"
    note = "kailash SDK, process(acquire/execute/release); one actor + 1-conn driver pool each"

    async def start(self) -> None:
        from kailash.nodes.data.workflow_connection_pool import WorkflowConnectionPool

        self._pool = WorkflowConnectionPool(name="bench_kailash", **self._options())
        await self._pool.process({"operation": "initialize"})

    async def close(self) -> None:
        if self._pool is not None:  # it closes only as an async context manager
            await self._pool.__aexit__(None, None, None)


class Ours(ProcessPool):
    """kailash_nodes.WorkflowConnectionPool through ``process``."""

    name = "ours pool.process"
    note = "process(acquire/execute/release)"

    async def start(self) -> None:
        try:
            from kailash_nodes import WorkflowConnectionPool
        except ImportError:
            sys.path.insert(0, REPO_ROOT)
            from kailash_nodes import WorkflowConnectionPool

        self._pool = WorkflowConnectionPool(name=f"bench_{type(self).__name__}", **self._options())
        await self._pool.process({"operation": "initialize"})

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.process({"operation": "close"})

    async def report(self) -> str:
        """Return the acquire-wait percentiles from the pool's own stats (warm-up included)."""
        stats = await self._pool.process({"operation": "stats"})
        found = [
            f"{path}={value:.4g}"
            for path, value in _flatten(stats)
            if any(w in path.lower() for w in ("acqui", "wait"))
            and any(p in path.lower() for p in ("p50", "p95", "p99"))
            and isinstance(value, int | float)
        ]
        if not found:
            return f"stats have no acquire-wait percentiles (keys: {', '.join(stats)[:90]})"
        return "own stats: " + ", ".join(found)


class OursApi(Ours):
    """kailash_nodes.WorkflowConnectionPool through its Python API."""

    name = "ours Python API"
    note = "acquire()/execute()/release()"

    async def acquire(self) -> Any:
        return await self._pool.acquire()

    async def fetch_id(self, handle: Any, key: int) -> int:
        return _row_id(await self._pool.execute(handle, self._query, [key]))

    async def release(self, handle: Any) -> None:
        await self._pool.release(handle)


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(tree, dict):
        return [(prefix.rstrip("."), tree)]
    return [item for k, v in tree.items() for item in _flatten(v, f"{prefix}{k}.")]


# --- Backends: table set-up, raw fetch, contender line-ups --------------------------------


def _kailash_missing() -> str | None:
    """Return why the optional ``kailash`` pool cannot be imported, or None when it can."""
    try:
        logging.getLogger("kailash").setLevel(logging.CRITICAL)  # its actors log on shutdown
        from kailash.nodes.data.workflow_connection_pool import WorkflowConnectionPool  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _lineup(
    floors: Sequence[PoolContender],
    pools: Sequence[PoolContender],
    db_type: str,
    target: str,
    query: str,
) -> list[PoolContender]:
    """Return the floors (raw, then the lean layer), the driver pools, kailash when
    importable, then ours (both ways)."""
    kailash = [] if _kailash_missing() else [KailashPool(db_type, target, query)]
    ours = [Ours(db_type, target, query), OursApi(db_type, target, query)]
    return [*floors, *pools, *kailash, *ours]


async def _pg_fetch(con: Any, key: int) -> int:
    rows = await con.fetch(PG_QUERY, key)
    return int(rows[0]["id"])


async def _pg_rows(con: Any, key: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await con.fetch(PG_QUERY, key)]


def pg_lean(dsn: str) -> LeanLayer:
    """Return the lean calibration layer over raw asyncpg connections."""
    import asyncpg

    return LeanLayer(
        "lean layer (calibration)", lambda: asyncpg.connect(dsn), _pg_rows, CONNECTIONS
    )


async def _pg_prepare(dsn: str) -> str:
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS bench_items (id integer PRIMARY KEY, name text NOT NULL)"
        )
        await con.execute(
            "INSERT INTO bench_items SELECT g, 'item-' || g FROM generate_series(1, $1) g "
            "ON CONFLICT (id) DO NOTHING",
            ROWS,
        )
        return str(await con.fetchval("SHOW server_version"))
    finally:
        await con.close()


def _pg_contenders(dsn: str) -> list[PoolContender]:
    import asyncpg

    floor = RawFloor(
        "asyncpg raw (floor)", lambda: asyncpg.connect(dsn), _pg_fetch, size=CONNECTIONS
    )
    pools: list[PoolContender] = [
        AsyncpgPool(dsn, noop_reset=False),
        AsyncpgPool(dsn, noop_reset=True),
        PsycopgPool(dsn),
        SqlAlchemyEngine(_sa_url(dsn, "postgresql+asyncpg"), "asyncpg"),
    ]
    return _lineup([floor, pg_lean(dsn)], pools, "postgresql", dsn, PG_QUERY)


def _mysql_params(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/"),
        "autocommit": True,
    }


async def _my_fetch(conn: Any, key: int) -> int:
    return int((await _my_rows(conn, key))[0]["id"])


async def _my_rows(conn: Any, key: int) -> list[dict[str, Any]]:
    import aiomysql

    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(PCT_QUERY, (key,))
        return list(await cur.fetchall())


async def _my_prepare(dsn: str) -> str:
    import aiomysql

    conn = await aiomysql.connect(**_mysql_params(dsn))
    try:
        async with conn.cursor() as cur:
            # Check first: MariaDB turns IF NOT EXISTS / IGNORE hits into Python warnings.
            if not await cur.execute("SHOW TABLES LIKE 'bench_items'"):
                await cur.execute(
                    "CREATE TABLE bench_items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL)"
                )
            await cur.execute("SELECT COUNT(*) FROM bench_items")
            if (await cur.fetchone())[0] < ROWS:
                rows = [(i, f"item-{i}") for i in range(1, ROWS + 1)]
                await cur.executemany("INSERT IGNORE INTO bench_items VALUES (%s, %s)", rows)
            await cur.execute("SELECT VERSION()")
            return str((await cur.fetchone())[0])
    finally:
        conn.close()


def _mysql_contenders(dsn: str) -> list[PoolContender]:
    import aiomysql

    params = _mysql_params(dsn)
    connect = lambda: aiomysql.connect(**params)  # noqa: E731
    floor = RawFloor("aiomysql raw (floor)", connect, _my_fetch, size=CONNECTIONS)
    lean = LeanLayer("lean layer (calibration)", connect, _my_rows, CONNECTIONS)
    pools = [AiomysqlPool(params), SqlAlchemyEngine(_sa_url(dsn, "mysql+aiomysql"), "aiomysql")]
    return _lineup([floor, lean], pools, "mysql", dsn, PCT_QUERY)


async def _lite_connect(path: str) -> Any:
    import aiosqlite

    conn = await aiosqlite.connect(path)
    conn.row_factory = aiosqlite.Row
    return conn


async def _lite_fetch(conn: Any, key: int) -> int:
    rows = await conn.execute_fetchall(LITE_QUERY, (key,))
    return int(rows[0]["id"])


async def _lite_rows(conn: Any, key: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.execute_fetchall(LITE_QUERY, (key,))]


async def _lite_prepare(path: str) -> str:
    import sqlite3

    conn = await _lite_connect(path)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        rows = [(i, f"item-{i}") for i in range(1, ROWS + 1)]
        await conn.executemany("INSERT OR IGNORE INTO bench_items VALUES (?, ?)", rows)
        await conn.commit()
        return f"SQLite {sqlite3.sqlite_version} at {path}"
    finally:
        await conn.close()


def _sqlite_contenders(path: str) -> list[PoolContender]:
    connect = lambda: _lite_connect(path)  # noqa: E731
    floor = RawFloor("aiosqlite raw (floor)", connect, _lite_fetch, size=CONNECTIONS)
    lean = LeanLayer("lean layer (calibration)", connect, _lite_rows, CONNECTIONS)
    pools = [SqlAlchemyEngine(f"sqlite+aiosqlite:///{path}", "aiosqlite")]
    return _lineup([floor, lean], pools, "sqlite", path, LITE_QUERY)


def _sa_url(dsn: str, scheme: str) -> str:
    return f"{scheme}://{dsn.split('://', 1)[1]}"


Prepare = Callable[[str], Awaitable[str]]
Lineup = Callable[[str], list[PoolContender]]
BACKENDS: dict[str, tuple[str, Prepare, Lineup]] = {
    "pg": ("PostgreSQL", _pg_prepare, _pg_contenders),
    "mysql": ("MySQL/MariaDB", _my_prepare, _mysql_contenders),
    "sqlite": ("SQLite", _lite_prepare, _sqlite_contenders),
}


# --- Driving the modes and printing -------------------------------------------------------


def _parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    default_lite = os.environ.get("KN_SQLITE_PATH") or str(
        Path(tempfile.gettempdir()) / "kn_bench_pool.sqlite3"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-dsn", default=os.environ.get("KN_PG_DSN"))
    parser.add_argument("--mysql-dsn", default=os.environ.get("KN_MYSQL_DSN"))
    parser.add_argument("--sqlite-path", default=default_lite)
    parser.add_argument(
        "--backends", default="pg,mysql,sqlite", help="comma-separated subset of pg,mysql,sqlite"
    )
    parser.add_argument("--queries", type=int, help="queries per contender per round")
    parser.add_argument("--rounds", type=int, help="measured rounds per contender")
    parser.add_argument("--concurrency", help="concurrent caller counts, e.g. 1,16,64")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 rounds × 500, sequential and 64 callers only: ≤ 30 s",
    )
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
    args.queries = args.queries or (500 if args.quick else 1500)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.concurrency = [
        int(c) for c in (args.concurrency or ("64" if args.quick else "1,16,64")).split(",")
    ]
    if min(args.queries, args.rounds, *args.concurrency) < 1:
        parser.error("--queries, --rounds and --concurrency values must be >= 1")
    args.backends = args.backends.split(",")
    if unknown := set(args.backends) - set(BACKENDS):
        parser.error(f"unknown backend(s) {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    return args


def _mode_title(backend: str, callers: int) -> str:
    if callers == 0:
        return f"{backend} — sequential: one caller in a loop, acquire → select → release"
    return (
        f"{backend} — {callers} concurrent caller(s), {CONNECTIONS} connections "
        f"(floor: {min(callers, CONNECTIONS)} raw connection(s), one worker each)"
    )


async def _bench_backend(key: str, target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    title, prepare, lineup = BACKENDS[key]
    print(f"\n=== {title}: {await prepare(target)}")
    notes = [f"  {c.name}: {c.note}" for c in lineup(target)]
    print("\n".join(notes))
    if missing := _kailash_missing():
        print(f"  kailash WorkflowConnectionPool skipped (not importable: {missing[:100]})")
    rng = random.Random(args.seed)
    out = []
    for callers in [0, *args.concurrency]:
        rounds = make_rounds(rng, args.rounds, args.queries, callers, ROWS)
        warmup = [rng.randint(1, ROWS) for _ in range(max(100, args.queries // 4))]
        results = await compare(lineup(target), rounds, warmup, callers, args.timeout)
        print("\n" + format_table(_mode_title(title, callers), results, waits=callers > 0))
        for result in results:
            if result.report:
                print(f"  {result.name} {result.report}")
        out.append({"backend": key, "callers": callers, "results": [r.as_dict() for r in results]})
        if key == "pg":
            _acceptance(callers, results)
        elif callers == 0:  # issue #14: ≤ 1.2× the raw driver on aiomysql and aiosqlite
            by_name = {r.name: r for r in results}
            ours, floor = by_name.get("ours pool.process"), results[0]
            raw = ours.paired_ratio(floor) if ours is not None and ours.us else None
            print(
                f"  acceptance (paired per round): pool.process {fmt_ratio(raw)} {floor.name} "
                f"(target ≤ 1.2): {verdict(raw, 1.2)}"
            )
    return out


def _acceptance(callers: int, results: list[Result]) -> None:
    """Print issue #14's goals for the PostgreSQL tables: sequential pool.process ≤ 1.1×
    raw asyncpg; at 64 callers ≤ 1.4× the raw workers with acquire wait p99/p50 ≤ 3;
    throughput ≥ 1.5× asyncpg.Pool at 16 and 64 callers."""
    by_name = {r.name: r for r in results}
    ours = by_name.get("ours pool.process")
    if ours is None or ours.us is None:
        print(f"  acceptance: n/a (ours pool.process: {ours.error if ours else 'absent'})")
        return
    raw = ours.paired_ratio(by_name["asyncpg raw (floor)"])
    pool = by_name.get("asyncpg.Pool")
    faster = pool.us / ours.us if pool is not None and pool.us else None  # throughput ratio
    if callers == 0:
        print(
            f"  acceptance (paired per round): pool.process {fmt_ratio(raw)} raw asyncpg "
            f"(target ≤ 1.1): {verdict(raw, 1.1)}"
        )
        return
    if callers in (16, 64):
        print(
            f"  acceptance: throughput {fmt_ratio(faster)} asyncpg.Pool's (target ≥ 1.5): "
            f"{verdict(faster, 1.5, at_least=True)}"
        )
    if callers == 64:
        p50, p99 = ours.wait_us("p50"), ours.wait_us("p99")
        spread = p99 / p50 if p50 and p99 is not None else None
        print(
            f"  acceptance: pool.process {fmt_ratio(raw)} the raw workers, paired (target ≤ 1.4): "
            f"{verdict(raw, 1.4)}; acquire wait p99/p50 = {fmt_ratio(spread, '')} (target ≤ 3): "
            f"{verdict(spread, 3)}"
        )


async def _main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print("\n".join(machine_facts(PACKAGES)))
    print(
        f"per mode: {args.rounds} rounds × {args.queries} queries per contender (sequential: "
        f"{args.rounds * 4} × {args.queries // 4}), in a fresh random order each round, "
        f"median reported; {CONNECTIONS} connections per pool; table of {ROWS} rows"
    )
    targets = {"pg": args.pg_dsn, "mysql": args.mysql_dsn, "sqlite": args.sqlite_path}
    report: list[dict[str, Any]] = []
    postmasters = await local_postmasters([args.pg_dsn] if "pg" in args.backends else [])
    with separate_cpus(postmasters, args.pin) as placement:
        print(placement + " (PostgreSQL only; MySQL and SQLite are left to the scheduler)")
        for key in args.backends:
            if not targets[key]:
                print(
                    f"\n=== {BACKENDS[key][0]}: skipped, no DSN "
                    f"(--{key}-dsn or KN_{key.upper()}_DSN)"
                )
            else:
                report += await _bench_backend(key, targets[key], args)
    print(f"\ntotal time: {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, PACKAGES, report)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(_parse_args())))
