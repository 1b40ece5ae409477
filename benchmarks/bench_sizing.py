"""Adaptive pool sizing under a bursty load: waits, throughput and connections held.

Workload (PostgreSQL, time-based): idle 3 s → 50 concurrent callers for 4 s → idle 3 s,
three times, then a slow ramp 0 → 50 callers over 10 s and back to 0 over 10 s (50 s).
Each caller loops acquire → ``SELECT pg_sleep(0.005)`` → release, with no think time, so a
connection is held ~5 ms of server time plus the round trip and the pool's own overhead;
the statement is the same for every contender. Callers start and stop on a 10 ms tick; a
caller told to stop finishes its current query first.

Contenders, each with its own ``application_name``: our pool fixed at 5 and fixed at 50
connections (adaptive sizing off), psycopg_pool 5..50 with its own growth, the ``kailash``
package's adaptive pool 5..50 as shipped (when importable; its controller decides every
30 s), and ours 5..50 with ``adaptive_sizing=True``.

Our three pools (fixed 5, fixed 50, ours) take turns segment by segment: the schedule is
cut where the load is 0 (each idle/spike/idle cycle, then the ramp), and each segment runs
for the three in turn, the order flipping every segment (and run). So whatever the
machine does over a minute falls on all three alike, instead of on whichever ran then.
Ours stays open and idle between its turns; the fixed pools have no state and reopen for
each. psycopg_pool and kailash keep state across the schedule and can hold 50 idle
connections each, which would count against ours' live cap (80% of max_connections minus
other clients: in one run kailash's pool held 48 and psycopg's 50, the cap fell to 42 and
ours waited), so each runs the whole schedule on its own: after our three in odd runs,
before them in even runs.
Each run prints its own tables and acceptance lines; the verdict that counts is the one
over all runs (every acquire of every run), because one run's p99 sits where ~1% of
acquires were delayed by the machine and moves by several µs from run to run.

With a local server, the benchmark runs on half the CPUs and the server on the other half
(``_placement.py``; ``--no-pin`` leaves placement to the scheduler): left to it, an A/A
test (``--twin``: a second, identical fixed-50 pool) gave p99 ratios of 0.65–1.67× per
run, pinned 0.98–1.04×.

Open connections are counted server-side: a thread with its own connection samples
``pg_stat_activity`` for the contender's ``application_name`` every 50 ms (autocommit, so
every sample is a fresh snapshot), next to the pool's own count; connection-seconds
integrate the server-side count over the schedule.

    python benchmarks/bench_sizing.py               # 3 runs × 5 contenders × 50 s ≈ 14 min
    python benchmarks/bench_sizing.py --twin        # + the A/A twin, ≈ 17 min
    python benchmarks/bench_sizing.py --runs 1      # one run, ≈ 4.5 min
    python benchmarks/bench_sizing.py --quick       # 1 spike + 10 s ramp, 1 run, ≈ 2 min
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import itertools
import json
import logging
import math
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from _common import describe, machine_facts, percentile
from _placement import postmaster_of, separate_cpus

REPO_ROOT = str(Path(__file__).resolve().parents[1])  # for kailash_nodes when not installed
MIN, MAX = 5, 50
SAMPLE_EVERY = 0.05  # seconds between open-connection samples
BUCKET = 0.1  # seconds per acquire-wait bucket (reaction time, plot)
SETTLE_WAIT = 0.005  # a bucket is "served" when its p95 acquire wait is below this
SETTLE_RUN = 3  # ... for this many consecutive buckets
GROW_SHARE = 0.8  # "grown" once the pool holds this share of its peak in the spike
PACKAGES = ["asyncpg", "psycopg", "psycopg-pool", "kailash", "psutil", "numpy", "matplotlib"]
DEFAULT_PLOT = Path(__file__).resolve().parent / "out" / "sizing.png"


# --- The schedule --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """``duration`` seconds going linearly from ``start`` to ``end`` callers."""

    label: str
    duration: float
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Schedule:
    """A sequence of phases; ``load(t)`` is the number of callers at ``t`` seconds."""

    phases: tuple[Phase, ...]

    @property
    def duration(self) -> float:
        """Return the schedule's length in seconds."""
        return sum(p.duration for p in self.phases)

    def load(self, t: float) -> int:
        """Return the callers wanted ``t`` seconds into the schedule.

        >>> s = Schedule((Phase("idle", 1, 0, 0), Phase("ramp", 10, 0, 50)))
        >>> s.load(0.5), s.load(1.0), s.load(6.0), s.load(11.0), s.load(12.0)
        (0, 0, 25, 0, 0)
        """
        begin = 0.0
        for p in self.phases:
            if begin <= t < begin + p.duration:
                return round(p.start + (p.end - p.start) * (t - begin) / p.duration)
            begin += p.duration
        return 0

    def segments(self) -> list[tuple[float, float]]:
        """Return the schedule cut where the load is 0 on both sides: each idle/spike/idle
        cycle, and the ramp up and down together (contenders take turns per segment).

        >>> make_schedule(2, 10.0).segments()
        [(0.0, 10.0), (10.0, 20.0), (20.0, 40.0)]
        """
        cuts, begin = [0.0], 0.0
        for p, nxt in zip(self.phases, [*self.phases[1:], None], strict=True):
            begin += p.duration
            if nxt is None or (p.label == "idle" and p.end == 0 and nxt.start == 0):
                cuts.append(begin)
        return list(itertools.pairwise(cuts))

    def windows(self, label: str) -> list[tuple[float, float]]:
        """Return the (start, end) seconds of every phase whose label starts with ``label``."""
        out, begin = [], 0.0
        for p in self.phases:
            if p.label.startswith(label):
                out.append((begin, begin + p.duration))
            begin += p.duration
        return out


