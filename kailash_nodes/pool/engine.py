"""The pool engine: checkout, execution, return, growth and replacement of connections.

Idle connections are a LIFO stack (the warmest is reused first, the coldest ages out); a
released connection goes straight to the oldest waiter (FIFO), so a woken waiter cannot lose
it to a caller that arrived later. New connections are opened by owned background tasks and
handed to waiters as they arrive: nobody waits for a connection they did not ask for.

The event loop is single-threaded: every decision below happens between two awaits, so no
lock is needed; each ``await`` is a point where the state may have changed, and the code says
what it re-checks there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import FETCH_MODES, Driver, get_driver
from kailash_nodes.errors import (
    ConnectionFailed,
    ParameterError,
    PoolClosed,
    PoolTimeout,
    QueryError,
    TooManyRequests,
)
from kailash_nodes.pool.entry import MAX_HEALTH, Entry, PooledConnection
from kailash_nodes.pool.stats import PoolStats
from kailash_nodes.pool.tasks import TaskGroup
from kailash_nodes.sql import bind, rewrite

__all__ = ["ConnectionPool", "QueryResult"]

logger = logging.getLogger("kailash_nodes.pool")

_LIFETIME_JITTER = 0.1  # lifetimes spread over [90%, 100%] of max_lifetime
_HEALTH_SUCCESS = 1.0
_HEALTH_QUERY_ERROR = 10.0
_HEALTH_TIMEOUT = 25.0
_CLEANUP_TIMEOUT = 5.0
_AFFINITY_DEPTH = 8  # idle connections searched for one holding a prepared statement


class QueryResult:
    """What one statement returned: rows (shaped by fetch mode), row count, duration."""

    __slots__ = ("data", "duration", "row_count")

    def __init__(self, data: Any, row_count: int, duration: float) -> None:
        self.data = data
        self.row_count = row_count
        self.duration = duration


class ConnectionPool:
    """An asyncio connection pool over one database.

    Create it, ``await open()``, then ``acquire``/``execute``/``release`` (or
    ``async with pool.connection()``), and ``await close()`` at the end.
    """

    def __init__(self, config: PoolConfig, driver: Driver | None = None) -> None:
        self.config = config
        self.driver = driver or get_driver(config.connect.backend)
        self.stats = PoolStats()
        self.started_at = time.monotonic()
        self._style = self.driver.placeholder_style
        self._idle: list[Entry] = []
        self._waiters: deque[asyncio.Future[Entry]] = deque()
        self._entries: set[Entry] = set()
        self._opening = 0
        self._closing = 0  # retired or discarded, not yet closed: still count toward max
        self._active = 0
        self._floor = config.min_connections
        self._limit = config.max_connections  # may be lowered live (the adaptive cap)
        self._statement_cache_size = config.statement_cache_size
        self._seq = 0
        self._lease_seq = 0
        self._opened = False
        self._closed = False
        self._tasks = TaskGroup(f"{config.name}-pool")
        self._maintenance: asyncio.Task[None] | None = None
        self._open_error: BaseException | None = None
        # Called after every statement (query, seconds, rows, success, handle) when set:
        # the pool node's pattern tracking hooks in here.
        self.observer: Callable[[str, float, int, bool, PooledConnection], None] | None = None
        self._open_lock = asyncio.Lock()
        self._drained = asyncio.Event()  # set when the pool is closed and nothing is checked out

    # ------------------------------------------------------------------ lifecycle

    @property
    def opened(self) -> bool:
        """Return whether ``open()`` has completed."""
        return self._opened

    @property
    def closed(self) -> bool:
        """Return whether ``close()`` was called."""
        return self._closed

    async def open(self) -> None:
        """Open ``min_connections`` in parallel and start maintenance.

        Raises ConnectionFailed (with the driver's error as cause) when the database cannot
        be reached; nothing is left open then. Calling it again is a no-op.
        """
        self._check_open()
        async with self._open_lock:  # concurrent first acquires open the pool once
            if not self._opened:
                await self._open_floor()

    async def _open_floor(self) -> None:
        results = await asyncio.gather(
            *(self._connect() for _ in range(self._floor)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        entries = [r for r in results if isinstance(r, Entry)]
        if failures:
            for entry in entries:
                entry.conn.terminate()
            raise failures[0]
        for entry in entries:
            self._entries.add(entry)
            self._idle.append(entry)
        self._opened = True
        self.started_at = time.monotonic()
        from kailash_nodes.pool.maintenance import run_maintenance

        self._maintenance = self._tasks.spawn(run_maintenance(self), "maintenance")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking work, wait up to ``timeout`` for checked-out connections, close all.

        Waiters fail with PoolClosed at once; connections still checked out after
        ``timeout`` are terminated. Calling it again is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(PoolClosed(f"pool {self.config.name!r} was closed"))
        if self._maintenance is not None:
            self._maintenance.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._close_entry(e) for e in idle))
        if self._active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        for entry in list(self._entries):
            entry.conn.terminate()
            self._entries.discard(entry)
        await self._tasks.wait_all(_CLEANUP_TIMEOUT)  # connection closes already under way
        await self._tasks.cancel_all()

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed(f"pool {self.config.name!r} is closed")

    # ------------------------------------------------------------------ checkout

    async def acquire(
        self, timeout: float | None = None, *, prefer: str | None = None
    ) -> PooledConnection:
        """Check out a connection, waiting up to ``timeout`` (default: the pool's).

        ``prefer`` names a (rewritten) statement: among the few most recently used idle
        connections, one that already has it prepared is taken first.
        Raises PoolClosed, TooManyRequests (waiting queue full), PoolTimeout (the message
        shows the pool's state), or ConnectionFailed when no connection can be opened.
        """
        if self._closed:
            raise PoolClosed(f"pool {self.config.name!r} is closed")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ParameterError(f"timeout must be a number of seconds > 0 (got {timeout!r})")
        if not self._opened:
            await self.open()
        start = time.monotonic()
        idle = self._idle
        if prefer is not None and idle and not idle[-1].conn.has_statement(prefer):
            self._bring_up(prefer)
        while idle:
            entry = idle.pop()
            if entry.conn.is_closed():  # the driver saw the socket close while it was idle
                self._discard(entry, "closed while idle")
                continue
            if start >= entry.deadline:
                self.retire(entry, "lifetime")
                continue
            if (
                entry.suspect or start - entry.last_used > self.config.check_idle_after
            ) and not await self._validate(entry):
                continue
            return self._lease(entry, start)
        return await self._wait(start, self.config.timeout if timeout is None else timeout)

    def _bring_up(self, statement: str) -> None:
        """Move an idle connection holding ``statement`` to the top (looks 8 deep, no more)."""
        idle = self._idle
        for i in range(len(idle) - 2, max(-1, len(idle) - 1 - _AFFINITY_DEPTH), -1):
            if idle[i].conn.has_statement(statement):
                idle.append(idle.pop(i))
                self.stats.affinity_picks += 1
                return

    async def _validate(self, entry: Entry) -> bool:
        """Ping a connection that sat idle past the window; discard it if dead."""
        self.stats.checks_performed += 1
        try:
            await entry.conn.ping(min(self.config.timeout, _CLEANUP_TIMEOUT))
        except ConnectionFailed:
            self.stats.checks_failed += 1
            self._discard(entry, "failed check")
            return False
        except BaseException:  # cancelled mid-check: the state is unknown, drop it
            self._discard(entry, "check interrupted")
            raise
        entry.suspect = False
        entry.credit(_HEALTH_SUCCESS)
        return True

    async def _wait(self, start: float, timeout: float) -> PooledConnection:
        max_waiting = self.config.max_waiting
        if max_waiting and len(self._waiters) >= max_waiting:
            self.stats.requests_rejected += 1
            raise TooManyRequests(
                f"pool {self.config.name!r} has {len(self._waiters)} callers waiting "
                f"(max_waiting={max_waiting}); {self.describe_state()}"
            )
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._opening < len(self._waiters) and self._size() < self._limit:
            self._spawn_open()
        try:
            async with asyncio.timeout(timeout):
                entry = await fut
        except TimeoutError:
            self._abandon(fut)
            self.stats.timeouts += 1
            raise PoolTimeout(
                f"no connection available in pool {self.config.name!r} within {timeout:g}s "
                f"({self.describe_state()})"
            ) from None
        except BaseException:
            self._abandon(fut)  # cancelled after a hand-over: give the connection back
            raise
        return self._lease(entry, start)

    def _abandon(self, fut: asyncio.Future[Entry]) -> None:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self._put(fut.result())
            return
        with contextlib.suppress(ValueError):  # already handed out or failed
            self._waiters.remove(fut)

    def _lease(self, entry: Entry, start: float) -> PooledConnection:
        now = time.monotonic()
        self._lease_seq += 1
        self._active += 1
        stats = self.stats
        stats.acquires += 1
        stats.acquire_wait.add(now - start)
        entry.leased = True
        return PooledConnection(entry, f"{entry.name}#{self._lease_seq}", self, now, now - start)

    def _put(self, entry: Entry) -> None:
        """Hand a usable connection to the oldest live waiter, else make it idle."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(entry)
                return
        if self._closed:
            self._tasks.spawn(self._close_entry(entry), "close")
            return
        self._idle.append(entry)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[PooledConnection]:
        """Check out a connection for the ``async with`` block; it is released on exit."""
        pc = await self.acquire(timeout)
        try:
            yield pc
        finally:
            await self.release(pc)

    # ------------------------------------------------------------------ execution

    async def execute(
        self,
        pc: PooledConnection,
        query: str,
        params: Any = None,
        *,
        fetch_mode: str = "all",
        fetch_size: int = 100,
        observe: bool = True,
    ) -> QueryResult:
        """Run one statement (or a parameterless multi-statement string) on ``pc``.

        Placeholders ``?``, ``$1``, ``%s`` and ``:name`` are all accepted. Raises
        ``observe=False`` keeps the library's own bookkeeping statements out of pattern
        learning. Raises ParameterError (bad parameters or fetch mode), QueryError (the
        database rejected
        the statement; the connection stays usable), ConnectionFailed (the connection
        broke; it is replaced on release), ConnectionReleased or PoolClosed.
        """
        entry = pc.entry
        if not isinstance(query, str):
            raise ParameterError(f"query must be a string (got {type(query).__name__})")
        if fetch_mode != "all" and fetch_mode not in FETCH_MODES:
            raise ParameterError(f"fetch_mode must be one of {FETCH_MODES} (got {fetch_mode!r})")
        rq = rewrite(query, self._style)
        args = bind(rq, params)
        if rq.statements != 1:
            if rq.statements == 0:
                raise ParameterError("query is empty")
            if args:
                raise ParameterError("parameters cannot be used with a multi-statement query")
        if rq.session_state:
            entry.dirty = True
        conn = entry.conn
        start = time.monotonic()
        try:
            if rq.statements > 1:
                data, count = await conn.execute_script(rq.text, self.config.query_timeout)
            else:
                data, count = await conn.fetch(
                    rq.text, args, fetch_mode, fetch_size, self.config.query_timeout
                )
        except QueryError as exc:
            self._record_failure(entry, exc)
            if self.observer is not None and observe:
                self.observer(query, time.monotonic() - start, 0, False, pc)
            raise
        except ConnectionFailed:
            self.stats.queries_executed += 1
            self.stats.query_errors += 1
            entry.broken = True
            self._suspect_idle()
            raise
        except ParameterError:
            raise
        except BaseException:  # cancelled mid-statement: the wire state is unknown
            entry.broken = True
            raise
        duration = time.monotonic() - start
        stats = self.stats
        stats.queries_executed += 1
        stats.query_time.add(duration)
        entry.queries += 1
        if entry.health < MAX_HEALTH:  # the common case (full health) skips the call
            entry.credit(_HEALTH_SUCCESS)
        if self.observer is not None and observe:
            self.observer(query, duration, count, True, pc)
        return QueryResult(data, count, duration)

    def _suspect_idle(self) -> None:
        """After a lost connection (server restart?), check idle ones before lending them."""
        for entry in self._idle:
            entry.suspect = True

    def _record_failure(self, entry: Entry, exc: QueryError) -> None:
        self.stats.queries_executed += 1
        self.stats.query_errors += 1
        entry.debit(_HEALTH_TIMEOUT if exc.error_type == "QueryTimeout" else _HEALTH_QUERY_ERROR)
        if entry.conn.is_closed():
            entry.broken = True

    # ------------------------------------------------------------------ return

    async def release(self, pc: PooledConnection) -> str:
        """Return a connection; answer "released", or "recycled" if it was replaced.

        A clean connection is back in the pool before this returns, with no round trip.
        An open transaction is rolled back and dirty session state reset first; that work
        is shielded, so a caller cancelled here still never leaks the connection.
        Raises ConnectionReleased if ``pc`` was already released.
        """
        entry = pc.detach()
        entry.leased = False
        self._active -= 1
        now = entry.last_used = time.monotonic()
        self.stats.hold_time.add(now - pc.acquired_at)
        if self._closed and not self._active:
            self._drained.set()
        conn = entry.conn
        if entry.broken or conn.is_closed():
            self._discard(entry, "broken")
            return "recycled"
        if entry.health < self.config.health_threshold:
            self.retire(entry, f"health {entry.health:.0f} below threshold")
            return "recycled"
        if entry.dirty or conn.in_transaction():
            task = self._tasks.spawn(self._clean(entry), "release-cleanup")
            return await asyncio.shield(task)
        if entry.last_used >= entry.deadline or self._closed:
            self.retire(entry, "lifetime" if not self._closed else "pool closed")
            return "recycled"
        self._put(entry)
        return "released"

    async def _clean(self, entry: Entry) -> str:
        """Roll back and reset a connection before it goes back; replace it on failure."""
        conn = entry.conn
        try:
            if entry.dirty:
                self.stats.resets += 1
                if not await conn.reset(_CLEANUP_TIMEOUT):
                    self.retire(entry, "session state cannot be reset")
                    return "recycled"
            else:
                self.stats.rollbacks += 1
                await conn.rollback(_CLEANUP_TIMEOUT)
        except Exception as exc:
            logger.warning("cleanup of %s failed, replacing it: %s", entry.name, exc)
            self._discard(entry, "cleanup failed")
            return "recycled"
        entry.dirty = False
        if self._closed:
            self.retire(entry, "pool closed")
            return "recycled"
        self._put(entry)
        return "released"

    # ------------------------------------------------------------------ growth and replacement

    def _size(self) -> int:
        return len(self._entries) + self._opening + self._closing

    def _spawn_open(self) -> asyncio.Task[None]:
        self._opening += 1
        return self._tasks.spawn(self._open_one(), "open")

    async def _open_one(self) -> None:
        """Open a connection in the background and hand it to a waiter (or make it idle)."""
        try:
            entry = await self._connect()
        except Exception as exc:
            self._opening -= 1
            self._open_failed(exc)
            return
        except BaseException:
            self._opening -= 1
            raise
        self._opening -= 1
        if self._closed:
            await self._close_entry(entry)
            return
        self._entries.add(entry)
        self._put(entry)

    def _open_failed(self, exc: BaseException) -> None:
        """Fail the waiters at once when nothing else could ever serve them."""
        logger.warning("pool %s could not open a connection: %s", self.config.name, exc)
        self._open_error = exc
        if self._active or self._opening or self._idle:
            return
        error = exc if isinstance(exc, ConnectionFailed) else ConnectionFailed(str(exc))
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(error)

    async def _connect(self) -> Entry:
        cfg = self.config
        try:
            conn = await self.driver.connect(cfg.connect, self._statement_cache_size)
        except Exception:
            self.stats.connections_failed += 1
            raise
        self.stats.connections_created += 1
        self._seq += 1
        now = time.monotonic()
        lifetime = cfg.max_lifetime
        deadline = (
            now + lifetime * (1.0 - random.random() * _LIFETIME_JITTER)
            if lifetime
            else float("inf")
        )
        return Entry(conn, f"{cfg.name}-c{self._seq}", now, deadline)

    def retire(self, entry: Entry, reason: str) -> None:
        """Replace a healthy-but-unwanted connection without blocking the caller.

        The replacement is opened first and the old connection closed after it, so the
        pool never dips below its floor (and an in-memory SQLite database, which lives
        only while a connection is open, survives).
        """
        self.stats.connections_recycled += 1
        logger.debug("retiring %s: %s", entry.name, reason)
        self._replace(entry, graceful=True)

    def _replace(self, entry: Entry, *, graceful: bool) -> None:
        """Take ``entry`` out; close it after its replacement opened when there is room.

        The closing connection still counts toward ``max_connections`` until it is closed,
        so the pool never exceeds it; below the maximum the replacement opens first, so the
        pool does not dip below its floor (and an in-memory SQLite database, which lives only
        while a connection is open, survives).
        """
        self._entries.discard(entry)
        self._closing += 1
        opening = self.replenish()
        self._tasks.spawn(self._close_after(entry, opening, graceful), "close")

    async def _close_after(
        self, entry: Entry, opening: list[asyncio.Task[None]], graceful: bool
    ) -> None:
        try:
            if opening:
                await asyncio.wait(opening, timeout=self.config.connect.connect_timeout)
            if graceful:
                await entry.conn.close(_CLEANUP_TIMEOUT)
            else:
                entry.conn.terminate()
        finally:
            self._closing -= 1
            self.stats.connections_closed += 1
        self.replenish()

    def _discard(self, entry: Entry, reason: str) -> None:
        """Drop a broken connection at once and open a replacement if one is needed."""
        self.stats.connections_recycled += 1
        logger.info("discarding %s: %s", entry.name, reason)
        self._replace(entry, graceful=False)

    @property
    def closing(self) -> int:
        """Return how many retired connections are still closing."""
        return self._closing

    def has_room(self) -> bool:
        """Return whether one more connection may open now (closing ones still count)."""
        return self._size() < self._limit

    def replenish(self) -> list[asyncio.Task[None]]:
        """Open connections up to the floor and for unserved waiters; return the tasks."""
        if self._closed:
            return []
        live = len(self._entries) + self._opening  # connections closing do not serve
        wanted = max(self._floor - live, len(self._waiters) - self._opening)
        room = self._limit - live - self._closing
        return [self._spawn_open() for _ in range(max(0, min(wanted, room)))]

    async def _close_entry(self, entry: Entry) -> None:
        self._entries.discard(entry)
        await entry.conn.close(_CLEANUP_TIMEOUT)
        self.stats.connections_closed += 1

    # ------------------------------------------------------------------ sizing

    @property
    def limit(self) -> int:
        """Return the most connections the pool may open now (<= max_connections)."""
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Cap growth at ``limit`` (clamped to min..max_connections); never closes busy ones."""
        cfg = self.config
        self._limit = max(cfg.min_connections, 1, min(limit, cfg.max_connections))
        if self._floor > self._limit:
            self.resize(max(cfg.min_connections, self._limit))

    @property
    def floor(self) -> int:
        """Return the number of connections kept open when idle (min..max)."""
        return self._floor

    def resize(self, size: int) -> int:
        """Keep ``size`` connections open from now on; return the size before.

        Grows at once in the background; idle connections above ``size`` are closed at
        once, busy ones are not interrupted. Demand may still grow the pool to
        ``max_connections``. Raises ParameterError outside min..max.
        """
        self._check_open()
        cfg = self.config
        if isinstance(size, bool) or not isinstance(size, int):
            raise ParameterError(f"new_size must be an integer (got {size!r})")
        if not cfg.min_connections <= size <= cfg.max_connections:
            raise ParameterError(
                f"new_size must be between {cfg.min_connections} and {cfg.max_connections} "
                f"(got new_size={size})"
            )
        before = self._size()
        self._floor = size
        if not self._opened:  # open() will open the new floor
            return before
        surplus = len(self._entries) + self._opening - size
        while surplus > 0 and self._idle:
            self.retire_idle(self._idle.pop(0), "resize")  # the coldest first
            surplus -= 1
        self.replenish()
        return before

    def retire_idle(self, entry: Entry, reason: str) -> None:
        """Close an idle connection the pool no longer wants (idle too long, resize)."""
        self.stats.connections_recycled += 1
        logger.debug("closing idle %s: %s", entry.name, reason)
        self._replace(entry, graceful=True)

    @property
    def statement_cache_size(self) -> int:
        """Return how many prepared statements each connection keeps."""
        return self._statement_cache_size

    def set_statement_cache_size(self, size: int) -> None:
        """Keep at most ``size`` prepared statements per connection (0: prepare nothing)."""
        self._statement_cache_size = size
        for entry in self._entries:
            entry.conn.resize_statement_cache(size)

    # ------------------------------------------------------------------ state

    def describe_state(self) -> str:
        """Return the pool's state in one line, for error messages."""
        s = self.state()
        return (
            f"total={s['total_connections']}, active={s['active_connections']}, "
            f"idle={s['idle_connections']}, waiting={s['waiting_requests']}, "
            f"opening={s['opening_connections']}, max={self.config.max_connections}"
        )

    def state(self) -> dict[str, int]:
        """Return the current counts of connections and waiters."""
        waiting = sum(1 for f in self._waiters if not f.done())
        return {
            "total_connections": len(self._entries),
            "active_connections": self._active,
            "idle_connections": len(self._idle),
            "waiting_requests": waiting,
            "opening_connections": self._opening,
            "min_connections": self.config.min_connections,
            "max_connections": self.config.max_connections,
            "target_size": self._floor,
        }

    def health_scores(self) -> dict[str, float]:
        """Return the health score of every open connection."""
        return {e.name: round(e.health, 1) for e in sorted(self._entries, key=lambda e: e.name)}

    def idle_entries(self) -> list[Entry]:
        """Return the idle stack (coldest first); maintenance may pop from it."""
        return self._idle

    def entries(self) -> set[Entry]:
        """Return every open connection (idle and checked out)."""
        return self._entries
