"""Big results in bounded memory: a query's rows in batches (``ConnectionPool.stream``).

A :class:`ResultStream` reads a query through a driver cursor (PostgreSQL: a ``DECLARE``d
cursor, in a transaction of its own when none is open; MySQL: an unbuffered result;
SQLite: a stepped statement), holding one batch at a time. While it is open, a
:class:`StreamGuard` stands in for the driver connection in the pool's entry, so whatever
uses the connection next finds the stream and ends it first: another statement closes it
(its own transaction rolled back) before running, a release closes it and keeps the
connection, and a stream interrupted mid-batch (cancelled, connection lost) leaves the
connection marked broken, to be replaced on release. A stream therefore never leaves a
connection with an unread result, an open cursor or a transaction of its own. A stream
ended that way, by something else than its reader, raises on its next batch rather than
end as if its result were complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from kailash_nodes.config import PoolConfig
from kailash_nodes.drivers import DriverConnection, DriverCursor, Rows
from kailash_nodes.errors import ConnectionFailed, ParameterError, QueryError
from kailash_nodes.pool.entry import Entry, PooledConnection

__all__ = ["ResultStream", "StreamGuard", "StreamOwner"]


class StreamOwner(Protocol):
    """What a stream needs of the pool that runs it (``ConnectionPool`` is one)."""

    config: PoolConfig  # query_timeout applies to each batch

    def count_failure(self, entry: Entry, exc: QueryError) -> None:
        """Count a statement the database rejected (lowers the connection's health)."""

    def count_stream(
        self, entry: Entry, pc: PooledConnection, query: str, duration: float, rows: int
    ) -> None:
        """Count a stream that ended cleanly as one statement."""


class ResultStream:
    """The rows of one query in batches (lists of dict rows), one batch held at a time.

    Iterate it with ``async for``; use ``async with`` (or ``aclose()``) to end it early
    at a known point. Opened on the first batch; ends by itself after the last one.
    """

    __slots__ = (
        "_args",
        "_batch_size",
        "_broken",
        "_busy",
        "_cursor",
        "_cut",
        "_done",
        "_entry",
        "_guard",
        "_pc",
        "_pool",
        "_query",
        "_start",
        "_text",
        "rows",
    )

    def __init__(
        self,
        pool: StreamOwner,
        pc: PooledConnection,
        query: str,
        text: str,
        args: tuple[Any, ...],
        batch_size: int,
    ) -> None:
        self._pool = pool
        self._pc = pc
        self._query = query  # as the caller wrote it (pattern learning)
        self._text = text  # rewritten for the driver
        self._args = args
        self._batch_size = batch_size
        self._cursor: DriverCursor | None = None
        self._entry: Entry | None = None
        self._guard: StreamGuard | None = None
        self._done = False
        self._broken = False
        self._busy = False  # a batch is being read right now
        self._cut = False  # ended by another use of the connection, not by its reader
        self._start = 0.0
        self.rows = 0  # rows handed out so far

    @property
    def closed(self) -> bool:
        """Return whether the stream has ended (read to the end, closed or broken)."""
        return self._done

    def __aiter__(self) -> ResultStream:
        return self

    async def __aenter__(self) -> ResultStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def __anext__(self) -> list[dict[str, Any]]:
        """Return the next batch; end (closing the cursor) after the last one.

        Raises QueryError (the stream is closed, the connection usable), ConnectionFailed
        (the connection is replaced on release), ConnectionReleased.
        """
        if self._done:
            if self._cut or self._broken:
                raise self._ended()
            raise StopAsyncIteration
        entry = self._entry_or_raise()
        if self._busy or entry.busy:  # nothing is sent: two reads would share one wire
            raise ParameterError(
                "a batch of this stream, or a statement, is already running on its "
                "connection: await it first"
            )
        self._busy = entry.busy = True  # execute and release refuse while it is set
        try:
            return await self._next_batch()
        finally:
            self._busy = entry.busy = False

    async def _next_batch(self) -> list[dict[str, Any]]:
        cursor = self._cursor if self._cursor is not None else await self._open()
        try:
            rows = await cursor.fetch(self._batch_size, self._pool.config.query_timeout)
        except QueryError as exc:
            self._pool.count_failure(self._entry_or_raise(), exc)
            await self._finish(commit=False)
            raise
        except BaseException:  # cancelled or lost mid-batch: the wire state is unknown
            self.interrupt()
            raise
        self.rows += len(rows)
        if len(rows) < self._batch_size:  # the last batch: end now, not on the next call
            await self._finish(commit=True)
            if not rows:
                raise StopAsyncIteration
        return rows

    async def _open(self) -> DriverCursor:
        entry = self._entry_or_raise()
        conn = entry.conn
        if isinstance(conn, StreamGuard):  # another stream still open here: end it first
            await conn.end_stream()
            conn = entry.conn
        self._start = time.monotonic()
        try:
            cursor = await conn.open_cursor(self._text, self._args, self._pool.config.query_timeout)
        except QueryError as exc:
            self._done = True
            self._pool.count_failure(entry, exc)
            raise
        except ParameterError:  # refused before anything ran: the connection is as it was
            self._done = True
            raise
        except BaseException:
            self._done = True
            entry.broken = True
            raise
        self._cursor = cursor
        self._entry = entry
        self._guard = entry.conn = StreamGuard(conn, self)
        return cursor

    def _ended(self) -> Exception:
        """Return the error for reading on after the stream was ended under its reader."""
        if self._broken:
            return ConnectionFailed(
                "the stream was interrupted (cancelled or its connection failed) and cannot "
                "go on; its connection is replaced on release"
            )
        return ParameterError(
            "the stream was ended before it was read to the end: its connection ran "
            "another statement or was released; read a stream to the end (or aclose it) "
            "before using its connection for anything else"
        )

    def _entry_or_raise(self) -> Entry:
        return self._entry if self._entry is not None else self._pc.entry

    async def aclose(self) -> None:
        """End the stream now: the cursor is closed (its own transaction rolled back) and
        the connection is ready for the next statement. Does nothing once ended."""
        if not self._done and self._cursor is not None:
            await self._finish(commit=False)
        self._done = True

    async def _finish(self, *, commit: bool) -> None:
        """Close the cursor, put the driver connection back in the entry, record the run."""
        cursor, entry, guard = self._cursor, self._entry, self._guard
        self._done = True
        self._cursor = None
        if cursor is None or entry is None or guard is None:
            return
        entry.conn = guard.inner
        try:
            await cursor.close(self._pool.config.query_timeout, commit=commit)
        except BaseException:
            entry.broken = True  # the cursor may still be open: replace the connection
            raise
        self._pool.count_stream(
            entry, self._pc, self._query, time.monotonic() - self._start, self.rows
        )

    @property
    def interrupted(self) -> bool:
        """Return whether the stream broke off mid-batch (its connection is replaced)."""
        return self._broken

    async def end_for_other_use(self) -> None:
        """End the stream (rolled back) because its connection is wanted for something
        else; the reader then gets an error instead of a short result.

        Raises ParameterError while a batch is being read, ConnectionFailed after an
        interrupted batch (nothing is sent in either case).
        """
        if self._busy:  # nothing is sent: two statements would share one wire
            raise ParameterError(
                "the connection is reading a batch of a stream: await it before sending "
                "anything else, or use another connection"
            )
        if self._broken:
            raise ConnectionFailed(
                "the connection was interrupted in the middle of a stream; it is replaced "
                "on release"
            )
        if not self._done:
            self._cut = True
        await self.aclose()

    def interrupt(self) -> None:
        """Give up on the connection: it is replaced on release (no round trip now)."""
        self._done = self._broken = True
        self._cursor = None
        if self._entry is not None:
            self._entry.broken = True


class StreamGuard:
    """The driver connection of an entry while a stream is open on it.

    Whatever uses the connection ends the stream first: a statement or prepare closes it
    (rolled back) and then runs; a release sees a transaction (``in_transaction`` is True)
    and its rollback closes the stream; after an interrupted batch ``is_closed`` is True,
    so nothing is sent and the connection is replaced.
    """

    __slots__ = ("inner", "stream")

    def __init__(self, inner: DriverConnection, stream: ResultStream) -> None:
        self.inner = inner
        self.stream = stream

    def __getattr__(self, name: str) -> Any:  # a driver's own attributes (behind_proxy...)
        return getattr(self.inner, name)

    @property
    def server_prepare(self) -> bool:
        """Return the driver connection's ``server_prepare``."""
        return self.inner.server_prepare

    @server_prepare.setter
    def server_prepare(self, value: bool) -> None:
        self.inner.server_prepare = value

    async def end_stream(self) -> None:
        """End the open stream (`ResultStream.end_for_other_use`)."""
        await self.stream.end_for_other_use()

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """End the stream, then run the statement."""
        await self.end_stream()
        return await self.inner.fetch(text, args, mode, size, timeout)

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """End the stream, then run the script."""
        await self.end_stream()
        return await self.inner.execute_script(text, timeout)

    async def fetch_limited(
        self,
        text: str,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        max_rows: int,
        timeout: float | None,
    ) -> Rows:
        """End the stream, then run the statement under ``max_rows``."""
        await self.end_stream()
        return await self.inner.fetch_limited(text, args, mode, size, max_rows, timeout)

    def can_stream(self, text: str) -> bool:
        """Return the driver connection's answer."""
        return self.inner.can_stream(text)

    async def open_cursor(
        self, text: str, args: tuple[Any, ...], timeout: float | None
    ) -> DriverCursor:
        """End the stream, then open a cursor."""
        await self.end_stream()
        return await self.inner.open_cursor(text, args, timeout)

    def in_transaction(self) -> bool:
        """Return True: a stream is open, so a release must clean up (see ``rollback``)."""
        return True

    def session_changed(self) -> bool:
        """Return the driver connection's answer."""
        return self.inner.session_changed()

    def has_statement(self, text: str) -> bool:
        """Return the driver connection's answer."""
        return self.inner.has_statement(text)

    async def prepare(self, text: str, timeout: float | None) -> bool:
        """End the stream, then prepare."""
        await self.end_stream()
        return await self.inner.prepare(text, timeout)

    def cached_statements(self) -> int:
        """Return the driver connection's count."""
        return self.inner.cached_statements()

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        """Forget on the driver connection (client-side only)."""
        return self.inner.forget_statements(texts)

    def resize_statement_cache(self, size: int) -> bool:
        """Resize on the driver connection (client-side only); return its answer."""
        return self.inner.resize_statement_cache(size)

    def is_closed(self) -> bool:
        """Return True after an interrupted batch (the connection must not be used)."""
        return self.stream.interrupted or self.inner.is_closed()

    async def ping(self, timeout: float) -> None:
        """End the stream, then ping."""
        await self.end_stream()
        await self.inner.ping(timeout)

    async def rollback(self, timeout: float) -> None:
        """End the stream (its own transaction rolled back), then roll back a caller's."""
        await self.end_stream()
        if self.inner.in_transaction():
            await self.inner.rollback(timeout)

    async def reset(self, timeout: float) -> bool:
        """End the stream, then reset the session."""
        await self.end_stream()
        return await self.inner.reset(timeout)

    async def close(self, timeout: float) -> None:
        """Close the driver connection (the stream ends with it)."""
        self.stream.interrupt()
        await self.inner.close(timeout)

    def terminate(self) -> None:
        """Drop the driver connection at once (the stream ends with it)."""
        self.stream.interrupt()
        self.inner.terminate()