def make_schedule(spikes: int, ramp_s: float, peak: int = MAX) -> Schedule:
    """Idle 3 s → ``peak`` callers 4 s → idle 3 s, ``spikes`` times; ramp up and down."""
    burst = (Phase("idle", 3, 0, 0), Phase("spike", 4, peak, peak), Phase("idle", 3, 0, 0))
    ramp = (Phase("ramp up", ramp_s, 0, peak), Phase("ramp down", ramp_s, peak, 0))
    return Schedule(burst * spikes + ramp)


# --- Contenders ----------------------------------------------------------------------------


def _with_app_name(dsn: str, app: str) -> str:
    """Return ``dsn`` with ``application_name=app`` in its query string."""
    parts = urlsplit(dsn)
    query = "&".join(
        [q for q in parts.query.split("&") if q and not q.startswith("application_name=")]
        + [f"application_name={app}"]
    )
    return urlunsplit(parts._replace(query=query))


class SizingContender:
    """One pool driven by the schedule; subclasses wrap a pool's own API."""

    key = ""
    name = ""
    note = ""
    persistent = True  # stays open between its segments (False: reopened for each)
    takes_turns = False  # runs segments in turn with the others that do (else on its own)

    def __init__(self, dsn: str, app: str, query: str) -> None:
        self.dsn, self.app, self.query = dsn, app, query
        self.pool: Any = None

    async def start(self) -> None:
        """Open the pool with its minimum connections."""

    async def close(self) -> None:
        """Close the pool (a no-op when it never opened)."""

    async def acquire(self) -> Any:
        """Return a connection handle."""
        raise NotImplementedError

    async def hold(self, handle: Any) -> None:
        """Run the hold statement on ``handle``."""
        raise NotImplementedError

    async def release(self, handle: Any) -> None:
        """Give ``handle`` back."""
        raise NotImplementedError

    # Read from the sampler thread: plain attribute reads and len() only.
    def client_count(self) -> int | None:
        """Return the open connections as the pool itself counts them."""
        return None

    def cap(self) -> int | None:
        """Return the pool's live cap, when it has one."""
        return None

    def floor(self) -> int | None:
        """Return the size the pool keeps open when idle, when it has one."""
        return None

    def adjustments(self) -> list[dict[str, Any]] | None:
        """Return the controller's adjustment history (None: the pool has no controller)."""
        return None


class Ours(SizingContender):
    """kailash_nodes.WorkflowConnectionPool through its Python API."""

    takes_turns = True
    key = "ours"
    name = "ours adaptive 5..50"
    note = "WorkflowConnectionPool(adaptive_sizing=True, min 5, max 50), acquire/execute/release"
    adaptive = True
    lo, hi = MIN, MAX

    async def start(self) -> None:
        try:
            from kailash_nodes import WorkflowConnectionPool
        except ImportError:
            sys.path.insert(0, REPO_ROOT)
            from kailash_nodes import WorkflowConnectionPool

        self.pool = WorkflowConnectionPool(
            name=self.app,
            database_type="postgresql",
            connection_string=self.dsn,
            min_connections=self.lo,
            max_connections=self.hi,
            adaptive_sizing=self.adaptive,
        )
        await self.pool.initialize()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def acquire(self) -> Any:
        return await self.pool.acquire()

    async def hold(self, handle: Any) -> None:
        result = await self.pool.execute(handle, self.query)
        if not result.get("success", True):
            raise RuntimeError(f"execute failed: {result.get('error')}")

    async def release(self, handle: Any) -> None:
        await self.pool.release(handle)

    def client_count(self) -> int | None:
        return len(self.pool.engine.entries()) if self.pool is not None else None

    def cap(self) -> int | None:
        ctl = self.pool.adaptive_controller if self.pool is not None else None
        return ctl.cap if ctl is not None else None

    def floor(self) -> int | None:
        return self.pool.engine.floor if self.pool is not None else None

    def adjustments(self) -> list[dict[str, Any]] | None:
        ctl = self.pool.adaptive_controller if self.pool is not None else None
        return ctl.get_adjustment_history() if ctl is not None else None


class FixedMin(Ours):
    """Our pool with adaptive sizing off, fixed at the minimum."""

    key, name, adaptive, lo, hi = "fixed-min", "fixed 5 (ours, static)", False, MIN, MIN
    note = "WorkflowConnectionPool(min 5, max 5), adaptive sizing off"
    persistent = False

    def floor(self) -> int | None:
        return None


class FixedMax(Ours):
    """Our pool with adaptive sizing off, fixed at the maximum."""

    key, name, adaptive, lo, hi = "fixed-max", "fixed 50 (ours, static)", False, MAX, MAX
    note = "WorkflowConnectionPool(min 50, max 50), adaptive sizing off"
    persistent = False

    def floor(self) -> int | None:
        return None


class FixedMaxTwin(FixedMax):
    """A second, identical fixed-50 pool (``--twin``): an A/A test of the measurement."""

    key, name = "fixed-max-twin", "fixed 50 twin (A/A)"
    note = "the same as fixed 50; its p99 against fixed 50's shows the measurement's noise"


class Psycopg(SizingContender):
    """psycopg_pool.AsyncConnectionPool 5..50, growing and shrinking by its own rules."""

    key = "psycopg"
    name = "psycopg_pool 5..50"
    note = (
        "AsyncConnectionPool(min_size=5, max_size=50, autocommit) with defaults: grows one "
        "connection at a time while callers wait, shrinks after max_idle=600 s"
    )

    async def start(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            _with_app_name(self.dsn, self.app),
            min_size=MIN,
            max_size=MAX,
            kwargs={"autocommit": True},
            open=False,
        )
        await self.pool.open(wait=True)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def acquire(self) -> Any:
        return await self.pool.getconn()

    async def hold(self, handle: Any) -> None:
        await handle.execute(self.query)

    async def release(self, handle: Any) -> None:
        await self.pool.putconn(handle)

    def client_count(self) -> int | None:
        return int(self.pool.get_stats()["pool_size"]) if self.pool is not None else None


