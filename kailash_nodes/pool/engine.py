"""The pool engine: checkout, execution and return, on top of the connection set.

Idle connections are a LIFO stack (the warmest is reused first, the coldest ages out); a
released connection goes straight to the oldest waiter (FIFO), so a woken waiter cannot lose
it to a caller that arrived later, except while the pool opens a connection for every
waiter (handoff.py states the rule). New connections are opened by owned background tasks
and handed to waiters as they arrive: nobody waits for a connection they did not ask for
(connections.py). This module uses only the public names of `ConnectionSet`.

The event loop is single-threaded: every decision below happens between two awaits, so no
lock is needed; each ``await`` is a point where the state may have changed, and the code says
what it re-checks there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from kailash_nodes.background import Periodic
from kailash_nodes.config import PoolConfig, check_number
from kailash_nodes.drivers import FETCH_MODES, Driver, DriverConnection, Rows
from kailash_nodes.errors import (
    ConnectionFailed,
    ConnectionReleased,
    ParameterError,
    PoolClosed,
    PoolTimeout,
    QueryError,
    TooManyRequests,
    UnsupportedStatement,
)
from kailash_nodes.pool.connections import AFFINITY_DEPTH, CLEANUP_TIMEOUT, ConnectionSet
from kailash_nodes.pool.entry import MAX_HEALTH, Entry, PooledConnection
from kailash_nodes.pool.maintenance import maintenance
from kailash_nodes.pool.stats import connection_status, flat_statistics
from kailash_nodes.pool.stream import ResultStream
from kailash_nodes.sql import (
    RewrittenQuery,
    bind,
    calls_routines,
    lost_in_flight,
    rewrite,
    timed_out,
)

__all__ = ["ConnectionPool", "QueryResult"]

logger = logging.getLogger("kailash_nodes.pool")

_HEALTH_SUCCESS = 1.0
_HEALTH_QUERY_ERROR = 10.0
_HEALTH_TIMEOUT = 25.0
_REWRITES_KEPT = 4096  # statement texts whose rewrite a pool keeps at hand


def _terminate_opened(task: asyncio.Task[Entry]) -> None:
    """Close the connection an abandoned open produced (nothing if it failed)."""
    if not task.cancelled() and task.exception() is None:
        task.result().conn.terminate()


def _running(pc: PooledConnection) -> ParameterError:
    """Return the error for a second statement sent while one runs on ``pc``: on the same
    wire it would interleave with the first (MySQL then hands one caller's rows to the
    next), so it is refused before anything is sent."""
    return ParameterError(
        f"connection {pc.id!r} is already running a statement: await it before "
        "sending the next one, or acquire another connection"
    )


class QueryResult:
    """What one statement returned: rows (shaped by fetch mode), row count, duration."""

    __slots__ = ("data", "duration", "row_count")

    def __init__(self, data: Any, row_count: int, duration: float) -> None:
        self.data = data
        self.row_count = row_count
        self.duration = duration


class ConnectionPool(ConnectionSet):
    """An asyncio connection pool over one database.

    Create it, ``await open()``, then ``acquire``/``execute``/``release`` (or
    ``async with pool.connection()``), and ``await close()`` at the end. The connection
    bookkeeping (growth, retirement, sizing, state) is inherited from `ConnectionSet`.
    """

    def __init__(self, config: PoolConfig, driver: Driver | None = None) -> None:
        super().__init__(config, driver)
        self.style = self.driver.placeholder_style  # the placeholders its driver takes
        # A user function may set a role the server does not report (execute)
        self.routines_dirty = self.driver.routines_change_session
        # The settings read on every acquire/execute/release, as plain attributes: a read
        # of a pydantic model's field costs ~3x a plain attribute's (BaseModel defines
        # __getattr__, which takes attribute reads off CPython's fast path).
        cfg = self.config
        self.acquire_timeout = cfg.timeout
        self._max_waiting = cfg.max_waiting
        self._check_idle_after = cfg.check_idle_after
        self.query_timeout = cfg.query_timeout
        self.max_rows = cfg.max_rows
        self._health_threshold = cfg.health_threshold
        # The hand-off's bound method, looked up once: release calls it on every return.
        self._put_back: Callable[[Entry], None] = self.handoff.put_back
        self.lease_seq = 0  # checkouts so far: the number in each lease id
        self._rewrites: dict[str, RewrittenQuery] = {}  # query -> rewrite(query, self.style)
        self._maintenance: Periodic | None = None
        # Called after every statement (query, seconds, rows, success, handle) when set:
        # the pool node's pattern tracking hooks in here.
        self.observer: Callable[[str, float, int, bool, PooledConnection], None] | None = None
        self._open_lock = asyncio.Lock()
        self._drained = asyncio.Event()  # set when the pool is closed and nothing is checked out

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open ``min_connections`` in parallel and start maintenance.

        Raises ConnectionFailed (with the driver's error as cause) when the database cannot
        be reached; nothing is left open then. Calling it again is a no-op.
        """
        if self.closed:
            raise PoolClosed(f"pool {self.config.name!r} is closed")
        async with self._open_lock:  # concurrent first acquires open the pool once
            if not self.opened:
                await self._open_floor()

    async def _open_floor(self) -> None:
        opens = [asyncio.ensure_future(self.connect()) for _ in range(self.floor)]
        try:
            if opens:  # min_connections=0 opens nothing
                await asyncio.wait(opens)
        except BaseException:  # cancelled: what opened, or opens after this, is closed
            for task in opens:
                task.add_done_callback(_terminate_opened)
                task.cancel()
            raise
        results = [t.exception() or t.result() for t in opens]
        failures = [r for r in results if isinstance(r, BaseException)]
        entries = [r for r in results if isinstance(r, Entry)]
        if failures:
            for entry in entries:
                entry.conn.terminate()
            raise failures[0]
        self.start(entries)
        self._maintenance = maintenance(self)
        self._maintenance.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking work, wait up to ``timeout`` for checked-out connections, close all.

        Waiters fail with PoolClosed at once; connections still checked out after
        ``timeout`` are terminated. Calling it again is a no-op.
        """
        if self.closed:
            return
        self.shut()
        if self._maintenance is not None:
            await self._maintenance.stop()
        if self.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        await self.drop_all(CLEANUP_TIMEOUT)  # closes under way (replacements included)
        await self.driver.drain(CLEANUP_TIMEOUT)  # terminated connections let go of the loop

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
        if self.closed:
            raise PoolClosed(f"pool {self.config.name!r} is closed")
        if timeout is not None:  # NaN or infinity would wait forever
            check_number("timeout", timeout, low=0, strict=True, error=ParameterError)
        if not self.opened:
            await self.open()
        start = time.monotonic()
        idle = self.idle
        if prefer is not None:
            self._bring_up(prefer)
        while idle:
            entry = idle.pop()
            if entry.conn.is_closed():  # the driver saw the socket close while it was idle
                self.retire(entry, "closed while idle", graceful=False)
                continue
            if start >= entry.deadline:
                self.retire(entry, "lifetime")
                continue
            if (
                entry.suspect or start - entry.last_used > self._check_idle_after
            ) and not await self._validate(entry):
                continue
            return self._lease(entry, start)
        timeout = self.acquire_timeout if timeout is None else timeout
        return self._lease(await self.wait_entry(start, timeout), start)

    def _bring_up(self, statement: str) -> None:
        """Unless the top idle connection holds ``statement``, move one that does to the
        top (looks 8 deep, no more)."""
        idle = self.idle
        if not idle or idle[-1].conn.has_statement(statement):
            return
        for i in range(len(idle) - 2, max(-1, len(idle) - 1 - AFFINITY_DEPTH), -1):
            if idle[i].conn.has_statement(statement):
                idle.append(idle.pop(i))
                self.stats.affinity_picks += 1
                return

    def take_ready(self, prefer: str | None, now: float) -> Entry | None:
        """Check out the idle connection `acquire` would lend at ``now`` when it needs
        nothing first (no check, no retirement, no wait, no opening); else None, and
        nothing changed but the idle order. Counted as a checkout; give it back with
        `checkin`. For `run_once` (the hot path): everything else goes through `acquire`.
        """
        idle = self.idle
        if not idle or self.closed:
            return None
        entry = idle[-1]
        if prefer is not None and not entry.conn.has_statement(prefer):  # else: nothing to move
            self._bring_up(prefer)
            entry = idle[-1]
        if (
            entry.suspect
            or now - entry.last_used > self._check_idle_after
            or now >= entry.deadline
            or entry.conn.is_closed()
        ):
            return None
        idle.pop()
        self.lend(entry)
        return entry

    async def _validate(self, entry: Entry) -> bool:
        """Ping a connection that sat idle past the window; retire it if dead."""
        self.stats.checks_performed += 1
        try:
            await entry.conn.ping(min(self.config.timeout, CLEANUP_TIMEOUT))
        except ConnectionFailed:
            self.stats.checks_failed += 1
            self.retire(entry, "failed check", graceful=False)
            return False
        except BaseException:  # cancelled mid-check: the state is unknown, drop it
            self.retire(entry, "check interrupted", graceful=False)
            raise
        entry.suspect = False
        entry.credit(_HEALTH_SUCCESS)
        return True

    async def wait_entry(self, start: float, timeout: float) -> Entry:
        """Wait in the queue (begun at ``start``) up to ``timeout`` s for a connection
        handed over; raise TooManyRequests (queue full) or PoolTimeout. The caller
        checks it out (`_lease`, or `lend` for `run_once`, which awaits `queue` itself)."""
        fut = self.queue(start, timeout)
        try:
            return await fut
        except BaseException as exc:
            self.unqueue(fut, exc)
            raise

    def queue(self, start: float, timeout: float) -> asyncio.Future[Entry]:
        """Join the queue (begun at ``start``) for a connection handed over within
        ``timeout`` s; return the future to await, which fails with PoolTimeout after
        that. A caller that stops waiting otherwise must pass it to `unqueue`. Raises
        TooManyRequests when ``max_waiting`` callers wait already."""
        max_waiting = self._max_waiting
        handoff = self.handoff
        if max_waiting and len(handoff.waiters) >= max_waiting:
            self.stats.requests_rejected += 1
            raise TooManyRequests(
                f"pool {self.config.name!r} has {len(handoff.waiters)} callers waiting "
                f"(max_waiting={max_waiting}); {self.describe_state()}"
            )
        fut = handoff.enqueue(start, start + timeout)  # its timeout: the hand-off's timer
        if handoff.opening < len(handoff.waiters) and self.has_room():
            self.open_ahead()  # growth never waits: the new connection serves the oldest waiter
        return fut

    def unqueue(self, fut: asyncio.Future[Entry], exc: BaseException) -> None:
        """After ``exc`` ended a wait on `queue`'s ``fut``: give back the connection it was
        handed (cancelled after a hand-over), or leave the queue. Nothing to do for the
        hand-off's own PoolTimeout (counted there, nothing handed)."""
        if not isinstance(exc, PoolTimeout):
            self.handoff.abandon(fut)

    def lend(self, entry: Entry) -> None:
        """Count ``entry`` checked out (with a lease handle: `_lease`; without: `run_once`)."""
        self.lease_seq += 1
        self.active += 1
        self.stats.acquires += 1
        entry.leased = True

    def _lease(self, entry: Entry, start: float) -> PooledConnection:
        now = time.monotonic()
        seq = self.lease_seq = self.lease_seq + 1  # `lend`, inline: one frame less
        self.active += 1
        stats = self.stats
        stats.acquires += 1
        entry.leased = True
        stats.acquire_wait.add(now - start)
        return PooledConnection(entry, f"{entry.name}#{seq}", self, now, now - start)

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
        max_rows: int | None = None,
        rewritten: RewrittenQuery | None = None,
    ) -> QueryResult:
        """Run one statement (or a parameterless multi-statement string) on ``pc``.

        Placeholders ``?``, ``$1``, ``%s`` and ``:name`` are all accepted.
        ``observe=False`` keeps the library's own bookkeeping statements out of pattern
        learning. ``max_rows`` (None: the pool's ``max_rows``) refuses a query that returns
        more rows with ResultTooLarge, after reading at most ``max_rows + 1`` (stream.py).
        ``rewritten``: ``rewrite(query, pool.style)``, done by the caller (the router's
        plan), so that it is not looked up again.
        Awaits the driver call, bounded by the pool's ``query_timeout``. Raises:

        - ParameterError: bad parameters, fetch mode, fetch size or max_rows; a statement already
          running on ``pc``. InvalidQueryText, UnsupportedStatement (COPY ... STDIN, or
          several statements with ``allow_multi_statements=False``): nothing is sent.
        - QueryError: the database rejected the statement (TransactionRolledBack for a
          COMMIT answered with ROLLBACK); the connection stays usable.
        - ConnectionFailed: the connection broke (it is replaced on release);
          OutcomeUnknown / CommitOutcomeUnknown when a statement that may change data (or
          a COMMIT) was sent and its answer was lost or came later than ``query_timeout``.
        - ConnectionReleased, PoolClosed.
        """
        entry = pc._entry  # not the property: one call less on every statement
        if entry is None:
            raise ConnectionReleased(f"connection {pc.id!r} was already released")
        if type(query) is not str and not isinstance(query, str):
            raise ParameterError(f"query must be a string (got {type(query).__name__})")
        if fetch_mode != "all" and fetch_mode not in FETCH_MODES:
            raise ParameterError(f"fetch_mode must be one of {FETCH_MODES} (got {fetch_mode!r})")
        if type(fetch_size) is not int or fetch_size < 1:  # the check's call only when bad
            check_number("fetch_size", fetch_size, low=1, integer=True, error=ParameterError)
        rq = rewritten or self._rewrites.get(query) or self._rewrite(query)  # 1/6 of rewrite()
        args = bind(rq, params)
        if rq.statements != 1:
            self._check_script(rq, args)
        if entry.busy:
            raise _running(pc)
        if rq.session_state or (self.routines_dirty and calls_routines(query)):
            entry.dirty = True  # a user function may have set a role: reset on release
        conn = entry.conn
        start = time.monotonic()
        was_in = None if conn.is_closed() else conn.in_transaction()  # None: cannot be sent
        entry.busy = True
        try:
            if rq.statements > 1:
                data, count = await conn.execute_script(rq.text, self.query_timeout)
            elif max_rows is None and self.max_rows is None:  # no limit: stream.py
                data, count = await conn.fetch(
                    rq.text, args, fetch_mode, fetch_size, self.query_timeout
                )
            else:
                data, count = await self.fetch_limited(
                    conn, rq, args, fetch_mode, fetch_size, max_rows
                )
        except (QueryError, ConnectionFailed) as exc:
            mapped = self.failed(entry, pc, query, exc, time.monotonic() - start, was_in, observe)
            if mapped is exc:
                raise
            raise mapped from exc
        except ParameterError:
            raise
        except BaseException:  # cancelled mid-statement: the wire state is unknown
            entry.broken = True
            raise
        finally:
            entry.busy = False
        duration = self.succeeded(entry, start)
        if self.observer is not None and observe:
            self.observer(query, duration, count, True, pc)
        return QueryResult(data, count, duration)

    def _rewrite(self, query: str) -> RewrittenQuery:
        """Return ``rewrite(query, self.style)``, kept for `execute`'s next lookup (at most
        `_REWRITES_KEPT` texts: a full dict starts over). Raises what `rewrite` raises."""
        rq = rewrite(query, self.style)
        rewrites = self._rewrites
        if len(rewrites) >= _REWRITES_KEPT:
            rewrites.clear()
        rewrites[query] = rq
        return rq

    def succeeded(self, entry: Entry, start: float) -> float:
        """Count a statement that ran on ``entry`` from ``start``; return its duration."""
        duration = time.monotonic() - start
        stats = self.stats
        stats.queries_executed += 1
        stats.query_time.add(duration)
        entry.queries += 1
        if entry.health < MAX_HEALTH:  # the common case (full health) skips the call
            entry.credit(_HEALTH_SUCCESS)
        return duration

    def _check_script(self, rq: RewrittenQuery, args: tuple[Any, ...]) -> None:
        """Refuse an empty query, and a multi-statement one the pool does not allow or
        that has parameters."""
        if rq.statements == 0:
            raise ParameterError("query is empty")
        if not self.config.allow_multi_statements:
            raise UnsupportedStatement(
                f"query holds {rq.statements} statements and pool {self.config.name!r} "
                "has allow_multi_statements=False: send one statement per execute"
            )
        if args:
            raise ParameterError("parameters cannot be used with a multi-statement query")

    def failed(
        self,
        entry: Entry,
        pc: PooledConnection | None,
        query: str,
        exc: QueryError | ConnectionFailed,
        took: float,
        was_in: bool | None,
        observe: bool,
    ) -> Exception:
        """Count a failed statement and return what to raise: ``exc`` itself, or what a
        statement whose answer was lost or late may have done (OutcomeUnknown...).

        ``was_in``: whether a transaction was open before it (None: it was never sent).
        ``pc``: the lease it ran on (None: `run_once`, which runs only without an observer).
        """
        if isinstance(exc, QueryError):
            self.count_failure(entry, exc)
            if self.observer is not None and observe and pc is not None:
                self.observer(query, took, 0, False, pc)
            if exc.error_type == "QueryTimeout" and was_in is not None:
                return self._late_answer(entry, query, was_in) or exc
            return exc
        self.stats.queries_executed += 1
        self.stats.query_errors += 1
        entry.broken = True
        for idle in self.idle:  # a lost connection (server restart?): check idle ones first
            idle.suspect = True
        if was_in is None or type(exc) is not ConnectionFailed:
            return exc  # never sent (the connection was known closed), or already decided
        # Sent, and no answer: did it take effect? (classification is cached per text)
        return lost_in_flight(query, self.driver.dialect, was_in, str(exc)) or exc

    def _late_answer(self, entry: Entry, query: str, was_in: bool) -> ConnectionFailed | None:
        """Decide what a timed-out statement may have done (sql.outcome.timed_out); when it
        may have changed something, close the connection at once, so that a transaction
        it ran in can never be committed afterwards. A driver that interrupts and undoes the
        statement itself (SQLite; closing would also lose a memory DB) is left alone."""
        if self.driver.undoes_timed_out:
            return None
        cause = f"no answer within query_timeout={self.config.query_timeout:g}s"
        late = timed_out(query, self.driver.dialect, was_in, cause)
        if late is not None:
            entry.broken = True
            entry.conn.terminate()
        return late

    def count_failure(self, entry: Entry, exc: QueryError) -> None:
        """Count a statement the database rejected on ``entry`` and lower its health
        (not for ResultTooLarge: the caller's limit says nothing of the link)."""
        self.stats.queries_executed += 1
        self.stats.query_errors += 1
        if exc.error_type != "ResultTooLarge":
            entry.debit(
                _HEALTH_TIMEOUT if exc.error_type == "QueryTimeout" else _HEALTH_QUERY_ERROR
            )
        if entry.conn.is_closed():
            entry.broken = True

    # ------------------------------------------------------------------ return

    async def release(self, pc: PooledConnection) -> str:
        """Return a connection; answer "released", or "recycled" if it was replaced.

        A clean connection is back in the pool before this returns, with no round trip.
        An open transaction is rolled back and dirty session state reset first; that work
        is shielded, so a caller cancelled here still never leaks the connection.
        Raises ConnectionReleased if ``pc`` was already released, ParameterError (and
        keeps it checked out) while a statement is running on it.
        """
        entry = pc._entry  # not the property: one call less on every release
        if entry is None:
            raise ConnectionReleased(f"connection {pc.id!r} was already released")
        if entry.busy:  # the next caller would get a connection mid-statement
            raise ParameterError(
                f"connection {pc.id!r} is running a statement: release it once that returns"
            )
        pc._entry = None
        status = self.give_back(entry, pc.acquired_at)
        return status if status is not None else await self.cleaned(entry)

    async def checkin(self, entry: Entry, acquired_at: float) -> str:
        """Take back ``entry``, checked out since ``acquired_at`` (`release` without the
        handle; `run_once` calls it directly). Answers like `release`."""
        status = self.give_back(entry, acquired_at)
        return status if status is not None else await self.cleaned(entry)

    def give_back(self, entry: Entry, acquired_at: float) -> str | None:
        """`checkin` up to the cleanup: None when the connection needs a rollback or a
        reset first (`cleaned` does it), else how it went back ("released"/"recycled").
        Synchronous, so that the common return costs no coroutine."""
        entry.leased = False
        self.active -= 1
        now = entry.last_used = time.monotonic()
        self.stats.hold_time.add(now - acquired_at)
        if self.closed and not self.active:
            self._drained.set()
        conn = entry.conn
        if entry.broken or conn.is_closed():
            self.retire(entry, "broken", graceful=False)
            return "recycled"
        if entry.health < self._health_threshold:
            self.retire(entry, f"health {entry.health:.0f} below threshold")
            return "recycled"
        if not entry.dirty and conn.session_changed():  # a role set where no text shows it
            entry.dirty = True
        if entry.dirty or conn.in_transaction():
            return None
        if entry.last_used >= entry.deadline or self.closed:
            self.retire(entry, "lifetime" if not self.closed else "pool closed")
            return "recycled"
        if self.handoff.waiters:  # callers wait: the hand-off rule decides
            self._put_back(entry)
        else:
            self.idle.append(entry)
        return "released"

    def release_soon(self, pc: PooledConnection) -> None:
        """Return ``pc`` in a pool-owned task, once a statement still unwinding on it (a
        cancelled caller) has returned: for an owner that is gone and cannot await."""
        self.tasks.spawn(self._release_when_idle(pc), "release-abandoned")

    async def _release_when_idle(self, pc: PooledConnection) -> None:
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        # Polled, not signalled: this runs only for an abandoned run's lease, and an Event
        # per statement would cost every execute on the hot path.
        while not pc.released and pc.entry.busy and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if pc.released:
            return
        if pc.entry.busy:  # still on the wire: its state is unknown, close it
            pc.entry.broken = True
            pc.entry.busy = False
        await self.release(pc)

    async def cleaned(self, entry: Entry) -> str:
        """Clean ``entry`` (`_clean`) in a pool-owned task, shielded: a caller cancelled
        here still never leaks the connection."""
        return await asyncio.shield(self.tasks.spawn(self._clean(entry), "release-cleanup"))

    async def _clean(self, entry: Entry) -> str:
        """Roll back and reset a connection before it goes back; replace it on failure."""
        conn = entry.conn
        try:
            if entry.dirty:
                self.stats.resets += 1
                if not await conn.reset(CLEANUP_TIMEOUT):
                    self.retire(entry, "session state cannot be reset")
                    return "recycled"
            else:
                self.stats.rollbacks += 1
                await conn.rollback(CLEANUP_TIMEOUT)
        except Exception as exc:
            logger.warning("cleanup of %s failed, replacing it: %s", entry.name, exc)
            self.retire(entry, "cleanup failed", graceful=False)
            return "recycled"
        entry.dirty = False
        if self.closed:
            self.retire(entry, "pool closed")
            return "recycled"
        self._put_back(entry)
        return "released"

    # ------------------------------------------------------------------ big results

    async def fetch_limited(
        self,
        conn: DriverConnection,
        rq: RewrittenQuery,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        max_rows: Any,
    ) -> Rows:
        """Run one statement under ``max_rows`` or, when None, the pool's (the driver's
        ``fetch_limited``)."""
        if max_rows is None:
            max_rows = self.config.max_rows
        check_number("max_rows", max_rows, low=1, integer=True, error=ParameterError)
        timeout = self.config.query_timeout
        return await conn.fetch_limited(rq.text, args, mode, size, max_rows, timeout)

    def stream(
        self, pc: PooledConnection, query: str, params: Any = None, *, batch_size: int = 1000
    ) -> ResultStream:
        """Return the rows of ``query`` in batches: ``async for batch in pool.stream(...)``.

        Each batch is a list of at most ``batch_size`` dict rows; only the batch being read
        is held in memory (see stream.py for how each backend reads it). The stream opens
        on the first batch and ends after the last; ``async with`` or ``aclose()`` ends it
        early (its own transaction rolled back), and so does the next statement or the
        release of ``pc``. ``query_timeout`` applies to each batch.
        Raises at once ParameterError (``batch_size``, parameters, several statements),
        UnsupportedStatement (not a query: SELECT, VALUES, TABLE or WITH, writing nothing),
        ConnectionReleased; while iterating QueryError or ConnectionFailed.
        """
        entry = pc._entry  # not the property: one call less on every statement
        if entry is None:
            raise ConnectionReleased(f"connection {pc.id!r} was already released")
        if type(query) is not str and not isinstance(query, str):
            raise ParameterError(f"query must be a string (got {type(query).__name__})")
        check_number("batch_size", batch_size, low=1, integer=True, error=ParameterError)
        rq = rewrite(query, self.style)
        args = bind(rq, params)
        if rq.statements != 1:
            raise ParameterError(f"stream reads one query (got {rq.statements} statements)")
        if not entry.conn.can_stream(rq.text):
            raise UnsupportedStatement(
                "stream reads queries (SELECT, VALUES, TABLE or WITH that write nothing); "
                "run other statements with execute"
            )
        if rq.session_state or (self.routines_dirty and calls_routines(query)):
            entry.dirty = True
        return ResultStream(self, pc, query, rq.text, args, batch_size)

    def count_stream(
        self, entry: Entry, pc: PooledConnection, query: str, duration: float, rows: int
    ) -> None:
        """Count a stream that ended cleanly (maybe as ``pc`` was released) as one statement."""
        stats = self.stats
        stats.queries_executed += 1
        stats.query_time.add(duration)
        entry.queries += 1
        if self.observer is not None:
            self.observer(query, duration, rows, True, pc)

    # ------------------------------------------------------------------ reports

    def get_stats(self) -> dict[str, Any]:
        """Return the stats report: counters, timings with sample counts, and the current
        state (docs/pool.md, "stats", lists every key)."""
        state: dict[str, Any] = self.state()
        state["available_connections"] = state["idle_connections"]
        state["health_scores"] = self.health_scores()
        uptime = time.monotonic() - self.started_at
        return self.stats.report(self.config.name, uptime, state)

    def get_pool_statistics(self) -> dict[str, Any]:
        """Return the flat summary of `get_stats` (docs/pool.md, "get_pool_statistics")."""
        return flat_statistics(self.get_stats())

    def get_status(self) -> dict[str, Any]:
        """Return per-connection status and the pool's counts (docs/pool.md, "get_status")."""
        state = self.state()
        return {
            "connections": connection_status(self.entries(), time.monotonic()),
            "pool_size": state["total_connections"],
            "active_count": state["active_connections"],
            "available_count": state["idle_connections"],
        }
