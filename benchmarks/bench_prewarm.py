"""Runtime pre-warming: per-node and whole-run latency of a three-node workflow, on vs off.

Workload (PostgreSQL, ``--pg-dsn`` or KN_PG_DSN): a table of 100 rows and a workflow of
three ``QueryRouterNode`` steps A -> B -> C (point selects with different column lists,
so three distinct statements), each step fed the row count of the one before, run with
``LocalRuntime.execute_async``. The pool has ``--pool-min`` connections (default 2, so one
is idle while a step holds another) and may grow to ``--pool-max``; pattern learning is
off, so the runtime is the only source of pre-warms.

Trials alternate ``runtime.prewarm`` on/off (the order flips every pair) after
``--warmup`` trials. Timed: each node's ``process`` call (wall clock, inside the
runtime), the whole ``execute_async``, and this process's CPU time for the run. Three
sections, in one run (``--sections`` picks some):

- ``cold``: each trial first drops every prepared statement
  (``router.invalidate_cache()``), so each step is its connection's first call of its
  statement. On, while A runs the runtime prepares B's statement on the idle connection,
  and while B runs C's; each level waits up to ``--prewarm-timeout`` for a pre-warm
  still running. Off, B and C each pay their own Parse round trip.
- ``warm``: the statements stay prepared (the steady state): there is nothing to
  pre-warm, so this shows what the pre-warm costs when it finds its work done.
- ``lan``: as ``cold``, but the pool reaches the server through a forwarding proxy (a
  child process): one more hop, as to a database on another machine nearby.
- ``rtt``: as ``lan``, the proxy delaying every chunk by half of ``--rtt-ms`` each way.
  Its timers have the event loop's 1 ms resolution, so the round trip it adds is larger
  than asked; each section prints the round trip it measured (a prepared ``SELECT 1`` on
  a pooled connection). ``--rtt-trials`` per mode for both proxy sections.

The script checks ``cache_hit`` on every trial and prints the router's ``prewarm``
counters and the runtime's pre-warm counters over the measured trials of each section.

    source /tmp/dbenv.sh
    python benchmarks/bench_prewarm.py                      # all four sections, ~25 s
    python benchmarks/bench_prewarm.py --sections cold --trials 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _common import create_rows_table, machine_facts, percentile

PACKAGES = ("asyncpg", "sqlglot")
STEPS = ("a", "b", "c")
SECTIONS = ("cold", "warm", "lan", "rtt")


@dataclass
class Times:
    """One mode's per-trial measurements in µs: per node, whole run, CPU, waits."""

    node: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})
    run: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process's CPU time per run
    wait: list[float] = field(default_factory=list)  # time levels waited for pre-warms
    surprises: int = 0


@dataclass
class Section:
    """What one section measures."""

    name: str
    dsn: str
    trials: int
    cold: bool
    title: str


def make_router_class() -> type[Any]:
    """Return a QueryRouterNode that records how long each ``process`` call took."""
    from kailash_nodes import QueryRouterNode

    class TimedRouter(QueryRouterNode):  # type: ignore[misc]
        """Appends each call's wall time (seconds) to ``self.calls``."""

        calls: list[float]

        async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            began = time.perf_counter()
            try:
                result: dict[str, Any] = await super().process(inputs)
                return result
            finally:
                self.calls.append(time.perf_counter() - began)

    return TimedRouter


def statements(table: str) -> dict[str, str]:
    """A, B, C: point selects on ``table`` with different column lists."""
    return {
        "a": f"SELECT id FROM {table} WHERE id = $1",
        "b": f"SELECT id, a FROM {table} WHERE id = $1",
        "c": f"SELECT id, a, b FROM {table} WHERE id = $1",
    }