class Kailash(SizingContender):
    """The ``kailash`` package's WorkflowConnectionPool with its adaptive controller."""

    key = "kailash"
    name = "kailash adaptive 5..50"
    note = (
        "kailash WorkflowConnectionPool(adaptive_sizing=True, min 5, max 50) as shipped: "
        "process(acquire/execute/release); its controller decides every 30 s"
    )

    async def start(self) -> None:
        from kailash.nodes.data.workflow_connection_pool import WorkflowConnectionPool

        self.pool = WorkflowConnectionPool(
            name=self.app,
            database_type="postgresql",
            connection_string=_with_app_name(self.dsn, self.app),
            min_connections=MIN,
            max_connections=MAX,
            adaptive_sizing=True,
        )
        await self.pool.process({"operation": "initialize"})

    async def close(self) -> None:
        if self.pool is not None:  # it closes only as an async context manager
            await self.pool.__aexit__(None, None, None)

    async def acquire(self) -> Any:
        return (await self.pool.process({"operation": "acquire"}))["connection_id"]

    async def hold(self, handle: Any) -> None:
        op = {"operation": "execute", "connection_id": handle, "query": self.query}
        result = await self.pool.process(op)
        if not result.get("success", True):
            raise RuntimeError(f"execute failed: {result.get('error')}")

    async def release(self, handle: Any) -> None:
        await self.pool.process({"operation": "release", "connection_id": handle})

    def client_count(self) -> int | None:
        # == get_pool_statistics()["total_connections"], without the coroutine
        return len(self.pool.all_connections) if self.pool is not None else None

    def adjustments(self) -> list[dict[str, Any]] | None:
        ctl = getattr(self.pool, "adaptive_controller", None)
        return ctl.get_adjustment_history() if ctl is not None else None


def _kailash_missing() -> str | None:
    """Return why the kailash adaptive pool cannot be built, or None when it can."""
    try:
        logging.getLogger("kailash").setLevel(logging.CRITICAL)  # its actors log a lot
        import psutil  # noqa: F401  # its adaptive controller needs it; not a kailash dep
        from kailash.nodes.data.workflow_connection_pool import WorkflowConnectionPool  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


LINEUP: dict[str, type[SizingContender]] = {
    "fixed-min": FixedMin,
    "fixed-max": FixedMax,
    "fixed-max-twin": FixedMaxTwin,
    "psycopg": Psycopg,
    "kailash": Kailash,
    "ours": Ours,
}


# --- Driving one contender through the schedule ----------------------------------------------


class Sampler(threading.Thread):
    """Every 50 ms: server-side open connections of one application_name, and pool facts."""

    def __init__(self, dsn: str, contender: SizingContender, load: Callable[[], int]) -> None:
        super().__init__(name=f"sampler-{contender.key}", daemon=True)
        self.dsn, self.contender, self.load = dsn, contender, load
        self.samples: list[tuple[float, int, int | None, int, int | None, int | None]] = []
        self.error: str | None = None
        self._halt = threading.Event()
        self._ready = threading.Event()

    def run(self) -> None:
        import psycopg

        c = self.contender
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        try:
            with psycopg.connect(
                self.dsn, autocommit=True, application_name="kn_sizing_sampler"
            ) as conn:
                self._ready.set()
                due = time.monotonic()
                while not self._halt.is_set():
                    row = conn.execute(sql, (c.app,)).fetchone()
                    t = time.monotonic()
                    server = int(row[0]) if row else 0
                    client, cap, floor = _safe(c.client_count), _safe(c.cap), _safe(c.floor)
                    self.samples.append((t, server, client, self.load(), cap, floor))
                    due += SAMPLE_EVERY
                    self._halt.wait(max(0.0, due - time.monotonic()))
        except Exception as exc:
            self.error = describe(exc)
        finally:
            self._ready.set()

    def wait_ready(self) -> None:
        """Block until the sampler's connection is open (or failed)."""
        self._ready.wait(10)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._halt.set()
        self.join(5)


def _safe(read: Callable[[], int | None]) -> int | None:
    try:
        return read()
    except Exception:  # a racy read from the sampler thread: skip this sample
        return None


@dataclass(slots=True)
class Trace:
    """What one contender did in one run (times in seconds from the schedule's start)."""

    key: str
    name: str
    note: str = ""
    error: str | None = None
    starts: list[float] = field(default_factory=list)  # when each acquire began
    waits: list[float] = field(default_factory=list)  # how long it waited
    done: int = 0  # queries completed inside the schedule
    errors: int = 0
    last_error: str | None = None
    samples: list[tuple[float, int, int | None, int, int | None, int | None]] = field(
        default_factory=list
    )  # (t, server count, client count, callers, cap, floor)
    history: list[dict[str, Any]] | None = None  # adjustments made during its segments
    segments: list[tuple[float, float, datetime.datetime]] = field(
        default_factory=list
    )  # (schedule lo, hi, wall-clock start) of each segment it ran
    dsn: str = ""
    leftover: int = 0  # server connections still open 10 s after close
    sampler_error: str | None = None


