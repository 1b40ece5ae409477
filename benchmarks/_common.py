"""Harness shared by the standalone benchmarks: interleaved rounds, medians, plain-text tables.

The machine these run on is noisy (idle vCPUs halt, so round trips vary ~2x between runs):
contenders are only ever compared within one run, in a fresh random order each round over
several rounds, and each is summarised by the median of its rounds.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import inspect
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class RunSample:
    """One run of ``n`` queries: its wall time and the acquire waits seen in it (seconds)."""

    wall_s: float
    n: int
    waits_s: list[float] = field(default_factory=list)


class Contender(Protocol):
    """What the harness drives; ``callers == 0`` means a plain sequential loop."""

    name: str
    note: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def once(self, key: int) -> int: ...
    async def run(self, keys: Sequence[int], callers: int) -> RunSample: ...
    async def report(self) -> str: ...


class PoolContender:
    """A pool driven as callers doing acquire → point select → release."""

    name = ""
    note = ""

    async def start(self) -> None:
        """Open the pool with its connections."""

    async def close(self) -> None:
        """Close the pool; a no-op when ``start`` never succeeded."""

    async def acquire(self) -> Any:
        """Return a connection handle."""
        raise NotImplementedError

    async def fetch_id(self, handle: Any, key: int) -> int:
        """Run the point select on ``handle``; return the fetched row's id."""
        raise NotImplementedError

    async def release(self, handle: Any) -> None:
        """Give ``handle`` back."""
        raise NotImplementedError

    async def report(self) -> str:
        """Return the pool's own view of the run (empty when it has none)."""
        return ""

    async def once(self, key: int) -> int:
        """Acquire, select ``key``, release; return the row's id."""
        handle = await self.acquire()
        try:
            return await self.fetch_id(handle, key)
        finally:
            await self.release(handle)

    async def run(self, keys: Sequence[int], callers: int) -> RunSample:
        """Select every key: in a plain loop (``callers == 0``) or split over callers."""
        if callers == 0:
            start = time.perf_counter()
            for key in keys:
                handle = await self.acquire()
                await self.fetch_id(handle, key)
                await self.release(handle)
            return RunSample(time.perf_counter() - start, len(keys))
        waits: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*(self._caller(keys[i::callers], waits) for i in range(callers)))
        return RunSample(time.perf_counter() - start, len(keys), waits)

    async def _caller(self, keys: Sequence[int], waits: list[float]) -> None:
        clock = time.perf_counter
        for key in keys:
            begin = clock()
            handle = await self.acquire()
            waits.append(clock() - begin)
            await self.fetch_id(handle, key)
            await self.release(handle)


Connect = Callable[[], Awaitable[Any]]
Fetch = Callable[[Any, int], Awaitable[int]]


async def open_all(connect: Connect, count: int) -> list[Any]:
    """Open ``count`` raw connections, one after another."""
    return [await connect() for _ in range(count)]


async def close_all(conns: list[Any]) -> None:
    """Close raw connections (``close()`` is a coroutine in some drivers, not all)."""
    for conn in conns:
        if inspect.isawaitable(closing := conn.close()):
            await closing
    conns.clear()


class RawFloor(PoolContender):
    """The floor: raw driver connections, no pool; one worker per connection."""

    def __init__(self, name: str, connect: Connect, fetch: Fetch, *, size: int) -> None:
        self.name, self.note = name, "floor: raw connection(s), no pool, no acquire step"
        self.size, self._connect, self._fetch = size, connect, fetch
        self._conns: list[Any] = []

    async def start(self) -> None:
        """Open ``size`` raw connections."""
        self._conns = await open_all(self._connect, self.size)

    async def close(self) -> None:
        """Close the raw connections."""
        await close_all(self._conns)

    async def once(self, key: int) -> int:
        """Select ``key`` on the first connection."""
        return await self._fetch(self._conns[0], key)

    async def run(self, keys: Sequence[int], callers: int) -> RunSample:
        """Select every key on one connection, or on min(callers, size) connections at once."""
        start = time.perf_counter()
        if callers == 0:
            await self._worker(self._conns[0], keys)
        else:
            workers = min(callers, len(self._conns))
            await asyncio.gather(
                *(self._worker(self._conns[i], keys[i::workers]) for i in range(workers))
            )
        return RunSample(time.perf_counter() - start, len(keys))

    async def _worker(self, conn: Any, keys: Sequence[int]) -> None:
        fetch = self._fetch
        for key in keys:
            await fetch(conn, key)