async def measure(args: argparse.Namespace, section: Section) -> None:
    """Run one section's interleaved trials and print its table."""
    from kailash_nodes import LocalRuntime, WorkflowBuilder, WorkflowConnectionPool

    began = time.perf_counter()
    table = f"kn_bench_prewarm_{os.getpid()}"
    pool = WorkflowConnectionPool(
        name="db_pool", connection_string=section.dsn, min_connections=args.pool_min,
        max_connections=args.pool_max,
    )  # fmt: skip
    router = make_router_class()(name="router", connection_pool="db_pool", pattern_learning=False)
    router.calls = []
    runtime = LocalRuntime(prewarm_timeout=args.prewarm_timeout)
    runtime.register_node("db_pool", pool)
    runtime.register_node("router", router)
    wf = WorkflowBuilder()
    for step, sql in statements(table).items():
        wf.add_node(step, router, query=sql)
    wf.add_connection("a", "row_count", "b", "rows_before")
    wf.add_connection("b", "row_count", "c", "rows_before")
    workflow = wf.build()
    times = {True: Times(), False: Times()}
    load = os.getloadavg()[0]
    async with runtime:
        await create_rows_table(router, table)
        try:
            rtt = await round_trip_us(pool)
            for i in range(args.warmup + 2 * section.trials):
                mode = (i % 2 == 0) != (i // 2 % 2 == 1)  # on/off, off/on, on/off, ...
                if i == args.warmup:
                    before = (await router.get_metrics())["prewarm"]
                    stats_before = runtime.get_prewarm_stats()
                measured = i >= args.warmup
                await trial(runtime, router, workflow, mode, i % 100 + 1, times, measured, section)
            after = (await router.get_metrics())["prewarm"]
            stats_after = runtime.get_prewarm_stats()
            state = pool.engine.state()
        finally:
            await router.process({"query": f"DROP TABLE IF EXISTS {table}"})
    print(
        f"== {section.name}: {section.title}; round trip p50 {rtt:.0f} µs; {section.trials} "
        f"trials per mode interleaved; µs wall clock; load avg {load:.2f} -> "
        f"{os.getloadavg()[0]:.2f} =="
    )
    report(times, section)
    print_counters(before, after, stats_before, stats_after)
    print(f"pool after the section: {state}; took {time.perf_counter() - began:.1f} s")
    print()


async def round_trip_us(pool: Any) -> float:
    """Return the median time of a prepared ``SELECT 1`` on a pooled connection (µs)."""
    samples = []
    async with pool.connection() as pc:
        for _ in range(101):
            began = time.perf_counter()
            await pool.execute(pc, "SELECT 1")
            samples.append((time.perf_counter() - began) * 1e6)
    return statistics.median(samples[1:])  # the first one prepares


async def trial(
    runtime: Any,
    router: Any,
    workflow: Any,
    mode: bool,
    key: int,
    times: dict[bool, Times],
    measured: bool,
    section: Section,
) -> None:
    """Run the workflow once in ``mode`` (cold: no statement prepared); record times."""
    if section.cold:
        await router.invalidate_cache()
    runtime.prewarm = mode
    router.calls.clear()
    waited = runtime.prewarm_stats.wait_seconds
    params = {s: {"parameters": [key]} for s in STEPS}
    cpu = time.process_time()
    began = time.perf_counter()
    results, _ = await runtime.execute_async(workflow, params)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    if not measured:
        return
    into = times[mode]
    for step, seconds in zip(STEPS, router.calls, strict=True):
        into.node[step].append(seconds * 1e6)
    into.run.append(elapsed * 1e6)
    into.cpu.append(cpu * 1e6)
    into.wait.append((runtime.prewarm_stats.wait_seconds - waited) * 1e6)
    hits = [results[s]["routing_metadata"]["cache_hit"] for s in STEPS]
    into.surprises += hits != expected_hits(section, mode)
    into.surprises += any(results[s]["data"] == [] for s in STEPS)


def expected_hits(section: Section, mode: bool) -> list[bool]:
    """Return the ``cache_hit`` of A, B, C this section and mode must show."""
    if not section.cold:
        return [True, True, True]
    return [False, True, True] if mode else [False, False, False]


def report(times: dict[bool, Times], section: Section) -> None:
    """Print medians per node and per run, with vs without, and their ratios."""
    on, off = times[True], times[False]
    rows = {
        "A  (first level: never pre-warmed)": (on.node["a"], off.node["a"]),
        "B  (with: pre-warmed while A ran)": (on.node["b"], off.node["b"]),
        "C  (with: pre-warmed while B ran)": (on.node["c"], off.node["c"]),
        "whole run (execute_async)": (on.run, off.run),
        "client CPU time of the run": (on.cpu, off.cpu),
    }
    header = (
        f"{'':<36} {'with p50':>9} {'p90':>7} {'without p50':>12} {'p90':>7} "
        f"{'with/without p50':>17} {'paired':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, (with_, without) in rows.items():
        paired = statistics.median(a / b for a, b in zip(with_, without, strict=True) if b)
        print(
            f"{label:<36} {percentile(with_, 0.5):>9.0f} {percentile(with_, 0.9):>7.0f} "
            f"{percentile(without, 0.5):>12.0f} {percentile(without, 0.9):>7.0f} "
            f"{percentile(with_, 0.5) / percentile(without, 0.5):>17.2f} {paired:>7.2f}"
        )
    n = section.trials
    print(
        f"waiting for pre-warms still running when a level ended (with): p50 "
        f"{percentile(on.wait, 0.5):.0f} µs, p90 {percentile(on.wait, 0.9):.0f} µs, "
        f"max {max(on.wait):.0f} µs per run"
    )
    print(
        f"cache_hit (A, B, C) as expected (with: {expected_hits(section, True)}, without: "
        f"{expected_hits(section, False)}) and every row found in {n - on.surprises}/{n} "
        f"and {n - off.surprises}/{n} trials"
    )


def print_counters(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    stats_before: Mapping[str, float],
    stats_after: Mapping[str, float],
) -> None:
    """Print the router's runtime-source pre-warm counters and the runtime's, over trials."""
    b, a = before["by_source"]["runtime"], after["by_source"]["runtime"]
    delta = {k: a[k] - b[k] for k in ("issued", "used", "already_prepared", "errors")}
    print(
        f"router pre-warms over the measured trials (get_metrics()['prewarm']['by_source']"
        f"['runtime']): issued {delta['issued']}, used {delta['used']}, "
        f"wasted or pending {delta['issued'] - delta['used']}, already prepared "
        f"{delta['already_prepared']}, errors {delta['errors']}; connections opened ahead "
        f"{after['connections_opened'] - before['connections_opened']}; now pending "
        f"{a['pending']}, wasted {a['wasted']} (since start)"
    )
    rt = {k: stats_after[k] - stats_before[k] for k in stats_after}
    print(
        f"runtime pre-warm hooks over the measured trials (get_prewarm_stats()): issued "
        f"{rt['issued']:.0f}, completed {rt['completed']:.0f}, warmed {rt['warmed']:.0f}, "
        f"errors {rt['errors']:.0f}, cancelled at the bound {rt['cancelled']:.0f}, levels "
        f"that waited {rt['waits']:.0f} ({rt['wait_seconds'] * 1e3:.1f} ms in all)"
    )


# ---------------------------------------------------------------------- the delay proxy


async def proxy_main(target_host: str, target_port: int, one_way_s: float) -> None:
    """Forward 127.0.0.1:<printed port> to the target, delaying every chunk one way."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(
            _delayed(reader, up_writer, one_way_s), _delayed(up_reader, writer, one_way_s)
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def _delayed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` s after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((0.0, b""))

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    try:
        await asyncio.gather(pump(), deliver())
    except (ConnectionError, OSError):
        writer.close()


async def start_proxy(dsn: str, rtt_ms: float) -> tuple[asyncio.subprocess.Process, str]:
    """Start the proxy as a child process; return it and the DSN that goes through it."""
    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--proxy", host, str(port), str(rtt_ms / 2000.0),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    local_port = int((await child.stdout.readline()).decode())
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{local_port}" if userinfo else f"127.0.0.1:{local_port}"
    return child, urlunsplit(parts._replace(netloc=netloc))


async def run_all(args: argparse.Namespace) -> None:
    """Print the command and machine facts, then every chosen section."""
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print("\n".join(machine_facts(PACKAGES)))
    print(
        f"PostgreSQL; pool of {args.pool_min}..{args.pool_max} connections; workflow A -> B "
        f"-> C of router nodes (point selects); prewarm_timeout {args.prewarm_timeout:g} s"
    )
    print()
    plain = "direct connection"
    if "cold" in args.sections:
        title = f"{plain}, every statement unprepared at the start of each trial"
        await measure(args, Section("cold", args.pg_dsn, args.trials, True, title))
    if "warm" in args.sections:
        title = f"{plain}, statements stay prepared (nothing to pre-warm)"
        await measure(args, Section("warm", args.pg_dsn, args.trials, False, title))
    for name, delay_ms in (("lan", 0.0), ("rtt", args.rtt_ms)):
        if name not in args.sections:
            continue
        child, dsn = await start_proxy(args.pg_dsn, delay_ms)
        try:
            title = f"through a proxy delaying {delay_ms:g} ms per round trip, cold statements"
            await measure(args, Section(name, dsn, args.rtt_trials, True, title))
        finally:
            child.terminate()
            await child.wait()


def main() -> None:
    """Parse options and run the sections (or, as a child, the proxy)."""
    if len(sys.argv) == 5 and sys.argv[1] == "--proxy":
        asyncio.run(proxy_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-dsn", default=os.environ.get("KN_PG_DSN"))
    parser.add_argument("--trials", type=int, default=1000, help="trials per mode (cold, warm)")
    parser.add_argument("--rtt-trials", type=int, default=300, help="trials per mode (lan, rtt)")
    parser.add_argument("--rtt-ms", type=float, default=1.0, help="round trip the proxy adds")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured trials first")
    parser.add_argument("--prewarm-timeout", type=float, default=0.05, help="the runtime's bound")
    parser.add_argument("--pool-min", type=int, default=2)
    parser.add_argument("--pool-max", type=int, default=4)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=",".join(SECTIONS))
    args = parser.parse_args()
    args.sections = [s for s in args.sections.split(",") if s]
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    if min(args.trials, args.rtt_trials) < 1 or args.warmup < 0 or args.rtt_ms < 0:
        parser.error("--trials and --rtt-trials must be >= 1, --warmup and --rtt-ms >= 0")
    if not args.pg_dsn:
        parser.error("no PostgreSQL DSN: set KN_PG_DSN or pass --pg-dsn")
    asyncio.run(run_all(args))


if __name__ == "__main__":
    main()