class Driver:
    """Runs the schedule against one contender: starts and stops callers on a 10 ms tick."""

    def __init__(self, contender: SizingContender, schedule: Schedule, trace: Trace) -> None:
        self.c, self.schedule, self.trace = contender, schedule, trace
        self.target = 0
        self.t0 = 0.0
        self.end = math.inf

    async def run(self, lo: float, hi: float) -> None:
        """Drive seconds [lo, hi) of the schedule; return once every caller stopped.

        Times in the trace are schedule seconds: ``t0`` is when schedule second 0 would
        have been, had the schedule run from there without a break.
        """
        tasks: list[asyncio.Task[None] | None] = [None] * MAX
        loop = asyncio.get_running_loop()
        self.t0 = time.monotonic() - lo
        self.end = self.t0 + hi
        while (now := time.monotonic()) < self.end:
            self.target = self.schedule.load(now - self.t0)
            for i in range(self.target):
                task = tasks[i]
                if task is None or task.done():
                    tasks[i] = loop.create_task(self._caller(i))
            await asyncio.sleep(0.01)
        self.target = 0
        live = [t for t in tasks if t is not None and not t.done()]
        if live:
            _, pending = await asyncio.wait(live, timeout=10)
            for task in pending:  # a caller stuck in acquire (no acquire timeout): give up
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _caller(self, i: int) -> None:
        c, trace, clock = self.c, self.trace, time.monotonic
        starts, waits = trace.starts, trace.waits
        while self.target > i:
            begin = clock()
            try:
                handle = await c.acquire()
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(0.01)
                continue
            starts.append(begin - self.t0)
            waits.append(clock() - begin)
            try:
                await c.hold(handle)
                if clock() < self.end:
                    trace.done += 1
            except Exception as exc:
                self._failed(exc)
            finally:
                try:
                    await c.release(handle)
                except Exception as exc:
                    self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.trace.errors += 1
        self.trace.last_error = describe(exc)


async def _server_count(dsn: str, app: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"application_name": "kn_sizing_sampler"})
    try:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        return int(await conn.fetchval(sql, app))
    finally:
        await conn.close()


async def run_contenders(
    keys: Sequence[str], dsn: str, schedule: Schedule, query: str, run: int
) -> list[Trace]:
    """Drive the schedule through every contender.

    Our three pools (fixed 5, fixed 50, ours) take turns segment by segment: each segment
    (an idle/spike/idle cycle, the ramp) runs for one after another, the order flipping
    every segment and every run, so whatever the machine does over a minute falls on all
    three alike. Ours stays open between its turns; the fixed pools have no state and
    reopen for each. psycopg_pool and kailash keep state across the schedule and hold up
    to 50 idle connections each, which would count against ours' live cap (80% of
    max_connections minus other clients) if they stayed open during its turns, so each
    runs the whole schedule on its own, after our three in odd runs and before them in
    even runs.
    """
    contenders = {k: LINEUP[k](dsn, f"kns{os.getpid()}_r{run}_{k}", query) for k in keys}
    traces = {k: Trace(k, LINEUP[k].name, LINEUP[k].note, dsn=dsn) for k in keys}
    turns = [k for k in keys if LINEUP[k].takes_turns]
    alone = [k for k in keys if not LINEUP[k].takes_turns]
    segments = schedule.segments()

    async def together() -> None:
        for index, (lo, hi) in enumerate(segments):
            for key in turns if (run + index) % 2 else turns[::-1]:
                await run_segment(contenders[key], traces[key], schedule, lo, hi)

    async def one_by_one() -> None:
        for key in alone if run % 2 else alone[::-1]:
            for lo, hi in segments:
                await run_segment(contenders[key], traces[key], schedule, lo, hi)
            await _close(contenders[key], traces[key])

    try:
        for part in (together, one_by_one) if run % 2 else (one_by_one, together):
            await part()
    finally:
        for key in keys:
            await _close(contenders[key], traces[key])
    return [traces[k] for k in keys]


def describe_order(keys: Sequence[str], run: int) -> str:
    """Return who runs when in ``run`` (see `run_contenders`).

    >>> describe_order(["fixed-min", "fixed-max", "psycopg", "kailash", "ours"], 2)
    'kailash, psycopg alone, then ours fixed-max fixed-min in turns'
    """
    turns = [k for k in keys if LINEUP[k].takes_turns]
    alone = [k for k in keys if not LINEUP[k].takes_turns]
    first_turns = " ".join(turns if run % 2 else turns[::-1]) + " in turns"
    alone_part = ", ".join(alone if run % 2 else alone[::-1]) + " alone"
    if not alone:
        return first_turns
    if not turns:
        return alone_part
    return f"{first_turns}, then {alone_part}" if run % 2 else f"{alone_part}, then {first_turns}"


async def run_segment(
    contender: SizingContender, trace: Trace, schedule: Schedule, lo: float, hi: float
) -> None:
    """Drive schedule seconds [lo, hi) through one contender, sampling its connections."""
    if trace.error is not None:  # it failed in an earlier segment: leave it out
        return
    driver = Driver(contender, schedule, trace)
    sampler = Sampler(trace.dsn, contender, lambda: driver.target)
    try:
        if contender.pool is None:
            async with asyncio.timeout(60):
                await contender.start()
        sampler.start()
        await asyncio.to_thread(sampler.wait_ready)
        await asyncio.sleep(0.5)  # new pools open their minimum; the segment begins idle
        before = len(contender.adjustments() or [])
        wall = datetime.datetime.now(datetime.UTC)
        await driver.run(lo, hi)
        if (hist := contender.adjustments()) is not None:
            trace.history = [*(trace.history or []), *hist[before:]]
        trace.segments.append((lo, hi, wall))
    except Exception as exc:
        trace.error = describe(exc)
    finally:
        sampler.stop()
        trace.sampler_error = trace.sampler_error or sampler.error
        trace.samples += segment_samples(sampler.samples, driver.t0, lo, hi)
    if not contender.persistent:
        await _close(contender, trace)


def segment_samples(raw: Sequence[tuple[Any, ...]], t0: float, lo: float, hi: float) -> list[Any]:
    """Return the samples of [lo, hi] in schedule seconds; the last one taken before the
    segment began (while the pool settled) stands for second ``lo``.

    >>> segment_samples([(0.9, 5), (1.05, 5), (1.2, 7), (1.4, 6), (2.1, 5)], 1.0, 0.0, 1.0)
    [(0.0, 5), (0.05, 5), (0.2, 7), (0.4, 6)]
    """
    out = [(round(t - t0, 9), *rest) for t, *rest in raw]
    inside = [smp for smp in out if lo <= smp[0] <= hi]
    before = [(lo, *rest) for t, *rest in out if t < lo][-1:]
    return before + inside if not inside or inside[0][0] > lo else inside


