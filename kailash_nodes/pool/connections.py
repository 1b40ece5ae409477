"""The connections of one pool, and everything done to them off the query path.

`ConnectionSet` opens connections (the floor at start, one per uncovered waiter, ahead of
a caller), retires them through one path (`retire`) that never blocks a caller, holds the
floor and the growth limit, and reports the state the stats and error messages show. Where
a usable connection goes is `Handoff`'s rule (handoff.py). The engine (engine.py) adds
checkout, execution and return on top, through the public names here only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable

from kailash_nodes.background import BackgroundTasks
from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import Driver, get_driver
from kailash_nodes.errors import ParameterError, PoolClosed, PoolTimeout
from kailash_nodes.pool.entry import Entry
from kailash_nodes.pool.handoff import Handoff
from kailash_nodes.pool.stats import PoolStats

__all__ = ["AFFINITY_DEPTH", "CLEANUP_TIMEOUT", "ConnectionSet"]

logger = logging.getLogger("kailash_nodes.pool")

_LIFETIME_JITTER = 0.1  # lifetimes spread over [90%, 100%] of max_lifetime
CLEANUP_TIMEOUT = 5.0
AFFINITY_DEPTH = 8  # idle connections acquire(prefer=...) searches for a prepared statement
_CONNECT_EWMA = 0.2  # weight of the newest connect in the recent connect time


class ConnectionSet:
    """The connections of one pool: open, idle, checked out, opening and closing.

    Public state the engine reads and updates on the query path (plain attributes, no
    call): ``idle`` (the hand-off's idle stack, the same list for the pool's life),
    ``active`` (checked-out count, kept by the engine), ``opened`` and ``closed``.
    """

    def __init__(self, config: PoolConfig, driver: Driver | None = None) -> None:
        self.config = config
        self.driver = driver or get_driver(config.connect.backend)
        self.stats = PoolStats()
        self.started_at = time.monotonic()
        self.handoff = Handoff(
            self.stats,
            self._close_unwanted,
            strict_fifo=config.strict_fifo,
            timed_out=self._timed_out,
        )
        self.idle = self.handoff.idle
        self.active = 0
        self.opened = False
        self.closed = False
        self.tasks = BackgroundTasks(f"{config.name}-pool")
        self._entries: set[Entry] = set()
        self._closing = 0  # retired, not yet closed: still count toward max_connections
        self._floor = config.min_connections
        self._limit = config.max_connections  # may be lowered live (the adaptive cap)
        self._statement_cache_size = config.statement_cache_size
        self._seq = 0

    # ------------------------------------------------------------------ opening

    async def connect(self) -> Entry:
        """Open one connection (within ``connect_timeout``) and return it, not yet added.

        Raises what the driver's connect raises (ConnectionFailed).
        """
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
        last, took = self.handoff.connect_time, now - began
        self.handoff.connect_time = took if last is None else last + _CONNECT_EWMA * (took - last)
        lifetime = cfg.max_lifetime
        deadline = (
            now + lifetime * (1.0 - random.random() * _LIFETIME_JITTER)
            if lifetime
            else float("inf")
        )
        return Entry(conn, f"{cfg.name}-c{self._seq}", now, deadline)

    def start(self, entries: Iterable[Entry]) -> None:
        """Take the connections opened at start as idle ones; the pool is open from now."""
        for entry in entries:
            self._entries.add(entry)
            self.idle.append(entry)
        self.opened = True
        self.started_at = time.monotonic()

    def _spawn_open(self) -> asyncio.Task[None]:
        self.handoff.opening += 1
        return self.tasks.spawn(self._open_one(), "open")

    async def _open_one(self) -> None:
        """Open a connection in the background and place it (handoff.py)."""
        handoff = self.handoff
        try:
            entry = await self.connect()
        except BaseException as exc:
            handoff.opening -= 1
            if not isinstance(exc, Exception):
                raise
            logger.warning("pool %s could not open a connection: %s", self.config.name, exc)
            handoff.open_failed(exc, busy=self.active)
            return
        handoff.opening -= 1
        if self.closed:
            self.retire(entry, "pool closed", replace=False)
            return
        self._entries.add(entry)
        handoff.put(entry)

    def has_room(self) -> bool:
        """Return whether one more connection may open now (closing ones still count)."""
        return len(self._entries) + self.handoff.opening + self._closing < self._limit

    def open_ahead(self) -> asyncio.Task[None] | None:
        """Open one more connection in the background for whoever asks next (a warm-up).

        Returns the pool-owned task (it hands the connection to the oldest waiter, else
        makes it idle), or None when the pool is closed or has no room.
        """
        if self.closed or not self.has_room():
            return None
        return self._spawn_open()

    def replenish(self) -> list[asyncio.Task[None]]:
        """Open connections up to the floor and for unserved waiters; return the tasks."""
        if self.closed:
            return []
        opening = self.handoff.opening
        live = len(self._entries) + opening  # connections closing do not serve
        wanted = max(self._floor - live, len(self.handoff.waiters) - opening)
        room = self._limit - live - self._closing
        return [self._spawn_open() for _ in range(max(0, min(wanted, room)))]

    # ------------------------------------------------------------------ retiring

    def retire(
        self, entry: Entry, reason: str, *, graceful: bool = True, replace: bool = True
    ) -> None:
        """Take ``entry`` out of the pool and close it, without blocking the caller.

        ``graceful=False`` drops it at once (broken, or its wire state is unknown).
        ``replace=True`` (counted in ``connections_recycled``) first opens what the pool
        then lacks (its floor, unserved waiters) and closes ``entry`` once that opened:
        the pool never dips below its floor, and an in-memory SQLite database, which lives
        only while a connection is open, survives. The closing connection counts toward
        ``max_connections`` until it is closed. ``replace=False``: just close (the pool is
        closing).
        """
        self._entries.discard(entry)
        self._closing += 1
        opening: list[asyncio.Task[None]] = []
        if replace:
            self.stats.connections_recycled += 1
            logger.log(
                logging.DEBUG if graceful else logging.INFO, "retiring %s: %s", entry.name, reason
            )
            opening = self.replenish()
        self.tasks.spawn(self._close_after(entry, opening, graceful), "close")

    def _close_unwanted(self, entry: Entry) -> None:
        self.retire(entry, "pool closed", replace=False)

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

    @property
    def closing(self) -> int:
        """Return how many retired connections are still closing."""
        return self._closing

    def shut(self) -> None:
        """Stop taking work: fail the waiters with PoolClosed, close the idle connections."""
        self.closed = True
        for entry in self.handoff.close(PoolClosed(f"pool {self.config.name!r} was closed")):
            self.retire(entry, "pool closed", replace=False)

    async def drop_all(self, wait: float) -> None:
        """Drop the connections still open (checked out past the drain), wait up to
        ``wait`` seconds for the closes under way, and cancel what still runs."""
        for entry in list(self._entries):
            entry.conn.terminate()
            self._entries.discard(entry)
        await self.tasks.wait_all(wait)
        await self.tasks.cancel_all()

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
        ``max_connections``. Raises ParameterError outside min..max, PoolClosed.
        """
        if self.closed:
            raise PoolClosed(f"pool {self.config.name!r} is closed")
        cfg = self.config
        if isinstance(size, bool) or not isinstance(size, int):
            raise ParameterError(f"new_size must be an integer (got {size!r})")
        if not cfg.min_connections <= size <= cfg.max_connections:
            raise ParameterError(
                f"new_size must be between {cfg.min_connections} and {cfg.max_connections} "
                f"(got new_size={size})"
            )
        before = len(self._entries) + self.handoff.opening + self._closing
        self._floor = size
        if not self.opened:  # open() will open the new floor
            return before
        surplus = len(self._entries) + self.handoff.opening - size
        while surplus > 0 and self.idle:
            self.retire(self.idle.pop(0), "resize")  # the coldest first
            surplus -= 1
        self.replenish()
        return before

    @property
    def statement_cache_size(self) -> int:
        """Return how many prepared statements each connection keeps."""
        return self._statement_cache_size

    def set_statement_cache_size(self, size: int) -> None:
        """Keep at most ``size`` prepared statements per connection (0: prepare nothing).

        Connections opened from now get ``size``. An open one whose driver cannot resize
        its cache (SQLite: sqlite3 fixes it at connect) has its lifetime ended: it is
        replaced through the lifetime path (at its next checkout or release, or by
        maintenance), the replacement opened before it closes.
        """
        self._statement_cache_size = size
        for entry in self._entries:
            if entry.conn.resize_statement_cache(size) is False:
                entry.deadline = 0.0

    # ------------------------------------------------------------------ state

    @property
    def connect_time(self) -> float | None:
        """Return the recent seconds per connect (an average), None before the first."""
        return self.handoff.connect_time

    def _timed_out(self, timeout: float) -> PoolTimeout:
        """Count an acquire that waited ``timeout`` s unserved; return its error."""
        self.stats.timeouts += 1
        return PoolTimeout(
            f"no connection available in pool {self.config.name!r} within {timeout:g}s "
            f"({self.describe_state()})"
        )

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
        return {
            "total_connections": len(self._entries),
            "active_connections": self.active,
            "idle_connections": len(self.idle),
            "waiting_requests": self.handoff.waiting(),
            "opening_connections": self.handoff.opening,
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
        return any(e.conn.has_statement(statement) for e in self.idle[-AFFINITY_DEPTH:])

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
        return self.idle

    def entries(self) -> set[Entry]:
        """Return every open connection (idle and checked out)."""
        return self._entries