FetchRows = Callable[[Any, int], Awaitable[list[dict[str, Any]]]]


class LeanLayer(PoolContender):
    """The calibration floor for a pool: the least a pool with ``process()`` dicts can do.

    Raw connections on a LIFO list, a FIFO of waiters that a release hands its connection
    to directly, and ``process({"operation": ...})`` for acquire / execute / release
    returning result dicts (rows as dicts, as ours returns them). No health, lifetime,
    reset, stats, validation or placeholder rewrite. The gap from the raw floor to this row
    is what any pool with this API costs; the gap from this row to ours is our own code.
    """

    def __init__(self, name: str, connect: Connect, fetch_rows: FetchRows, size: int) -> None:
        self.name = name
        self.note = "calibration: ~40-line pool, process(acquire/execute/release) dicts"
        self._connect, self._fetch_rows, self._size = connect, fetch_rows, size
        self._idle: list[Any] = []
        self._leased: dict[str, Any] = {}
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._seq = 0

    async def start(self) -> None:
        self._idle = await open_all(self._connect, self._size)

    async def close(self) -> None:
        await close_all(self._idle)

    async def process(self, op: Mapping[str, Any]) -> dict[str, Any]:
        kind = op["operation"]
        if kind == "execute":
            cid = op["connection_id"]
            start = time.perf_counter()
            rows = await self._fetch_rows(self._leased[cid], op["params"][0])
            ms = (time.perf_counter() - start) * 1000.0
            return {"success": True, "data": rows, "row_count": len(rows), "error": None,
                    "connection_id": cid, "execution_time_ms": ms}  # fmt: skip
        if kind == "acquire":
            if self._idle:
                conn = self._idle.pop()
            else:
                fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                conn = await fut
            self._seq += 1
            cid = f"lean_{self._seq}"
            self._leased[cid] = conn
            return {"connection_id": cid}
        conn = self._leased.pop(op["connection_id"])  # release
        if self._waiters:
            self._waiters.popleft().set_result(conn)
        else:
            self._idle.append(conn)
        return {"status": "released", "connection_id": op["connection_id"]}

    async def acquire(self) -> Any:
        return (await self.process({"operation": "acquire"}))["connection_id"]

    async def fetch_id(self, handle: Any, key: int) -> int:
        op = {"operation": "execute", "connection_id": handle, "params": [key]}
        return int((await self.process(op))["data"][0]["id"])

    async def release(self, handle: Any) -> None:
        await self.process({"operation": "release", "connection_id": handle})