async def _close(contender: SizingContender, trace: Trace) -> None:
    """Close the contender's pool (if open) and wait until its server backends are gone."""
    if contender.pool is None:
        return
    try:
        async with asyncio.timeout(60):
            await contender.close()
    except Exception as exc:
        print(f"  (closing {contender.name} failed: {describe(exc)})", file=sys.stderr)
    contender.pool = None
    for _ in range(20):  # let its server backends go before the next contender runs
        trace.leftover = await _server_count(trace.dsn, contender.app)
        if not trace.leftover:
            break
        await asyncio.sleep(0.5)


# --- Summaries -----------------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """The numbers of one trace."""

    queries: int = 0
    qps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    p99_spikes_ms: float | None = None
    p99_ramp_ms: float | None = None
    conn_s: float = 0.0  # server-side
    conn_s_client: float | None = None
    peak: int = 0
    idle_mean: float | None = None  # mean open connections in the idle phases after a spike
    adjustments: int | None = None
    size_changes: int = 0  # changes of the pool's own count between samples
    grow_s: list[float] = field(default_factory=list)  # per spike
    settle_s: list[float] = field(default_factory=list)  # per spike (inf: never)
    over_cap: int | None = None  # samples with more open connections than the live cap
    min_cap: int | None = None


def _integrate(samples: Sequence[tuple[float, int | None]], start: float, end: float) -> float:
    """Integrate a step function sampled at (t, value) over [start, end] (value held forward).

    >>> _integrate([(0.0, 5), (1.0, 10), (2.0, 5)], 0.5, 3.0)
    17.5
    """
    total = 0.0
    for (t, v), (t_next, _) in zip(samples, [*samples[1:], (math.inf, None)], strict=True):
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo and v is not None:
            total += v * (hi - lo)
    return total


def _select(starts: np.ndarray, waits: np.ndarray, windows: list[tuple[float, float]]) -> Any:
    mask = np.zeros(len(starts), dtype=bool)
    for lo, hi in windows:
        mask |= (starts >= lo) & (starts < hi)
    return waits[mask]


def _p99_ms(values: np.ndarray) -> float | None:
    return percentile(values.tolist(), 0.99) * 1000 if len(values) else None


def bucket_p95(starts: np.ndarray, waits: np.ndarray, lo: float, hi: float) -> list[float]:
    """Return the p95 wait (s) of acquires begun in each 100 ms bucket of [lo, hi) (inf: none)."""
    out = []
    n = round((hi - lo) / BUCKET)
    idx = np.floor((starts - lo) / BUCKET).astype(int)
    for b in range(n):
        w = waits[idx == b]
        out.append(float(np.percentile(w, 95, method="inverted_cdf")) if len(w) else math.inf)
    return out


def settle_time(p95s: Sequence[float]) -> float:
    """Return when the first run of 3 buckets with p95 wait < 5 ms begins (inf: never).

    >>> settle_time([0.0, 0.0, 0.0, 0.02]), settle_time([0.05, 0.001, 0.05, 0.001, 0.0, 0.0])
    (0.0, 0.3)
    """
    run = 0
    for i, p in enumerate(p95s):
        run = run + 1 if p < SETTLE_WAIT else 0
        if run == SETTLE_RUN:
            return round((i - SETTLE_RUN + 1) * BUCKET, 3)
    return math.inf


def summarise(trace: Trace, schedule: Schedule) -> Summary:
    """Compute the table's numbers from one trace."""
    s = Summary()
    starts, waits = np.asarray(trace.starts), np.asarray(trace.waits)
    total = schedule.duration
    s.queries = trace.done
    s.qps = trace.done / total
    if len(waits):
        ordered = waits.tolist()
        s.p50_ms = percentile(ordered, 0.50) * 1000
        s.p99_ms = percentile(ordered, 0.99) * 1000
        s.max_ms = float(waits.max()) * 1000
    spikes = schedule.windows("spike")
    s.p99_spikes_ms = _p99_ms(_select(starts, waits, spikes))
    s.p99_ramp_ms = _p99_ms(_select(starts, waits, schedule.windows("ramp")))
    samples = trace.samples
    server = [(t, n) for t, n, *_ in samples]
    client = [(t, c) for t, _, c, *_ in samples]
    s.conn_s = _integrate(server, 0.0, total)
    if any(c is not None for _, c in client):
        s.conn_s_client = _integrate(client, 0.0, total)
    inside = [smp for smp in samples if 0.0 <= smp[0] <= total]
    s.peak = max((n for _, n, *_ in inside), default=0)
    idle = [
        n
        for t, n, *_ in inside
        if any(lo < t < hi for lo, hi in schedule.windows("idle")) and t > spikes[0][1]
    ]
    s.idle_mean = sum(idle) / len(idle) if idle else None
    counts = [c for _, _, c, *_ in inside if c is not None]
    s.size_changes = sum(1 for a, b in itertools.pairwise(counts) if a != b)
    s.adjustments = len(trace.history) if trace.history is not None else None
    for lo, hi in spikes:
        before = [(lo, n) for t, n, *_ in inside if t < lo][-1:]  # what it held at the start
        during = before + [(t, n) for t, n, *_ in inside if lo <= t <= hi]
        peak = max((n for _, n in during), default=0)
        grown = next((t - lo for t, n in during if peak and n >= GROW_SHARE * peak), math.inf)
        s.grow_s.append(max(0.0, grown))
        s.settle_s.append(settle_time(bucket_p95(starts, waits, lo, hi)))
    caps = [(n, cap) for _, n, _, _, cap, _ in inside if cap is not None]
    if caps:
        s.over_cap = sum(1 for n, cap in caps if n > cap)
        s.min_cap = min(cap for _, cap in caps)
    return s


def _f(value: float | None, fmt: str = ".1f", none: str = "-") -> str:
    if value is None:
        return none
    if math.isinf(value):
        return "never"
    return format(value, fmt)


