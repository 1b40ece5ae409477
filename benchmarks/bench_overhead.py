"""What our own code costs per call, with no I/O: the pool and router layers over a fake driver.

A real round trip varies ~2x between runs on this machine, which hides a change of a few
microseconds in our code. Here the driver is a fake that answers at once (no socket, no
thread, and by default no await that suspends: every contender would pay the same event
loop turn, so leaving it out keeps the figures to our code; ``--yield-once`` adds one
``asyncio.sleep(0)`` per fetch to show what a suspension costs). It behaves like the
PostgreSQL driver where our code can tell: numeric placeholders, server-side prepare (a
statement is cached on the connection at its first run, so the router's cache lookups and
the pool's affinity see hits), no transaction left open.

Contenders, each doing the point select ``SELECT id, name FROM users WHERE id = $1``, µs per
call, interleaved in a fresh random order each round, median of rounds:

- ``fetch``: the fake driver's fetch alone (the floor);
- ``minimal``: the least any pool can do, written here: pop a connection from a list, fetch,
  append it back;
- ``pool``: ``ConnectionPool`` acquire → execute → release;
- ``pool-node``: ``WorkflowConnectionPool.process`` acquire, execute, release (three calls);
- ``router``: ``QueryRouter.route`` (the engine), classification cache warm;
- ``router-node``: ``QueryRouterNode.process({"query", "parameters"})``.

Runs against any checkout with ``ConnectionPool(config, driver=...)``: the one on
``PYTHONPATH`` (this repository when unset). ``--against DIR`` (repeatable) compares DIR's
checkout with this one (``--this DIR`` to name another): each checkout's package is loaded
in turn into this one process and all their contenders are interleaved in every round, so
a slow spell of the machine hits every checkout alike (``--processes``: whole processes
instead, ``--runs`` each in rotating order, median of their medians; run to run, the same
code varies up to ~1.5x here). Figures are CPU time per call: with no I/O, wall time
differs only by what other processes took. Even interleaved, identical code can differ by
up to ~8% between checkouts; only a larger or repeated difference means something.

    python benchmarks/bench_overhead.py                      # ~10 s
    python benchmarks/bench_overhead.py --rounds 30 --calls 5000 --json out.json
    python benchmarks/bench_overhead.py --against ../base --rounds 25   # ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUERY = "SELECT id, name FROM users WHERE id = $1"
DSN = "postgresql://bench@127.0.0.1:1/bench"  # never connected: the fake driver answers
CONNECTIONS = 4
_ROW = {"id": 1, "name": "ann"}


# ---------------------------------------------------------------------- the fake driver


class FakeConnection:
    """A DriverConnection that answers every statement at once with one fixed row.

    Tolerant by design: it carries every member any checkout of the package has asked of
    a connection, so an older pool or router runs on it unchanged.
    """

    def __init__(self, cache_size: int, yield_once: bool) -> None:
        self.server_prepare = cache_size > 0
        self._cache_size = cache_size
        self._prepared: dict[str, None] = {}
        self._yield = yield_once
        self._closed = False

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> tuple[Any, int]:
        """Return the fixed row in ``mode`` shape; cache ``text`` as prepared."""
        if self._yield:
            await asyncio.sleep(0)
        if self.server_prepare and text not in self._prepared:
            self._remember(text)
        if mode == "all":
            return [dict(_ROW)], 1
        return (dict(_ROW) if mode == "one" else [dict(_ROW)]), 1

    def _remember(self, text: str) -> None:
        if len(self._prepared) >= self._cache_size:
            del self._prepared[next(iter(self._prepared))]
        self._prepared[text] = None

    async def execute_script(self, text: str, timeout: float | None) -> tuple[Any, int]:
        return [], 0

    async def fetch_limited(
        self,
        text: str,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        max_rows: int,
        timeout: float | None,
    ) -> tuple[Any, int]:
        return await self.fetch(text, args, mode, size, timeout)

    def can_stream(self, text: str) -> bool:
        return False

    async def open_cursor(self, text: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        raise NotImplementedError("the fake driver does not stream")

    async def end_stream(self, *args: Any, **kwargs: Any) -> None:
        """(asked by older checkouts)"""

    def in_transaction(self) -> bool:
        return False

    def session_changed(self) -> bool:
        return False

    def has_statement(self, text: str) -> bool:
        return text in self._prepared

    async def prepare(self, text: str, timeout: float | None) -> bool:
        if not self.server_prepare or text in self._prepared:
            return False
        self._remember(text)
        return True

    def cached_statements(self) -> int:
        return len(self._prepared)

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        if texts is None:
            dropped = len(self._prepared)
            self._prepared.clear()
            return dropped
        return sum(self._prepared.pop(t, 0) is None for t in texts)

    def resize_statement_cache(self, size: int) -> None:
        self._cache_size = size
        self.server_prepare = size > 0
        while len(self._prepared) > size:
            del self._prepared[next(iter(self._prepared))]

    def is_closed(self) -> bool:
        return self._closed

    async def ping(self, timeout: float) -> None:
        pass

    async def rollback(self, timeout: float) -> None:
        pass

    async def reset(self, timeout: float) -> bool:
        return True

    async def close(self, timeout: float) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True


class FakeDriver:
    """A Driver whose connections are FakeConnections; PostgreSQL-like facts, no catalog."""

    name = "postgresql"
    placeholder_style = "numeric"
    dialect = "postgres"
    can_prepare = True
    undoes_timed_out = False
    routines_change_session = True
    tracks_positions = False
    max_useful_connections: int | None = 64

    def __init__(self, yield_once: bool) -> None:
        self.yield_once = yield_once

    async def connect(self, params: Any, statement_cache_size: int) -> FakeConnection:
        return FakeConnection(statement_cache_size, self.yield_once)

    async def replica_status(self, conn: Any, timeout: float | None) -> None:
        return None

    async def write_position(self, conn: Any, timeout: float | None) -> None:
        return None

    async def replay_position(self, conn: Any, timeout: float | None) -> None:
        return None

    async def connection_limit(self, conn: Any, timeout: float | None, **kwargs: Any) -> None:
        return None

    async def drain(self, timeout: float) -> None:
        return None


# ---------------------------------------------------------------------- contenders

Batch = Callable[[int], Awaitable[None]]  # run n calls


def _pool_options() -> dict[str, Any]:
    return {
        "connection_string": DSN,
        "min_connections": CONNECTIONS,
        "max_connections": CONNECTIONS,
        "adaptive_sizing": False,
        "enable_query_routing": False,
    }


async def build(driver: FakeDriver) -> tuple[dict[str, Batch], Callable[[], Awaitable[None]]]:
    """Return each contender's batch function and a coroutine function closing them all."""
    from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
    from kailash_nodes.config import PoolConfig
    from kailash_nodes.pool import ConnectionPool
    from kailash_nodes.router import QueryRouter, RouterOptions

    conns = [await driver.connect(None, 256) for _ in range(CONNECTIONS)]
    floor = conns[0]
    idle = list(conns)

    pool = ConnectionPool(PoolConfig.from_options({"name": "bench", **_pool_options()}), driver)
    await pool.open()
    engine_pool = ConnectionPool(
        PoolConfig.from_options({"name": "engine", **_pool_options()}), driver
    )
    engine = QueryRouter(engine_pool, {}, RouterOptions())
    await engine.start()
    node = _pool_node(WorkflowConnectionPool, ConnectionPool, "db_pool", driver)
    await node.process({"operation": "initialize"})
    routed_pool = _pool_node(WorkflowConnectionPool, ConnectionPool, "routed_pool", driver)
    runtime = LocalRuntime()
    runtime.register_node("routed_pool", routed_pool)
    router = QueryRouterNode(name="router", connection_pool="routed_pool")
    runtime.register_node("router", router)

    async def fetch(n: int) -> None:
        for i in range(n):
            await floor.fetch(QUERY, (i,), "all", 100, None)

    async def minimal(n: int) -> None:
        for i in range(n):
            conn = idle.pop()
            try:
                await conn.fetch(QUERY, (i,), "all", 100, None)
            finally:
                idle.append(conn)

    async def pool_calls(n: int) -> None:
        for i in range(n):
            pc = await pool.acquire()
            try:
                await pool.execute(pc, QUERY, [i])
            finally:
                await pool.release(pc)

    async def pool_node(n: int) -> None:
        process = node.process
        for i in range(n):
            cid = (await process({"operation": "acquire"}))["connection_id"]
            await process(
                {"operation": "execute", "connection_id": cid, "query": QUERY, "parameters": [i]}
            )
            await process({"operation": "release", "connection_id": cid})

    async def router_engine(n: int) -> None:
        for i in range(n):
            await engine.route(QUERY, [i])

    async def router_node(n: int) -> None:
        process = router.process
        for i in range(n):
            await process({"query": QUERY, "parameters": [i]})

    async def close() -> None:
        await router.close()
        await engine.close()
        for p in (pool, engine_pool, node.engine, routed_pool.engine):
            await p.close()

    batches: dict[str, Batch] = {
        "fetch": fetch,
        "minimal": minimal,
        "pool": pool_calls,
        "pool-node": pool_node,
        "router": router_engine,
        "router-node": router_node,
    }
    return batches, close


