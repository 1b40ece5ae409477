"""The pool's connections: their state, opening, retiring and replacing, sizing, reporting.

`PoolCore` holds what the pool knows about its connections and changes it outside the
query path: background opening (handing each new connection to the oldest waiter),
retirement and replacement that never block a caller, the floor and the growth limit, and
the state the stats and error messages report. `ConnectionPool` (engine.py) adds checkout,
execution and return on top.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import Driver, get_driver
from kailash_nodes.errors import ConnectionFailed, ParameterError, PoolClosed
from kailash_nodes.pool.entry import Entry, PooledConnection
from kailash_nodes.pool.stats import PoolStats
from kailash_nodes.pool.tasks import TaskGroup

__all__ = ["AFFINITY_DEPTH", "CLEANUP_TIMEOUT", "PoolCore"]

logger = logging.getLogger("kailash_nodes.pool")

_LIFETIME_JITTER = 0.1  # lifetimes spread over [90%, 100%] of max_lifetime
CLEANUP_TIMEOUT = 5.0
AFFINITY_DEPTH = 8  # idle connections acquire(prefer=...) searches for a prepared statement
_CONNECT_EWMA = 0.2  # weight of the newest connect in the recent connect time
_OWN_OPEN_WAIT = 2.0  # a waiter waits for its own connection up to this × the connect time


class PoolCore:
    """The connections of one pool and everything done to them off the query path."""

    def __init__(self, config: PoolConfig, driver: Driver | None = None) -> None:
        self.config = config
        self.driver = driver or get_driver(config.connect.backend)
        self.stats = PoolStats()
        self.started_at = time.monotonic()
        self._style = self.driver.placeholder_style
        # PostgreSQL: a user function may set a role the server does not report (engine.py)
        self._routines_dirty = self._style == "numeric"
        self._idle: list[Entry] = []
        self._waiters: deque[asyncio.Future[Entry]] = deque()
        self._wait_since: dict[asyncio.Future[Entry], float] = {}  # when each waiter began
        self._late_check: asyncio.TimerHandle | None = None  # see _keep_for_next
        self.connect_time: float | None = None  # recent seconds per connect (EWMA)
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

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed(f"pool {self.config.name!r} is closed")

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

    def _put_back(self, entry: Entry) -> None:
        """Return a released connection: to the oldest waiter, or to the idle stack while
        the pool is opening a connection for every waiter (see `_keep_for_next`)."""
        if self._waiters and self._keep_for_next():
            self.stats.handoffs_deferred += 1
            self._idle.append(entry)
            self._check_late_waiters()
            return
        self._put(entry)

    def _check_late_waiters(self) -> None:
        """Hand kept idle connections to waiters that are late (their own connection took
        over twice the connect time) or no longer covered (an open failed): if nobody else
        takes them first, they must not sit idle while a waiter waits."""
        if self._late_check is not None:
            self._late_check.cancel()  # one pending check at a time (the oldest's due time)
            self._late_check = None
        while self._idle and self._waiters and not self._closed:
            due = self._own_open_due()
            if due is not None and time.monotonic() < due:  # covered and not late yet
                self._late_check = asyncio.get_running_loop().call_at(due, self._check_late_waiters)
                return
            self._put(self._idle.pop())

    def _keep_for_next(self) -> bool:
        """Return whether a released connection should go to the idle stack although
        callers are waiting: every waiter has a connection opening for it, and the oldest
        has waited less than twice the recent connect time.

        While the pool grows, handing each released connection to the oldest waiter makes
        every acquire wait: the caller that released it queues again behind the others.
        Kept for the next acquire instead, the callers holding connections keep going and
        only the callers the pool grows for wait, once each, for about one connect. A
        waiter whose connection is late (a slow or failing connect) gets the next released
        one; ``strict_fifo=True`` always hands over.
        """
        due = self._own_open_due()
        return due is not None and time.monotonic() < due

    def _own_open_due(self) -> float | None:
        """Return when the oldest waiter becomes late for its own connection: None when
        not every waiter has a connection opening, or with ``strict_fifo``."""
        waiters = self._waiters
        connect_time = self.connect_time
        if self.config.strict_fifo or connect_time is None or self._opening < len(waiters):
            return None
        since = self._wait_since.get(waiters[0])
        return None if since is None else since + _OWN_OPEN_WAIT * connect_time

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
            self._check_late_waiters()  # a kept idle connection goes to the uncovered waiter
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
        began = time.monotonic()
        try:
            conn = await self.driver.connect(cfg.connect, self._statement_cache_size)
        except Exception:
            self.stats.connections_failed += 1
            raise
        self.stats.connections_created += 1
        self._seq += 1
        now = time.monotonic()
        last = self.connect_time
        took = now - began
        self.connect_time = took if last is None else last + _CONNECT_EWMA * (took - last)
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
                await entry.conn.close(CLEANUP_TIMEOUT)
            else:
                entry.conn.terminate()
        except BaseException:
            # Cancelled (the pool is closing) while waiting for the replacement: the entry
            # is no longer among the pool's, so nothing else would ever close it.
            entry.conn.terminate()
            raise
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

    def open_ahead(self) -> asyncio.Task[None] | None:
        """Open one more connection in the background for whoever asks next (a warm-up).

        Returns the pool-owned task (it hands the connection to the oldest waiter, else
        makes it idle), or None when the pool is closed or has no room.
        """
        if self._closed or not self.has_room():
            return None
        return self._spawn_open()

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
        await entry.conn.close(CLEANUP_TIMEOUT)
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

    def idle_holds(self, statement: str) -> bool:
        """Return whether one of the idle connections ``acquire(prefer=statement)`` looks
        through (the most recently used few) has ``statement`` prepared."""
        return any(e.conn.has_statement(statement) for e in self._idle[-AFFINITY_DEPTH:])

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        """Drop these prepared statements (all when None) on every open connection;
        return how many were cached."""
        return sum(e.conn.forget_statements(texts) for e in self._entries)

    def cached_statements(self) -> int:
        """Return how many statements are prepared on all open connections together."""
        return sum(e.conn.cached_statements() for e in self._entries)

    def prepares_on_server(self) -> bool:
        """Return whether an open connection prepares statements on the server (False
        behind a transaction-pooling proxy, or when the backend cannot)."""
        return any(e.conn.server_prepare for e in self._entries)

    def idle_entries(self) -> list[Entry]:
        """Return the idle stack (coldest first); maintenance may pop from it."""
        return self._idle

    def entries(self) -> set[Entry]:
        """Return every open connection (idle and checked out)."""
        return self._entries