def format_tables(run: int, traces: Sequence[Trace], sums: dict[str, Summary], order: str) -> str:
    """Render the run's main table and its per-spike table."""
    ref = sums.get("fixed-max")
    head = (
        f"{'contender':<24} {'queries':>7} {'q/s':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'conn·s':>7} {'%max':>5} {'client':>7} {'peak':>4} {'adj':>4} "
        f"{'Δsize':>5} {'grow s':>6} {'react s':>7} {'>cap':>5} {'err':>4}"
    )
    lines = [
        f"run {run} ({order}) — whole schedule; conn·s counted server-side",
        head,
        "-" * len(head),
    ]
    for tr in traces:
        if tr.error is not None and not tr.starts:
            lines.append(f"{tr.name:<24} ERROR {tr.error}")
            continue
        s = sums[tr.key]
        share = f"{s.conn_s / ref.conn_s:5.0%}" if ref and ref.conn_s else f"{'-':>5}"
        cap = "-" if s.over_cap is None else ("no" if s.over_cap == 0 else f"{s.over_cap}×")
        lines.append(
            f"{tr.name:<24} {s.queries:>7} {s.qps:>6.0f} {_f(s.p50_ms, '.3f'):>7} "
            f"{_f(s.p99_ms, '.3f'):>7} {_f(s.max_ms):>7} {s.conn_s:>7.0f} {share} "
            f"{_f(s.conn_s_client, '.0f'):>7} {s.peak:>4} {_f(s.adjustments, 'd'):>4} "
            f"{s.size_changes:>5} {_f(max(s.grow_s, default=None), '.2f'):>6} "
            f"{_f(max(s.settle_s, default=None), '.1f'):>7} {cap:>5} {tr.errors:>4}"
            + (f"  ({tr.error})" if tr.error else "")
        )
    n_spikes = len(next(iter(sums.values())).grow_s) if sums else 0
    head2 = f"{'contender':<24} {'p99 spikes':>10} {'p99 ramp':>8} {'idle open':>9}   " + (
        "   ".join(f"spike {i + 1} grow/react" for i in range(n_spikes))
    )
    lines += [
        "",
        f"run {run} — per phase (p99 in ms; idle open = mean server-side connections in the "
        "idle phases after the first spike; grow/react in s)",
        head2,
        "-" * len(head2),
    ]
    for tr in traces:
        s = sums.get(tr.key)
        if s is None or (tr.error is not None and not tr.starts):
            continue
        pairs = zip(s.grow_s, s.settle_s, strict=True)
        spikes = "   ".join(f"{_f(g, '.2f'):>7}/{_f(r, '.1f'):<11}" for g, r in pairs)
        lines.append(
            f"{tr.name:<24} {_f(s.p99_spikes_ms, '.3f'):>10} {_f(s.p99_ramp_ms, '.3f'):>8} "
            f"{_f(s.idle_mean):>9}   {spikes}"
        )
    for tr in traces:
        notes = []
        if tr.last_error:
            notes.append(f"{tr.errors} errors, last: {tr.last_error}")
        if tr.leftover:
            notes.append(f"{tr.leftover} server connection(s) still open 10 s after close")
        if tr.sampler_error:
            notes.append(f"sampler failed: {tr.sampler_error}")
        if notes:
            lines.append(f"  {tr.name}: " + "; ".join(notes))
    return "\n".join(lines)


def pooled(runs: Sequence[tuple[list[Trace], dict[str, Summary]]]) -> dict[str, Summary]:
    """Return one Summary per contender over all runs: p50/p99 over every acquire of every
    run, connection-seconds summed, reaction and cap counts over every spike and sample.
    """
    out: dict[str, Summary] = {}
    keys = {k for _, sums in runs for k in sums}
    for key in keys:
        waits = [w for traces, _ in runs for t in traces if t.key == key for w in t.waits]
        parts = [sums[key] for _, sums in runs if key in sums]
        s = Summary(queries=sum(p.queries for p in parts), conn_s=sum(p.conn_s for p in parts))
        if waits:
            s.p50_ms = percentile(waits, 0.50) * 1000
            s.p99_ms = percentile(waits, 0.99) * 1000
            s.max_ms = max(waits) * 1000
        s.peak = max(p.peak for p in parts)
        s.grow_s = [g for p in parts for g in p.grow_s]
        s.settle_s = [r for p in parts for r in p.settle_s]
        caps = [p for p in parts if p.over_cap is not None]
        if caps:
            s.over_cap = sum(p.over_cap or 0 for p in caps)
            s.min_cap = min(p.min_cap for p in caps if p.min_cap is not None)
        out[key] = s
    return out