def _pool_node(node_type: Any, pool_type: Any, name: str, driver: FakeDriver) -> Any:
    """Return a pool node whose engine runs on ``driver`` (the node builds its own engine
    from its options; it is replaced before anything opens it)."""
    node = node_type(name=name, **_pool_options())
    node.engine = pool_type(node.pool_config, driver)
    return node


# ---------------------------------------------------------------------- measuring


Rounds = dict[str, dict[str, list[float]]]  # contender -> "cpu"/"wall" -> µs/call per round


async def measure(
    checkouts: list[str | None], rounds: int, calls: int, yield_once: bool, seed: int | None
) -> list[Rounds]:
    """Run ``rounds`` rounds of ``calls`` calls per contender of each checkout (None: the
    package already importable), every contender of every checkout in one random order
    per round; return per checkout µs/call per round, in CPU time and in wall time."""
    driver = FakeDriver(yield_once)
    built = [await _build_on(path, driver) for path in checkouts]
    batches = {(i, name): b for i, (bs, _) in enumerate(built) for name, b in bs.items()}
    rng = random.Random(seed)
    per_round: list[Rounds] = [{name: {"cpu": [], "wall": []} for name in bs} for bs, _ in built]
    try:
        for batch in batches.values():  # warm: caches, prepared statements, code paths
            await batch(max(calls // 4, 200))
        for _ in range(rounds):
            order = list(batches)
            rng.shuffle(order)
            for i, name in order:
                cpu, wall = await _timed(batches[i, name], calls)
                per_round[i][name]["cpu"].append(cpu)
                per_round[i][name]["wall"].append(wall)
    finally:
        for _, close in built:
            await close()
    return per_round


async def _build_on(
    path: str | None, driver: FakeDriver
) -> tuple[dict[str, Batch], Callable[[], Awaitable[None]]]:
    """Build the contenders on the package at ``path`` (imported afresh: the modules of a
    checkout loaded before stay alive, used by what was built on them) and run each once,
    so that everything they import lazily (a pool's maintenance loop) comes from it."""
    if path is not None:
        for name in [m for m in sys.modules if m.split(".")[0] == "kailash_nodes"]:
            del sys.modules[name]
        sys.path.insert(0, path)
        try:
            importlib.import_module("kailash_nodes")
        finally:
            sys.path.remove(path)
    batches, close = await build(driver)
    for batch in batches.values():
        await batch(1)
    return batches, close


async def _timed(batch: Batch, calls: int) -> tuple[float, float]:
    """Return µs per call of one batch in CPU time and in wall time, the garbage collector
    held off during it. With no I/O the two differ only by time this process was not
    running (other processes on the CPUs): CPU time is the steadier measure here."""
    gc.collect()
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        await batch(calls)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        gc.enable()
    return cpu / calls * 1e6, wall / calls * 1e6


def summarise(per_round: Rounds) -> dict[str, dict[str, float]]:
    """Return the median, p25 and p75 of each contender's rounds in CPU µs/call, and the
    median in wall µs/call."""
    out = {}
    for name, clocks in per_round.items():
        values = clocks["cpu"]
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {
            "median_us": statistics.median(values),
            "p25_us": q[0],
            "p75_us": q[2],
            "wall_median_us": statistics.median(clocks["wall"]),
        }
    return out


def table(summary: dict[str, dict[str, float]]) -> str:
    """Return the plain-text table: CPU µs/call (p25–p75), the gap to ``minimal``, and
    wall µs/call."""
    base = summary["minimal"]["median_us"]
    lines = [
        f"{'contender':<12} {'µs/call':>8} {'p25–p75':>12} {'gap to minimal':>15} {'×':>6} "
        f"{'wall µs':>8}"
    ]
    for name, s in summary.items():
        med = s["median_us"]
        spread = f"{s['p25_us']:.2f}–{s['p75_us']:.2f}"
        lines.append(
            f"{name:<12} {med:>8.2f} {spread:>12} {med - base:>+15.2f} {med / base:>6.2f} "
            f"{s['wall_median_us']:>8.2f}"
        )
    return "\n".join(lines)


def setup_lines(args: argparse.Namespace) -> list[str]:
    """Return what was measured: the checkout, its commit, the fake, the sizes."""
    import kailash_nodes

    checkout = Path(kailash_nodes.__file__).resolve().parent.parent
    return [
        f"checkout: {checkout} (commit {_commit(checkout)})",
        f"python {platform.python_version()}, {os.cpu_count()} CPUs; no I/O: fake driver "
        f"({'one asyncio.sleep(0)' if args.yield_once else 'no suspension'} per fetch)",
        f"{args.rounds} rounds × {args.calls} calls per contender, random order per round; "
        f"median of rounds; query {QUERY!r}, {CONNECTIONS} connections per pool",
        "µs/call: this process's CPU time per call (steadier than wall time on a shared "
        "machine; with no I/O they differ only by time other processes took)",
    ]


# ---------------------------------------------------------------------- whole-process compare


def compare(args: argparse.Namespace) -> int:
    """Measure each ``--against`` checkout and ``--this``; print each one's medians (CPU
    µs/call) and its ratio to the first checkout.

    By default all are loaded in this one process and their contenders interleaved in
    each round, so a slow moment of the machine hits every checkout alike; with
    ``--processes``, each runs in its own processes (``--runs`` each, rotating order) and
    the median of the runs' medians is shown.
    """
    dirs = [str(Path(d).resolve()) for d in args.against] + [str(Path(args.this).resolve())]
    if args.processes:
        medians = _compare_processes(dirs, args)
        how = f"{args.runs} whole-process runs each, rotating order; median of the runs' medians"
    else:
        per_round = asyncio.run(
            measure(list(dirs), args.rounds, args.calls, args.yield_once, args.seed)
        )
        medians = [{n: [s["median_us"]] for n, s in summarise(r).items()} for r in per_round]
        how = f"one process, interleaved; {args.rounds} rounds × {args.calls} calls; median"
    for i, path in enumerate(dirs):
        print(f"[{i}] {path} ({_commit(Path(path))})")
    print(f"{how}; CPU µs/call; ×: ratio to [0]")
    print(f"{'contender':<12} " + " ".join(f"{f'[{i}]':>8} {'×':>6}" for i in range(len(dirs))))
    for name in medians[0]:
        values = [statistics.median(m[name]) for m in medians]
        cells = " ".join(f"{v:>8.2f} {v / values[0]:>6.3f}" for v in values)
        print(f"{name:<12} {cells}")
    return 0


def _compare_processes(dirs: list[str], args: argparse.Namespace) -> list[dict[str, list[float]]]:
    """Run each checkout ``--runs`` times in its own process; return the runs' medians."""
    medians: list[dict[str, list[float]]] = [{} for _ in dirs]
    for run in range(args.runs):
        for i in [(run + k) % len(dirs) for k in range(len(dirs))]:
            summary = _run_on(dirs[i], args)
            for name, s in summary.items():
                medians[i].setdefault(name, []).append(s["median_us"])
            runs = ", ".join(f"{n} {s['median_us']:.2f}" for n, s in summary.items())
            print(f"run {run + 1} [{i}]: {runs}", file=sys.stderr)
    return medians


def _run_on(path: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run this script in a new process on the checkout at ``path``; return its summary."""
    cmd = [sys.executable, __file__, "--rounds", str(args.rounds), "--calls", str(args.calls)]
    cmd += ["--json", "-", *(["--yield-once"] if args.yield_once else [])]
    env = {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    summary: dict[str, dict[str, float]] = json.loads(out.stdout)["summary"]
    return summary


def _commit(checkout: Path) -> str:
    """Return the short commit of ``checkout``, or "?" when it is not a git checkout."""
    out = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else "?"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark (or the comparison), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per contender per round")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random order")
    parser.add_argument("--yield-once", action="store_true", help="sleep(0) once per fetch")
    parser.add_argument(
        "--against", metavar="DIR", action="append", help="compare with the checkout in DIR"
    )
    parser.add_argument(
        "--this",
        metavar="DIR",
        default=str(ROOT),
        help="the last side of --against (default: here)",
    )
    parser.add_argument(
        "--processes", action="store_true", help="--against: one process per checkout and run"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs each with --processes")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.runs < 1:
        parser.error("--rounds, --calls and --runs must be >= 1")
    if args.against:
        return compare(args)
    if "PYTHONPATH" not in os.environ:
        sys.path.insert(0, str(ROOT))
    setup = setup_lines(args)
    per_round = asyncio.run(measure([None], args.rounds, args.calls, args.yield_once, args.seed))[0]
    summary = summarise(per_round)
    if args.json == "-":
        print(json.dumps({"setup": setup, "summary": summary, "rounds": per_round}))
        return 0
    print("\n".join(setup))
    print(table(summary))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"setup": setup, "summary": summary, "rounds": per_round}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