@dataclass(slots=True)
class Result:
    """Per-round measurements of one contender in one mode."""

    name: str
    note: str = ""
    round_us: list[float] = field(default_factory=list)
    wait_p50_us: list[float] = field(default_factory=list)
    wait_p99_us: list[float] = field(default_factory=list)
    wait_max_us: list[float] = field(default_factory=list)
    error: str | None = None
    report: str = ""

    def add(self, sample: RunSample) -> None:
        """Record one round."""
        self.round_us.append(sample.wall_s / sample.n * 1e6)
        if sample.waits_s:
            self.wait_p50_us.append(percentile(sample.waits_s, 0.50) * 1e6)
            self.wait_p99_us.append(percentile(sample.waits_s, 0.99) * 1e6)
            self.wait_max_us.append(max(sample.waits_s) * 1e6)

    @property
    def us(self) -> float | None:
        """Median µs per query over the rounds (amortised wall time when concurrent)."""
        return statistics.median(self.round_us) if self.round_us else None

    def paired_ratio(self, other: Result) -> float | None:
        """Median over rounds of this round's µs/query over ``other``'s in the same round.

        Rounds run contenders back to back, so a per-round ratio cancels the machine's slow
        drift (idle vCPUs, neighbours) better than a ratio of medians.

        >>> a, b = Result("a", round_us=[10.0, 30.0, 12.0]), Result("b", round_us=[5.0, 10.0, 6.0])
        >>> a.paired_ratio(b)
        2.0
        """
        pairs = [x / y for x, y in zip(self.round_us, other.round_us, strict=False) if y]
        return statistics.median(pairs) if pairs else None

    def wait_us(self, which: str) -> float | None:
        """Median over the rounds of the per-round ``p50``, ``p99`` or ``max`` acquire wait."""
        values = {"p50": self.wait_p50_us, "p99": self.wait_p99_us, "max": self.wait_max_us}[which]
        return statistics.median(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        us = self.us
        return {
            "contender": self.name,
            "us_per_query": us,
            "qps": 1e6 / us if us else None,
            "rounds_us": self.round_us,
            "wait_p50_us": self.wait_us("p50"),
            "wait_p99_us": self.wait_us("p99"),
            "wait_max_us": self.wait_us("max"),
            "error": self.error,
            "report": self.report,
        }


async def create_rows_table(node: Any, table: str, rows: int = 100) -> None:
    """Create ``table`` (id, a, b) with ``rows`` rows through ``node.process`` (PostgreSQL).

    The caller drops it; a failed insert drops it here. Raises RuntimeError when the
    node reports a statement failed (it returns ``success: False`` rather than raising).
    """

    async def run(sql: str) -> None:
        result = await node.process({"query": sql})
        if not result.get("success", True):
            raise RuntimeError(f"{sql.split('(')[0]} failed: {result.get('error')}")

    await run(f"CREATE TABLE {table} (id int PRIMARY KEY, a int, b text)")
    try:
        await run(
            f"INSERT INTO {table} SELECT g, g * 2, 'row ' || g FROM generate_series(1, {rows}) g"
        )
    except BaseException:
        await node.process({"query": f"DROP TABLE IF EXISTS {table}"})
        raise


def make_rounds(
    rng: random.Random, rounds: int, queries: int, callers: int, keys: int
) -> list[list[int]]:
    """Return the key lists of the measured rounds of one mode.

    Sequential rounds (``callers == 0``) are 4× as many and ¼ as long: one round trip varies
    ~2x with the machine's state, so a sequential ratio needs many pairings; concurrent
    rounds stay long enough for their wait percentiles.

    >>> [len(r) for r in make_rounds(random.Random(1), 2, 400, 0, 10)]
    [100, 100, 100, 100, 100, 100, 100, 100]
    """
    count, size = (rounds * 4, max(1, queries // 4)) if callers == 0 else (rounds, queries)
    return [[rng.randint(1, keys) for _ in range(size)] for _ in range(count)]


def fmt_ratio(value: float | None, unit: str = "×") -> str:
    """Return ``value`` with two decimals and ``unit``, or "n/a".

    >>> fmt_ratio(1.234), fmt_ratio(None)
    ('1.23×', 'n/a')
    """
    return "n/a" if value is None else f"{value:.2f}{unit}"


def verdict(value: float | None, target: float, *, at_least: bool = False) -> str:
    """Return PASS when ``value`` is at most (``at_least``: at least) ``target``, else FAIL;
    n/a without a value.

    >>> verdict(1.1, 1.15), verdict(2.0, 1.5, at_least=True), verdict(None, 1.0)
    ('PASS', 'PASS', 'n/a')
    """
    if value is None:
        return "n/a"
    return "PASS" if (value >= target if at_least else value <= target) else "FAIL"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (``fraction`` in 0..1).

    >>> percentile([5, 1, 4, 2, 3], 0.5)
    3
    >>> percentile(list(range(1, 101)), 0.99)
    99
    """
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


def describe(exc: BaseException) -> str:
    """Return a one-line, bounded description of an exception for a table row."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: round did not finish in time"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:110]


async def compare(
    contenders: Sequence[Contender],
    rounds: Sequence[Sequence[int]],
    warmup: Sequence[int],
    callers: int,
    timeout_s: float,
) -> list[Result]:
    """Start, warm up and measure ``contenders`` round by round; close them; return results.

    A contender that fails (start, wrong row, exception, or a round longer than
    ``timeout_s``) keeps an error row and drops out; the others go on. Every contender is
    closed at the end, started or not, so ``close`` must tolerate a failed ``start``.
    """
    results = {c.name: Result(c.name, c.note) for c in contenders}
    live: list[Contender] = []
    for contender in contenders:
        if await _guard(results[contender.name], timeout_s, _warm(contender, warmup, callers)):
            live.append(contender)
    # Freeze what exists now so the per-round collections below stay short.
    gc.collect()
    gc.freeze()
    order = random.Random(len(rounds))
    for keys in rounds:
        # A fresh random order each round: a rotation would keep every contender behind
        # the same predecessor, and one that leaves work behind (kailash's pool, SQLAlchemy)
        # would then always slow the same neighbour.
        order.shuffle(live)
        for contender in live:
            result = results[contender.name]
            if result.error is None:
                gc.collect()
                await _guard(result, timeout_s, _measure(contender, keys, callers, result))
    for contender in live:
        await _report(contender, results[contender.name], timeout_s)
    gc.unfreeze()
    for contender in contenders:
        await _close_quietly(contender)
    return [results[c.name] for c in contenders]


async def _warm(contender: Contender, keys: Sequence[int], callers: int) -> None:
    await contender.start()
    for key in keys[:3]:
        got = await contender.once(key)
        if got != key:
            raise RuntimeError(f"point select for id={key} returned id={got!r}")
    await contender.run(keys, callers)


async def _measure(contender: Contender, keys: Sequence[int], callers: int, into: Result) -> None:
    into.add(await contender.run(keys, callers))


async def _report(contender: Contender, into: Result, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            into.report = await contender.report()
    except Exception as exc:
        into.report = f"stats failed: {describe(exc)}"


async def _guard(result: Result, timeout_s: float, work: Awaitable[None]) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await work
    except Exception as exc:
        result.error = describe(exc)
        return False
    return True


async def _close_quietly(contender: Contender) -> None:
    try:
        async with asyncio.timeout(10):
            await contender.close()
    except Exception as exc:
        print(f"  (closing {contender.name} failed: {describe(exc)})", file=sys.stderr)


def format_table(
    title: str,
    results: Sequence[Result],
    *,
    waits: bool,
    floors: Mapping[str, str] | None = None,
) -> str:
    """Render one table; the first row is the floor the ratios refer to.

    ``±rounds`` is half the range of the per-round µs/query over the median: the noise to
    read the ratios against. ``×floor`` divides medians; ``paired`` is the median of the
    per-round ratios to the floor (see :meth:`Result.paired_ratio`). ``floors`` maps a
    contender's name to another row's name to use as that row's floor instead; such a row
    ends with ``(vs <floor>)``.
    """
    floor = results[0] if results else None
    by_name = {r.name: r for r in results}
    own = {name: by_name[other] for name, other in (floors or {}).items() if other in by_name}
    head = (
        f"{'contender':<28} {'µs/query':>9} {'±rounds':>7} {'q/s':>8} {'×floor':>7} {'paired':>7}"
    )
    if waits:
        head += f" {'wait p50 µs':>11} {'wait p99 µs':>11} {'p99/p50':>7} {'wait max µs':>11}"
    lines = [title, head, "-" * len(head)]
    for result in results:
        row_floor = own.get(result.name, floor)
        line = _row(result, row_floor, waits=waits)
        if row_floor is not floor and row_floor is not None and result.error is None:
            line += f"  (vs {row_floor.name})"
        lines.append(line)
    return "\n".join(lines)


def _row(result: Result, floor: Result | None, *, waits: bool) -> str:
    us = result.us
    if result.error is not None or us is None:
        return f"{result.name:<28} ERROR {result.error}"
    floor_us = floor.us if floor else None
    ratio = f"{us / floor_us:7.2f}" if floor_us else f"{'-':>7}"
    paired = result.paired_ratio(floor) if floor else None
    spread = (max(result.round_us) - min(result.round_us)) / 2 / us
    line = f"{result.name:<28} {us:9.1f} {spread:7.0%} {1e6 / us:8.0f} {ratio} {_num(paired, 2):>7}"
    if waits:
        p50, p99 = result.wait_us("p50"), result.wait_us("p99")
        tail = f"{p99 / p50:7.1f}" if p50 and p99 is not None else f"{'-':>7}"
        line += f" {_num(p50):>11} {_num(p99):>11} {tail} {_num(result.wait_us('max')):>11}"
    return line


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_json(path: Any, packages: Sequence[str], modes: list[dict[str, Any]]) -> None:
    """Write a run's command, machine facts and per-mode results to ``path`` (a Path)."""
    document = {"command": sys.argv, "facts": machine_facts(packages), "modes": modes}
    path.write_text(json.dumps(document, indent=2))


def machine_facts(packages: Sequence[str]) -> list[str]:
    """Return lines describing the machine, interpreter and driver versions (call in a loop)."""
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"machine: {platform.machine()} {platform.system()} {platform.release()}, "
        f"nproc={os.cpu_count()}, usable={len(os.sched_getaffinity(0))}",
        f"python: {sys.version.split()[0]} ({platform.python_implementation()}), "
        f"event loop: {type(asyncio.get_running_loop()).__name__}",
        "packages: " + ", ".join(versions),
        f"started: {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