def acceptance(sums: dict[str, Summary]) -> list[str]:
    """Return the issue's acceptance lines for ours, against the fixed pools."""
    ours, big, small = sums.get("ours"), sums.get("fixed-max"), sums.get("fixed-min")
    if ours is None or big is None or small is None or ours.p99_ms is None:
        return ["  acceptance: n/a (ours, fixed 5 and fixed 50 must all have run)"]
    out = []
    ratio = ours.p99_ms / big.p99_ms if big.p99_ms else math.inf
    share = ours.conn_s / big.conn_s if big.conn_s else math.inf
    ok = ratio <= 1.2 and share <= 0.6
    out.append(
        f"  [{'PASS' if ok else 'FAIL'}] p99 wait {ours.p99_ms:.3f} ms = {ratio:.2f}× fixed-50's "
        f"{big.p99_ms:.3f} ms (≤ 1.2×; {(ours.p99_ms - big.p99_ms) * 1000:+.0f} µs) while "
        f"holding {share:.0%} of its connection-seconds ({ours.conn_s:.0f} / {big.conn_s:.0f}; "
        "≤ 60%)"
    )
    better = small.p99_ms / ours.p99_ms if small.p99_ms and ours.p99_ms else math.inf
    out.append(
        f"  [{'PASS' if better >= 5 else 'FAIL'}] p99 wait {better:.0f}× better than fixed-5's "
        f"{_f(small.p99_ms, '.2f')} ms (≥ 5×)"
    )
    grow, react = max(ours.grow_s, default=math.inf), max(ours.settle_s, default=math.inf)
    out.append(
        f"  [{'PASS' if max(grow, react) <= 1.0 else 'FAIL'}] reaction to a spike (worst of "
        f"{len(ours.grow_s)}): waits settled after {_f(react, '.1f')} s, grown to "
        f"{GROW_SHARE:.0%} of the spike's peak after {_f(grow, '.2f')} s (≤ 1 s)"
    )
    if ours.over_cap is None:
        out.append("  [FAIL] live cap: not sampled (no controller?)")
    else:
        out.append(
            f"  [{'PASS' if ours.over_cap == 0 else 'FAIL'}] never above the live cap: "
            f"{ours.over_cap} of the samples above it (lowest cap seen {ours.min_cap}, "
            f"peak {ours.peak} server-side)"
        )
    twin = sums.get("fixed-max-twin")
    if twin is not None and twin.p99_ms is not None and big.p99_ms:
        out.append(
            f"  (A/A: fixed-50's twin measured a p99 of {twin.p99_ms:.3f} ms = "
            f"{twin.p99_ms / big.p99_ms:.2f}× fixed-50's: the noise floor of the ratio above)"
        )
    return out


def schedule_time(trace: Trace, at: datetime.datetime) -> float | None:
    """Return the schedule second of wall-clock ``at``, None if between its segments."""
    for lo, hi, wall in trace.segments:
        t = lo + (at - wall).total_seconds()
        if lo <= t <= hi:
            return t
    return None


def describe_history(trace: Trace) -> str:
    """Return ours' adjustments as one compact line: t:from→to per change, grows marked."""
    if not trace.history:
        return f"  {trace.name}: no adjustments recorded"
    parts, grows = [], 0
    for h in trace.history:
        at = datetime.datetime.fromisoformat(str(h["timestamp"])) if "timestamp" in h else None
        if at is not None and at.tzinfo is None:  # kailash stamps local naive times
            at = at.astimezone()
        t = schedule_time(trace, at) if at is not None else None
        kind = str(h.get("reason") or h.get("action") or "")
        grows += kind.startswith(("grow", "scale_up"))
        parts.append(f"{_f(t, '.1f', 'between')}:{h.get('from_size')}→{h.get('to_size')}")
    grown = (h for h in trace.history if str(h.get("reason", "")).startswith("grow"))
    first_grow = next(grown, None)
    line = (
        f"  {trace.name} adjustments ({len(trace.history)}: {grows} up, "
        f"{len(trace.history) - grows} down; schedule s:from→to): " + " ".join(parts)
    )
    if first_grow is not None:
        line += f"\n    first grow reason: {first_grow.get('reason')}"
    return line


# --- Plot ----------------------------------------------------------------------------------

STYLE = {  # colour, line style, width; ours last and thickest so it stays visible on top
    "fixed-min": ("tab:red", "--", 1.3),
    "fixed-max": ("tab:purple", "--", 1.3),
    "psycopg": ("tab:orange", "-", 1.4),
    "kailash": ("tab:green", "-", 1.4),
    "ours": ("tab:blue", "-", 2.2),
}


