"""SQLite driver on aiosqlite: one worker-thread hop per statement.

Every aiosqlite call is a hop to the connection's thread (~100 µs), so a statement costs
exactly one: ``execute_fetchall`` with ``sqlite3.Row`` rows, the row count read from
``total_changes`` (a plain attribute, no hop). There is no server, so ``server_prepare``
is False; statements are reused from sqlite3's own per-connection cache instead.

sqlite3's statement cache (``cached_statements``, fixed at connect) is an LRU keyed by the
exact SQL text: in CPython 3.11 a ``functools.lru_cache`` around statement creation, used
by every ``execute`` (not by ``executescript``); a statement that fails to compile (syntax
error, missing table, several statements) is not kept, one that fails later (a constraint,
a bad binding) is. sqlite3 does not say whether a run was a hit, so each connection keeps
a mirror of it (`StatementMirror`): same size, same keys, updated for every text sent
through ``execute`` on the connection, in the same order. With no failed statement the
mirror holds exactly what sqlite3 holds (tests/router/test_statement_cache.py checks it
against sqlite3's own counters and the ``sqlite_stmt`` table); a failure it cannot place
makes it under-count, never over-count (see `StatementMirror.failed`).

The ``sqlite3.Connection`` is opened by our own connector (passed to the public
``aiosqlite.Connection(connector, iter_chunk_size)``), so the driver holds it without
reading aiosqlite's private attributes: ``interrupt()`` is thread-safe and must reach a
statement that is running, which aiosqlite's queue would make wait behind it.

Two places use aiosqlite internals, each for a reason given there: ``terminate`` (stopping
the worker thread without a future), and ``fetch``, which puts a plain read straight on
the worker thread's queue (``_tx``: ``(future, function)`` pairs, the protocol of
aiosqlite's own ``Connection._execute``) instead of going through ``execute_fetchall``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine, Iterable
from functools import partial
from typing import Any, TypeVar

import aiosqlite
from aiosqlite.core import _STOP_RUNNING_SENTINEL

from kailash_nodes.config import ConnectParams
from kailash_nodes.drivers.base import (
    ConnectionLimit,
    CursorReads,
    DriverConnection,
    NoReplication,
    NoServerPrepare,
    Rows,
)
from kailash_nodes.errors import ConnectionFailed, ParameterError, QueryError

__all__ = ["DRIVER", "SQLiteConnection", "SQLiteCursor", "SQLiteDriver", "StatementMirror"]

_T = TypeVar("_T")

_BUSY_TIMEOUT_S = 5.0
_ITER_CHUNK_SIZE = 64  # aiosqlite.connect's default
# After ``query_timeout`` the statement is interrupted in its thread and its answer awaited;
# only if it has not stopped this much later is the connection given up (replaced).
_INTERRUPT_GRACE_S = 2.0
# One writer at a time and a worker thread per connection: more connections buy nothing.
_MAX_USEFUL = 16
# Terminated connections whose worker thread has not ended yet (set when it has): the
# thread may still deliver an interrupted statement's answer to the event loop, so the
# loop must outlive it (SQLiteDriver.drain, awaited by the pool's close).
_ENDING: set[threading.Event] = set()


def _all_rows(raw: sqlite3.Connection, text: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
    """Run ``text`` and return all its rows (in the connection's worker thread)."""
    return raw.execute(text, args).fetchall()


def _interrupt(raw: sqlite3.Connection, fired: list[bool]) -> None:
    """Interrupt the statement running on ``raw`` (thread-safe) and note that it fired."""
    fired.append(True)
    raw.interrupt()


class StatementMirror:
    """What sqlite3's statement cache of one connection holds: an LRU of ``capacity``
    texts, each True (surely cached) or False (maybe: a failed statement).

    Call `use` before each text goes to ``Cursor.execute`` and `failed` when that raised.

    >>> m = StatementMirror(2)
    >>> [m.use(t) for t in ("a", "b", "a", "c", "b")]
    [None, None, True, None, None]
    >>> list(m.texts), m.has("a"), m.count()
    (['c', 'b'], False, 2)
    """

    __slots__ = ("capacity", "texts")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # text -> surely cached; least recently used first, as in lru_cache
        self.texts: OrderedDict[str, bool] = OrderedDict()

    def use(self, text: str) -> bool | None:
        """Note that ``text`` is sent now; return what was known of it before (None: not
        cached, a miss; True: a hit; False: maybe cached)."""
        texts = self.texts
        known = texts.get(text)
        if known is None:
            texts[text] = True
            if len(texts) > self.capacity:
                texts.popitem(last=False)
        else:
            texts.move_to_end(text)
        return known

    def failed(self, text: str, known: bool | None, exc: BaseException) -> None:
        """Correct `use` after sending ``text`` raised ``exc``.

        A hit stays cached whatever happens. On a miss, sqlite3 keeps the statement only
        if it compiled: an IntegrityError comes from running it (constraints are checked
        then), so it is kept; any other error may have come from compiling (there is no
        telling apart "no such table" from a runtime error of the same class), so the text
        is marked maybe: it keeps its place (as if kept) but is never reported cached
        until a run succeeds. Marked so, the mirror's sure entries are all in sqlite3's
        cache: it may under-count hits, never over-count.
        """
        if known is None and text in self.texts and not isinstance(exc, sqlite3.IntegrityError):
            self.texts[text] = False

    def has(self, text: str) -> bool:
        """Return whether ``text`` is surely in sqlite3's cache (its next run is a hit)."""
        return self.texts.get(text) is True

    def count(self) -> int:
        """Return how many texts are surely in sqlite3's cache."""
        return sum(self.texts.values())


class SQLiteConnection(CursorReads, NoServerPrepare):
    """An aiosqlite connection in autocommit mode (``isolation_level=None``); ``raw`` is
    its ``sqlite3.Connection`` (used from this thread only for ``interrupt``/``close``).

    ``has_statement``/``cached_statements`` answer for sqlite3's statement cache, read
    from the connection's `StatementMirror` (see the module doc).
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_raw",
        "_stopped",
        "client_statement_cache",
        "server_prepare",
        "statements",
    )

    def __init__(self, conn: aiosqlite.Connection, raw: sqlite3.Connection, capacity: int) -> None:
        self._conn = conn
        self._raw = raw
        self._closed = False
        self._stopped = False  # close() or terminate() has asked the worker thread to end
        self.server_prepare = False
        self.client_statement_cache = True
        self.statements = StatementMirror(capacity)

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement in a single hop to the connection's thread ("one" and "many"
        of a query: through a cursor, reading no more rows than asked for).

        "all" queues `_all_rows` on the worker thread itself: aiosqlite's
        ``execute_fetchall`` does the same through a result proxy, two coroutines and a
        partial, which measured ~10 % of a round trip with the process on one CPU
        (docs/performance.md, session 10)."""
        if mode != "all":
            return await self.fetch_some(text, args, mode, size, timeout)
        if self._stopped:  # the worker thread is ending: a queued call would never answer
            raise ConnectionFailed("SQLite connection closed")
        conn = self._conn
        raw = self._raw  # its counters read directly: aiosqlite's properties are two calls
        before = raw.total_changes
        # StatementMirror.use inline (a call costs every statement): before the hop, so the
        # mirror sees the texts in the order sqlite3 does
        texts = self.statements.texts
        known = texts.get(text)
        if known is None:
            texts[text] = True
            if len(texts) > self.statements.capacity:
                texts.popitem(last=False)
        else:
            texts.move_to_end(text)
        fut: asyncio.Future[list[sqlite3.Row]] = asyncio.get_running_loop().create_future()
        conn._tx.put_nowait((fut, partial(_all_rows, raw, text, args)))
        try:
            if timeout is None:  # inline, not _call: one coroutine frame less on the hot path
                try:
                    records = await fut
                except Exception as exc:
                    raise self._wrap(exc) from exc
            else:
                records = await self._timed(fut, timeout)
        except Exception as exc:
            self.statements.failed(text, known, exc.__cause__ or exc)
            raise
        if known is False:  # ran: surely cached now
            texts[text] = True
        if not records:
            return [], raw.total_changes - before
        rows = [dict(r) for r in records]
        return rows, len(rows)

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """Run a multi-statement string with ``executescript``.

        sqlite3 commits a pending transaction before ``executescript``: a script inside an
        explicit transaction ends it.
        """
        before = self._conn.total_changes
        await self._call(self._conn.executescript(text), timeout)
        return [], self._conn.total_changes - before

    async def open_cursor(
        self, text: str, args: tuple[Any, ...], timeout: float | None
    ) -> SQLiteCursor:
        """Start ``text`` on a cursor of its own; rows are stepped out batch by batch.

        Raises QueryError, ConnectionFailed or ParameterError.
        """
        return SQLiteCursor(self, await self._call(self._cursor(text, args), timeout))

    async def _cursor(self, text: str, args: tuple[Any, ...]) -> aiosqlite.Cursor:
        return await self._execute(self._conn.execute(text, args), text)

    async def _execute(self, call: Coroutine[Any, Any, _T], text: str) -> _T:
        """Await ``call``, which sends ``text`` through sqlite3's statement cache, keeping
        the mirror in step (the paths off the hot one: cursors, ping, rollback)."""
        known = self.statements.use(text)
        try:
            result = await call
        except BaseException as exc:
            self.statements.failed(text, known, exc)
            raise
        if known is False:
            self.statements.texts[text] = True
        return result

    def has_statement(self, text: str) -> bool:
        """Return whether sqlite3's statement cache surely holds ``text`` (no hop)."""
        return self.statements.texts.get(text) is True

    def cached_statements(self) -> int:
        """Return how many statements sqlite3's cache surely holds on this connection."""
        return self.statements.count()

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        """Return 0: sqlite3 cannot drop a cached statement, and need not. After any schema
        change SQLite itself compiles each cached statement again on its next run (every
        one, whatever tables the change touched; ``sqlite_stmt.reprep`` counts it), so no
        cached statement ever runs a stale plan."""
        return 0

    def resize_statement_cache(self, size: int) -> bool:
        """Return whether the cache already has room for ``max(size, 1)`` statements:
        sqlite3 fixes it at connect, so a connection of another size must be replaced."""
        return max(size, 1) == self.statements.capacity

    async def _call(self, call: Awaitable[_T], timeout: float | None) -> _T:
        """Await one hop to the connection's thread, with ``query_timeout`` when set."""
        if timeout is not None:
            return await self._timed(call, timeout)
        try:
            return await call
        except Exception as exc:
            raise self._wrap(exc) from exc

    async def _timed(self, call: Awaitable[_T], timeout: float) -> _T:
        """Await ``call`` with the statement interrupted in its thread after ``timeout``.

        The interrupted statement comes back as an error, so when this returns nothing is
        running and the connection is usable (a transaction the interrupt rolled back shows
        in ``in_transaction``). Only a statement that ignores the interrupt for
        ``_INTERRUPT_GRACE_S`` more leaves the connection to be replaced.
        """
        fired: list[bool] = []
        handle = asyncio.get_running_loop().call_later(timeout, _interrupt, self._raw, fired)
        try:
            async with asyncio.timeout(timeout + _INTERRUPT_GRACE_S):
                return await call
        except Exception as exc:
            if fired and isinstance(exc, sqlite3.OperationalError) and "interrupt" in str(exc):
                raise QueryError("query timed out", error_type="QueryTimeout") from exc
            raise self._wrap(exc) from exc
        finally:
            handle.cancel()

    def in_transaction(self) -> bool:
        """Return sqlite3's own transaction flag (no hop; read from the sqlite3 connection
        itself, as aiosqlite's property does through two more calls)."""
        return self._raw.in_transaction

    def is_closed(self) -> bool:
        """Return whether the connection was closed or its thread has died."""
        return self._closed

    async def ping(self, timeout: float) -> None:
        """Run ``SELECT 1`` through the worker thread."""
        try:
            async with asyncio.timeout(timeout):
                await self._execute(self._conn.execute_fetchall("SELECT 1"), "SELECT 1")
        except Exception as exc:
            self._closed = True
            raise ConnectionFailed(f"SQLite connection check failed: {exc}") from exc

    async def rollback(self, timeout: float) -> None:
        """Roll back the open transaction."""
        try:
            async with asyncio.timeout(timeout):
                await self._execute(self._conn.execute_fetchall("ROLLBACK"), "ROLLBACK")
        except Exception as exc:
            raise self._wrap(exc) from exc

    async def reset(self, timeout: float) -> bool:
        """Return False: temp tables and pragmas go only with the connection; replace it."""
        return False

    async def close(self, timeout: float) -> None:
        """Close the connection and stop its thread, waiting up to ``timeout`` s for the
        thread to get there (after any work queued before). The wait holds no future of
        the event loop, so a close cancelled or timed out (a pool closing) leaves the
        thread nothing to hand back to a loop that may be gone (see `terminate`)."""
        self._closed = True
        if self._stopped:
            return
        ended = self._stop(interrupt=False)
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while not ended.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        if ended.is_set():
            _ENDING.discard(ended)

    def terminate(self) -> None:
        """Interrupt a running statement and stop the worker thread, without waiting.

        The one use of aiosqlite internals (``_running``, ``_tx``, ``_connection``,
        ``_STOP_RUNNING_SENTINEL``; `close` shares it), because its public API cannot stop
        the worker thread without a future: ``stop()`` hands the thread a future of the
        current event loop, and if that loop has closed by the time the thread gets to
        it (a connection dropped while a loop shuts down, or a close cancelled), the
        thread dies with "Event loop is closed" in ``call_soon_threadsafe``; aiosqlite's
        ``close()`` ends in ``stop()`` too. So the stop request goes into aiosqlite's
        queue without a future (its worker accepts None), the thread closes the handle
        and ends by itself, and ``_running``/``_connection`` are set as ``stop()`` sets
        them, so later calls fail at once and the object's finaliser does not warn
        (tests/drivers/test_sqlite_threads.py fails with ``stop()`` in its place).
        """
        self._closed = True
        if not self._stopped:
            self._stop(interrupt=True)

    def _stop(self, *, interrupt: bool) -> threading.Event:
        """Queue the worker thread's end (closing the handle) without a future; return
        the event the thread sets once it has done so (`SQLiteDriver.drain` waits for it).
        ``interrupt`` first stops a running statement."""
        self._stopped = True
        conn, raw = self._conn, self._raw
        if interrupt:
            raw.interrupt()  # thread-safe: the running statement stops at its next step
        conn._running = False
        ended = threading.Event()
        _ENDING.difference_update([e for e in _ENDING if e.is_set()])  # stays small
        _ENDING.add(ended)

        def close_and_stop() -> object:
            raw.close()
            conn._connection = None
            ended.set()  # after the statements before it have delivered their answers
            return _STOP_RUNNING_SENTINEL

        conn._tx.put_nowait((None, close_and_stop))
        return ended

    def _wrap(self, exc: BaseException) -> Exception:
        if isinstance(exc, TimeoutError):  # the interrupt did not stop it: replace
            self._closed = True
            return QueryError("query timed out", error_type="QueryTimeout")
        if isinstance(exc, UnicodeEncodeError):  # the text is checked before: a parameter
            return ParameterError(
                f"a query parameter holds a string that cannot be sent as UTF-8 ({exc.reason} "
                f"at index {exc.start})"
            )
        if isinstance(exc, sqlite3.ProgrammingError) and (
            "binding" in str(exc) or "supported" in str(exc)
        ):
            return ParameterError(f"query parameters could not be bound: {exc}")
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            self._closed = True
            return ConnectionFailed(f"SQLite connection closed: {exc}")
        if isinstance(exc, sqlite3.Error):
            name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
            return QueryError(str(exc), error_type=str(name))
        if isinstance(exc, ValueError) and "no active connection" in str(exc):
            self._closed = True
            return ConnectionFailed("SQLite connection closed")
        return QueryError(str(exc), error_type=type(exc).__name__)


class SQLiteCursor:
    """A statement stepped batch by batch in the connection's thread (one hop a batch)."""

    __slots__ = ("_cur", "_owner")

    def __init__(self, owner: SQLiteConnection, cur: aiosqlite.Cursor) -> None:
        self._owner = owner
        self._cur = cur

    async def fetch(self, size: int, timeout: float | None) -> list[dict[str, Any]]:
        """Return up to ``size`` next rows."""
        rows = await self._owner._call(self._cur.fetchmany(size), timeout)
        return [dict(r) for r in rows]

    async def close(self, timeout: float | None, *, commit: bool) -> None:
        """Reset the statement (``commit`` does not apply: no transaction was opened)."""
        if not self._owner._closed:
            await self._owner._call(self._cur.close(), timeout)


class SQLiteDriver(NoReplication):
    """Opens aiosqlite connections; ``:memory:`` pools share one in-memory database.

    No server: no connection limit to read (``max_useful_connections`` caps a pool), no
    replicas beyond a liveness check, no positions.
    """

    name = "sqlite"
    placeholder_style = "qmark"
    dialect = "sqlite"
    can_prepare = False
    statement_cache = "sqlite3"
    undoes_timed_out = True
    routines_change_session = False
    tracks_positions = False
    max_useful_connections: int | None = _MAX_USEFUL

    async def connection_limit(
        self,
        conn: DriverConnection,
        timeout: float | None,
        *,
        application_name: str,
        own_connections: int,
    ) -> ConnectionLimit | None:
        """Return None: there is no server limit (no round trip)."""
        return None

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the worker threads of terminated connections to
        end: an interrupted statement's thread hands its answer to the event loop, and a
        loop closed before that makes the thread die with "Event loop is closed"."""
        pending = [e for e in _ENDING if not e.is_set()]
        if pending:
            await asyncio.to_thread(_wait_all, pending, timeout)
            await asyncio.sleep(0)  # let the delivered answers run on the loop
        _ENDING.difference_update([e for e in _ENDING if e.is_set()])

    async def connect(self, params: ConnectParams, statement_cache_size: int) -> SQLiteConnection:
        """Open one connection with a busy timeout; raise ConnectionFailed on failure."""
        database = params.database or ":memory:"
        uri = params.options.get("uri", "").lower() in ("1", "true") or database.startswith("file:")
        opened: list[sqlite3.Connection] = []
        capacity = max(statement_cache_size, 1)

        def connector() -> sqlite3.Connection:  # runs in the connection's worker thread
            raw = sqlite3.connect(
                database,
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_S,
                uri=uri,
                cached_statements=capacity,
                check_same_thread=False,
            )
            opened.append(raw)
            return raw

        try:
            async with asyncio.timeout(params.connect_timeout):
                conn = await aiosqlite.Connection(connector, _ITER_CHUNK_SIZE)
        except (OSError, TimeoutError, sqlite3.Error) as exc:
            raise ConnectionFailed(f"could not open {params.describe()}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return SQLiteConnection(conn, opened[0], capacity)


DRIVER = SQLiteDriver()


def _wait_all(events: list[threading.Event], timeout: float) -> None:
    """Wait (in a worker thread) until every event is set, at most ``timeout`` s in all."""
    deadline = time.monotonic() + timeout
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            return