def plot(path: Path, traces: Sequence[Trace], schedule: Schedule, run: int) -> None:
    """Load and open connections over time (top), p95 acquire wait per 100 ms (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(13, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    total = schedule.duration
    ts = np.arange(0.0, total, 0.01)
    top.fill_between(
        ts, [schedule.load(t) for t in ts], step="post", color="0.85", label="load (callers)"
    )
    for tr in traces:
        color, style, width = STYLE.get(tr.key, ("black", "-", 1.4))
        pts = [(t, n) for t, n, *_ in tr.samples if -0.5 <= t <= total + 0.5]
        if pts:
            label = f"{tr.name} open (server)"
            top.step(
                *zip(*pts, strict=True), where="post", c=color, ls=style, lw=width, label=label
            )
        floor = [(t, f) for t, *_, f in tr.samples if f is not None and -0.5 <= t <= total + 0.5]
        if tr.key == "ours" and floor:
            label = f"{tr.name} floor (controller target)"
            top.step(*zip(*floor, strict=True), where="post", c="navy", ls=":", lw=1.2, label=label)
        starts, waits = np.asarray(tr.starts), np.asarray(tr.waits)
        if len(waits):
            p95 = bucket_p95(starts, waits, 0.0, total)
            xs = np.arange(len(p95)) * BUCKET
            ys = [max(p * 1000, 1e-3) if math.isfinite(p) else np.nan for p in p95]
            bottom.step(xs, ys, where="post", c=color, ls=style, lw=width * 0.8, label=tr.name)
    for lo, hi in schedule.windows("spike"):
        for ax in (top, bottom):
            ax.axvspan(lo, hi, color="0.5", alpha=0.06, lw=0)
    bottom.axhline(SETTLE_WAIT * 1000, color="0.3", ls="--", lw=0.8)
    bottom.text(0.2, SETTLE_WAIT * 1000 * 1.15, "5 ms", fontsize=8, color="0.3")
    top.set_ylabel("callers / open connections")
    top.set_ylim(0, MAX * 1.45)  # room for the legend above the 50 line
    top.set_title(
        f"bench_sizing run {run}: {MAX}-caller spikes and a ramp; open connections counted in "
        "pg_stat_activity every 50 ms"
    )
    top.legend(loc="upper left", fontsize=8, ncol=3, framealpha=0.9)
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("acquire wait p95 per 100 ms (ms)")
    bottom.set_xlabel("seconds since schedule start")
    bottom.legend(loc="upper left", fontsize=8, ncol=5, framealpha=0.9)
    bottom.grid(alpha=0.3, which="both")
    bottom.set_xlim(-0.5, total + 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Main ----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-dsn", default=os.environ.get("KN_PG_DSN"))
    parser.add_argument(
        "--quick", action="store_true", help="1 spike and a 5 s + 5 s ramp, 1 run: ≈ 2 min"
    )
    parser.add_argument("--runs", type=int, help="full schedules per contender (default 3)")
    parser.add_argument("--spikes", type=int, help="idle/spike/idle cycles (default 3)")
    parser.add_argument("--ramp", type=float, help="seconds of the ramp up, and down (10)")
    parser.add_argument("--hold-ms", type=float, default=5.0, help="pg_sleep per query (5)")
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(LINEUP)} (in this order)"
    )
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG of run 1")
    parser.add_argument("--json", type=Path, help="also write the summaries and histories here")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave CPU placement to the scheduler (default: a local server on its own CPUs)",
    )
    parser.add_argument(
        "--twin",
        action="store_true",
        help="add a second fixed-50 pool: its p99 against fixed-50's is the noise floor",
    )
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.spikes = args.spikes if args.spikes is not None else (1 if args.quick else 3)
    args.ramp = args.ramp if args.ramp is not None else (5.0 if args.quick else 10.0)
    default = [k for k in LINEUP if args.twin or k != "fixed-max-twin"]
    args.only = args.only.split(",") if args.only else default
    if unknown := set(args.only) - set(LINEUP):
        parser.error(f"unknown contender(s) {sorted(unknown)}; choose from {', '.join(LINEUP)}")
    if args.runs < 1 or args.spikes < 1 or args.ramp <= 0 or args.hold_ms < 0:
        parser.error("--runs and --spikes must be >= 1, --ramp > 0, --hold-ms >= 0")
    if not args.pg_dsn:
        parser.error("no PostgreSQL DSN: pass --pg-dsn or set KN_PG_DSN (source /tmp/dbenv.sh)")
    return args


async def _main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    command = shlex.join([sys.executable, *sys.argv])
    print("command: " + command)
    print("\n".join(machine_facts(PACKAGES)))
    schedule = make_schedule(args.spikes, args.ramp)
    query = f"SELECT pg_sleep({args.hold_ms / 1000:g})"
    import asyncpg

    conn = await asyncpg.connect(args.pg_dsn)
    try:
        server = await conn.fetchval("SHOW server_version")
        limit = await conn.fetchval("SHOW max_connections")
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        postmaster = postmaster_of(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()
    print(f"PostgreSQL {server}, max_connections={limit}, {others} client backends open now")
    print(
        f"schedule ({schedule.duration:g} s): "
        + " → ".join(f"{p.label} {p.duration:g}s@{p.start}..{p.end}" for p in schedule.phases)
    )
    print(f"each caller: acquire → {query!r} → release, no think time")
    keys = [k for k in LINEUP if k in args.only]
    if missing := _kailash_missing():
        keys = [k for k in keys if k != "kailash"]
        print(f"  kailash adaptive pool skipped (not importable: {missing[:100]})")
    for k in keys:
        print(f"  {LINEUP[k].name}: {LINEUP[k].note}")
    print(
        f"reaction per spike: 'grow' = until the pool holds ≥ {GROW_SHARE:.0%} of the most "
        f"connections it reaches in the spike (server-side, 50 ms samples); 'react' = until the "
        f"first of {SETTLE_RUN} consecutive 100 ms buckets whose p95 acquire wait (by acquire "
        f"start) is < {SETTLE_WAIT * 1000:g} ms; 'never' if neither happens in the spike"
    )
    with separate_cpus([postmaster], args.pin) as placement:
        print(placement)
        first, done, report = await _runs(args, keys, schedule, query)
    if len(done) > 1:
        print(
            f"\nacceptance over all {len(done)} runs (every acquire of every run; one run's "
            "p99 sits where ~1% of acquires were\ndelayed by the machine — preemption, "
            "interrupts — and moves by a few µs between runs):"
        )
        print("\n".join(acceptance(pooled(done))))
    if first:
        try:
            plot(args.plot, first, schedule, 1)
            print(f"\nplot (run 1): {args.plot}")
        except Exception as exc:
            print(f"\nplot failed: {describe(exc)}")
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "runs": report}, indent=2))
    print(f"total time: {time.perf_counter() - started:.0f} s")
    print(f"reproduce: source /tmp/dbenv.sh && {command}")
    return 0


async def _runs(
    args: argparse.Namespace, keys: list[str], schedule: Schedule, query: str
) -> tuple[list[Trace], list[tuple[list[Trace], dict[str, Summary]]], list[dict[str, Any]]]:
    """Run the schedule ``args.runs`` times, printing each run's tables as it ends."""
    report: list[dict[str, Any]] = []
    first: list[Trace] = []
    done: list[tuple[list[Trace], dict[str, Summary]]] = []
    for run in range(1, args.runs + 1):
        order = describe_order(keys, run)
        print(f"\n--- run {run}: {order}", flush=True)
        tic = time.perf_counter()
        traces = await run_contenders(keys, args.pg_dsn, schedule, query, run)
        print(f"  {time.perf_counter() - tic:.0f} s", flush=True)
        sums = {t.key: summarise(t, schedule) for t in traces if t.starts or t.samples}
        print("\n" + format_tables(run, traces, sums, order))
        for trace in traces:
            if trace.history is not None:
                print(describe_history(trace))
        print(f"acceptance lines, run {run} alone (ours vs fixed pools of the same engine):")
        print("\n".join(acceptance(sums)))
        done.append((traces, sums))
        if run == 1:
            first = traces
        report.append(
            {
                "run": run,
                "order": order,
                "summaries": {k: _jsonable(dataclasses.asdict(s)) for k, s in sums.items()},
                "histories": {t.key: t.history for t in traces if t.history is not None},
                "errors": {t.key: t.error or t.last_error for t in traces},
            }
        )
    return first, done, report


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return {k: fix(v) for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(_parse_args())))
