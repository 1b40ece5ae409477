"""The small protocol every database driver implements, and what drivers share.

A driver turns one backend's client library into a :class:`DriverConnection`: execute a
statement already rewritten to the driver's placeholder style, report transaction status
without a round trip, ping, reset session state, close. Driver errors leave this layer
already wrapped: :class:`~kailash_nodes.errors.QueryError` (the server rejected the
statement; the connection is fine), :class:`~kailash_nodes.errors.ConnectionFailed` (the
connection is unusable), :class:`~kailash_nodes.errors.ParameterError` (a parameter could not
be sent).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from kailash_nodes.config import ConnectParams
from kailash_nodes.errors import QueryError, ResultTooLarge

__all__ = [
    "FETCH_MODES",
    "ConnectionLimit",
    "CursorReads",
    "Driver",
    "DriverConnection",
    "DriverCursor",
    "FunctionCatalog",
    "Lease",
    "NoReplication",
    "NoServerPrepare",
    "ReplicaStatus",
    "Rows",
    "catalog_read",
    "connect_failure",
    "is_query",
    "read_first",
    "read_limited",
    "shape",
    "too_large",
]

FETCH_MODES = ("all", "one", "many")
T = TypeVar("T")

# What a fetch returns: the data in the requested shape and the row count
# (rows returned for statements that return rows, rows affected for the others).
Rows = tuple["list[dict[str, Any]] | dict[str, Any] | None", int]

# A query a cursor can read: SELECT, VALUES, TABLE or WITH first (after comments and
# parentheses) and no word that may make it write (``FOR UPDATE`` aside). A false "no"
# (such a word in a literal or a column name) only means the statement is not bounded.
_QUERY_START = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|\Z)|#[^\n]*(?:\n|\Z)|/\*.*?\*/)\s*)*(?:\(\s*)*"
    r"(?:SELECT|VALUES|TABLE|WITH)\b",
    re.I | re.S,
)
_MAY_WRITE = re.compile(
    r"\b(?:INSERT|DELETE|MERGE|REPLACE|RETURNING|INTO|CALL)\b|(?<!FOR )(?<!KEY )\bUPDATE\b",
    re.I,
)


def is_query(text: str) -> bool:
    """Return whether ``text`` is a query a cursor can read (no statement that writes).

    >>> is_query("SELECT 1"), is_query("/* hint */ (SELECT 1)"), is_query("VALUES (1)")
    (True, True, True)
    >>> is_query("SELECT * FROM t FOR UPDATE"), is_query("SELECT 1 INTO x")
    (True, False)
    >>> is_query("INSERT INTO t VALUES (1) RETURNING id"), is_query("SHOW server_version")
    (False, False)
    >>> is_query("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    False
    """
    return _QUERY_START.match(text) is not None and _MAY_WRITE.search(text) is None


class DriverCursor(Protocol):
    """A query's result read in batches, open on one connection until ``close``."""

    async def fetch(self, size: int, timeout: float | None) -> list[dict[str, Any]]:
        """Return up to ``size`` next rows; fewer (or none) at the end of the result."""
        ...

    async def close(self, timeout: float | None, *, commit: bool) -> None:
        """End the cursor and leave the connection as it was before ``open_cursor``.

        A transaction the cursor opened itself ends with COMMIT when ``commit``, else with
        ROLLBACK; no round trip is sent when the connection is already closed.
        """
        ...


class DriverConnection(Protocol):
    """One open server connection, used by one caller at a time."""

    #: True when statements are prepared on the server and reused (asyncpg).
    server_prepare: bool
    #: True when ``has_statement`` answers for a statement cache in the client library
    #: instead (SQLite: sqlite3's own per-connection cache); False where it answers for
    #: server-side prepare or there is no cache per connection (MySQL)
    client_statement_cache: bool

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement; return its rows in ``mode`` shape and the row count."""
        ...

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """Run a multi-statement string without parameters."""
        ...

    async def fetch_limited(
        self,
        text: str,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        max_rows: int,
        timeout: float | None,
    ) -> Rows:
        """Run one statement like ``fetch``, reading at most ``max_rows + 1`` rows of a query.

        Raises ResultTooLarge past ``max_rows`` (the statement had no effect and the
        connection is as it was); a statement that is not a query runs as by ``fetch``.
        """
        ...

    def can_stream(self, text: str) -> bool:
        """Return whether ``open_cursor`` can read ``text`` (a query, see :func:`is_query`)."""
        ...

    async def open_cursor(
        self, text: str, args: tuple[Any, ...], timeout: float | None
    ) -> DriverCursor:
        """Start ``text`` (for which ``can_stream`` is True) and return a cursor over its
        rows, holding none of them yet. Until the cursor is closed nothing else may run on
        this connection."""
        ...

    def in_transaction(self) -> bool:
        """Return whether a transaction is open, from client-side state (no round trip)."""
        ...

    def session_changed(self) -> bool:
        """Return whether the server reported a change of who the session runs as (role,
        session authorization) since it was clean; client-side, no round trip."""
        ...

    def has_statement(self, text: str) -> bool:
        """Return whether ``text`` is prepared on this connection (False without prepare;
        with ``client_statement_cache``: whether its next run reuses the cached one)."""
        ...

    async def prepare(self, text: str, timeout: float | None) -> bool:
        """Prepare ``text`` ahead of use; return False if cached already or unsupported."""
        ...

    def cached_statements(self) -> int:
        """Return how many statements are prepared on this connection."""
        ...

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        """Drop these prepared statements (all when None); return how many were cached."""
        ...

    def resize_statement_cache(self, size: int) -> bool:
        """Keep at most ``size`` prepared statements (0 turns server-side prepare off);
        return False when this connection cannot change its cache size (SQLite: fixed at
        connect), so the pool replaces it with one opened at the new size."""
        ...

    def is_closed(self) -> bool:
        """Return whether the connection is known to be closed or broken."""
        ...

    async def ping(self, timeout: float) -> None:
        """Check the connection with one round trip; raise ConnectionFailed if it is dead."""
        ...

    async def rollback(self, timeout: float) -> None:
        """Roll back the open transaction."""
        ...

    async def reset(self, timeout: float) -> bool:
        """Reset session state; return False when this backend cannot (discard instead)."""
        ...

    async def close(self, timeout: float) -> None:
        """Close gracefully, falling back to terminate."""
        ...

    def terminate(self) -> None:
        """Close at once, without a round trip."""
        ...


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What a server says of itself as a read replica (see ``Driver.replica_status``)."""

    #: True when the server is a standby replaying a primary's changes
    standby: bool
    #: the position replayed so far (comparable with ``Driver.write_position``), or None
    position: int | None
    #: seconds the replica is behind (0.0 when it has replayed all it received), or None
    lag: float | None


@dataclass(frozen=True, slots=True)
class ConnectionLimit:
    """A server's connection budget as it stands now (see ``Driver.connection_limit``)."""

    #: the server's live connection limit
    max_connections: int
    #: connections of the limit that ordinary clients cannot use (superuser reserved)
    reserved: int
    #: client connections open now that are not this pool's
    others: int


@dataclass(frozen=True, slots=True)
class FunctionCatalog:
    """Which functions the server says a read replica may run (``Driver.function_catalog``).

    Names are lower-cased: ``schema.name`` for a qualified call, the bare name for a call
    the connection's search path resolves (PostgreSQL's ``pg_catalog`` functions: bare
    only). A name is safe only when every function it may call is (every overload).
    """

    #: where the verdicts come from: "pg_proc", "information_schema.ROUTINES"
    source: str
    #: names a replica may run
    safe: frozenset[str]
    #: names a replica may not run, with why ("volatile", "parallel restricted", ...)
    unsafe: Mapping[str, str]
    #: the names of ``unsafe`` that only call the server's own builtins: a curated list of
    #: effect-free builtins may still vouch for them (``random()`` is volatile, and harmless)
    builtin: frozenset[str]


class Driver(Protocol):
    """A backend: its name, its facts, how to connect, and its catalog reads.

    Everything that differs between backends is answered here, so nothing outside
    ``drivers/`` compares backend names or holds backend SQL. The catalog reads take an
    open connection of this driver, checked out by the caller, and run on it like any
    statement: they raise what ``DriverConnection.fetch`` raises (QueryError: the server
    refused; ConnectionFailed: the connection is gone); ``timeout`` bounds the round trip.
    """

    name: str
    #: target style for kailash_nodes.sql.rewrite: "numeric", "format" or "qmark"
    placeholder_style: str
    #: the SQL dialect of kailash_nodes.sql ("postgres", "mysql", "sqlite")
    dialect: str
    #: True when statements can be prepared on the server and reused (a connection's own
    #: ``server_prepare`` says whether it does: not behind a transaction-pooling proxy)
    can_prepare: bool
    #: the statement cache this backend reuses statements from (the router's
    #: ``cache_stats.statement_cache``): "server_prepared" (PostgreSQL), "sqlite3" (the
    #: client library's own cache, per connection) or "client_text" (nothing is prepared:
    #: only the router's per-text work is reused, MySQL/MariaDB)
    statement_cache: str
    #: True when a statement that outlived ``query_timeout`` is interrupted and undone by
    #: the driver itself, so the connection stays usable and nothing was applied (SQLite)
    undoes_timed_out: bool
    #: True when a call of a user function may change session state the server does not
    #: report (PostgreSQL: ``SET ROLE`` inside a function); the pool then resets a
    #: connection that ran one (``sql.calls_routines``) on release
    routines_change_session: bool
    #: True when the server reports write and replay positions (PostgreSQL's WAL LSN), so
    #: a replica can be asked whether it has replayed a session's last write
    tracks_positions: bool
    #: the most connections that can help at once when there is no server limit to read
    #: (SQLite: one writer at a time, a thread per connection); None: ask
    #: ``connection_limit``
    max_useful_connections: int | None

    async def connect(self, params: ConnectParams, statement_cache_size: int) -> DriverConnection:
        """Open one connection; raise ConnectionFailed (or ConfigError) on failure."""
        ...

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s until connections this driver terminated have let go of
        the event loop (SQLite: a worker thread still finishing an interrupted statement
        delivers its answer to the loop); the pool awaits it on close. Never raises."""
        ...

    async def replica_status(
        self, conn: DriverConnection, timeout: float | None
    ) -> ReplicaStatus | None:
        """Return what the server on ``conn`` says of itself as a replica, after one round
        trip; None when this backend reports nothing (the round trip then only proves the
        server answers)."""
        ...

    async def write_position(self, conn: DriverConnection, timeout: float | None) -> int | None:
        """Return the server's position at or past every write it acknowledged so far
        (PostgreSQL: the WAL insert LSN), or None when this backend has no positions."""
        ...

    async def replay_position(self, conn: DriverConnection, timeout: float | None) -> int | None:
        """Return how far the replica on ``conn`` has replayed (comparable with
        ``write_position``), or None when unknown (not a replica, or no positions)."""
        ...

    async def connection_limit(
        self,
        conn: DriverConnection,
        timeout: float | None,
        *,
        application_name: str,
        own_connections: int,
    ) -> ConnectionLimit | None:
        """Read the server's live connection limit and how many connections other clients
        hold, or return None when there is no server limit (``max_useful_connections``).

        Other clients are told apart by ``application_name`` where the server reports it
        per session (PostgreSQL); elsewhere every session counts and ``own_connections``
        (the pool's own) are subtracted.
        """
        ...

    async def function_catalog(
        self, conn: DriverConnection, timeout: float | None
    ) -> FunctionCatalog | None:
        """Read which functions a read replica may run, from the server's catalog (the
        rule per backend: docs/classification.md), or return None when this backend
        has no catalog to read (no round trip)."""
        ...


class NoServerPrepare:
    """The statement-cache part of DriverConnection for backends without server prepare."""

    __slots__ = ()

    def has_statement(self, text: str) -> bool:
        """Return False: there are no server-side prepared statements here."""
        return False

    def session_changed(self) -> bool:
        """Return False: this backend reports no session identity (the text scan alone
        marks a connection dirty)."""
        return False

    async def prepare(self, text: str, timeout: float | None) -> bool:
        """Return False: there are no server-side prepared statements here."""
        return False

    def cached_statements(self) -> int:
        """Return 0: there are no server-side prepared statements here."""
        return 0

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        """Return 0: there is nothing to forget."""
        return 0

    def resize_statement_cache(self, size: int) -> bool:
        """Return True: there is no cache of ours to resize."""
        return True


class Lease(Protocol):
    """A connection checked out of a pool (``kailash_nodes.pool.PooledConnection``)."""

    @property
    def connection(self) -> DriverConnection:
        """Return the driver connection."""
        ...

    def mark_broken(self) -> None:
        """Have the pool replace the connection at release."""
        ...


async def catalog_read(
    lease: Lease,
    read: Callable[[DriverConnection, float | None], Awaitable[T]],
    timeout: float | None,
) -> T:
    """Run one of a driver's catalog reads (``replica_status``, ``write_position``, ...)
    on the checked-out ``lease`` and return its answer.

    A read lost or cancelled midway leaves the wire state unknown: the lease is marked
    broken, so its release replaces the connection. A refused read (QueryError) says
    nothing of the connection. Raises what ``read`` raises.
    """
    try:
        return await read(lease.connection, timeout)
    except QueryError:
        raise
    except BaseException:
        lease.mark_broken()
        raise


class NoReplication:
    """The catalog reads of Driver for a backend without replicas or positions: the
    replica check is a liveness round trip (``ping``), there are no positions."""

    __slots__ = ()

    async def replica_status(
        self, conn: DriverConnection, timeout: float | None
    ) -> ReplicaStatus | None:
        """Check that the server answers (``ping``, raising ConnectionFailed); return None."""
        await conn.ping(60.0 if timeout is None else timeout)
        return None

    async def write_position(self, conn: DriverConnection, timeout: float | None) -> int | None:
        """Return None: this backend reports no positions (no round trip)."""
        return None

    async def replay_position(self, conn: DriverConnection, timeout: float | None) -> int | None:
        """Return None: this backend reports no positions (no round trip)."""
        return None

    async def drain(self, timeout: float) -> None:
        """Return at once: a terminated connection of this backend holds nothing of the
        event loop."""
        return None

    async def function_catalog(
        self, conn: DriverConnection, timeout: float | None
    ) -> FunctionCatalog | None:
        """Return None: no catalog of functions to read (no round trip); the classifier's
        own list of builtins is all there is."""
        return None


def too_large(max_rows: int) -> ResultTooLarge:
    """Return the error for a query whose result went past ``max_rows``.

    >>> print(too_large(10))  # doctest: +ELLIPSIS
    the query returned more than max_rows=10 rows, so none were returned; read big ...
    """
    return ResultTooLarge(
        f"the query returned more than max_rows={max_rows} rows, so none were returned; "
        "read big results in batches with the stream operation (ConnectionPool.stream)"
    )


async def read_limited(
    conn: DriverConnection,
    text: str,
    args: tuple[Any, ...],
    mode: str,
    size: int,
    max_rows: int,
    timeout: float | None,
) -> Rows:
    """Run ``text`` through a cursor reading at most ``max_rows + 1`` of its rows; shape
    them like ``fetch`` (the ``fetch_limited`` of a driver with no better way).

    A statement that is not a query (writes, with or without RETURNING; SHOW, PRAGMA...)
    runs unchanged: it is not limited. Raises ResultTooLarge past ``max_rows`` (the
    cursor's own transaction rolled back, the rest of the result dropped), and what
    ``fetch`` raises. ``timeout`` applies to each round trip.
    """
    if not conn.can_stream(text):
        return await conn.fetch(text, args, mode, size, timeout)
    rows = await _read_head(conn, text, args, max_rows + 1, timeout, keep=max_rows)
    if len(rows) > max_rows:
        raise too_large(max_rows)
    return shape(rows, len(rows), mode, size)


async def read_first(
    conn: DriverConnection,
    text: str,
    args: tuple[Any, ...],
    mode: str,
    size: int,
    timeout: float | None,
) -> Rows:
    """Read the first row (``mode`` "one") or the first ``size`` rows ("many") of the query
    ``text`` through a cursor, then close it: no more rows than that are held (MySQL reads
    the rest off the wire and drops them)."""
    count = 1 if mode == "one" else size
    rows = await _read_head(conn, text, args, count, timeout, keep=count)
    return shape(rows, len(rows), mode, size)


async def _read_head(
    conn: DriverConnection,
    text: str,
    args: tuple[Any, ...],
    count: int,
    timeout: float | None,
    *,
    keep: int,
) -> list[dict[str, Any]]:
    """Open a cursor over ``text``, read up to ``count`` rows and close it: its own
    transaction commits when at most ``keep`` rows came, else (and on an error) rolls back."""
    cursor = await conn.open_cursor(text, args, timeout)
    try:
        rows = await cursor.fetch(count, timeout)
    except QueryError:
        await cursor.close(timeout, commit=False)
        raise
    await cursor.close(timeout, commit=len(rows) <= keep)
    return rows


def shape(rows: list[dict[str, Any]], count: int, mode: str, size: int) -> Rows:
    """Shape an "all" result (``count``: rows returned, or affected when there are none)
    for ``mode``: the first row or None ("one"), the first ``size`` rows ("many").

    >>> shape([{"a": 1}, {"a": 2}], 2, "one", 9), shape([{"a": 1}, {"a": 2}], 2, "many", 1)
    (({'a': 1}, 1), ([{'a': 1}], 1))
    >>> shape([], 3, "one", 9), shape([], 3, "many", 9)
    ((None, 3), ([], 3))
    """
    if not rows:
        return (None if mode == "one" else []), count
    if mode == "one":
        return rows[0], 1
    if mode == "many":
        rows = rows[:size]
    return rows, len(rows)


class CursorReads:
    """``can_stream``, ``fetch_limited`` and ``fetch_some`` for a driver whose
    ``open_cursor`` reads any query (see :func:`is_query`)."""

    __slots__ = ()

    def can_stream(self, text: str) -> bool:
        """Return whether ``text`` is a query (see :func:`is_query`)."""
        return is_query(text)

    async def fetch_limited(
        self,
        text: str,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        max_rows: int,
        timeout: float | None,
    ) -> Rows:
        """Run one statement, a query through a cursor (see :func:`read_limited`)."""
        conn = cast(DriverConnection, self)
        return await read_limited(conn, text, args, mode, size, max_rows, timeout)

    async def fetch_some(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement for ``mode`` "one" or "many": a query through a cursor (see
        :func:`read_first`), anything else read whole by ``fetch`` and shaped."""
        conn = cast(DriverConnection, self)
        if is_query(text):
            return await read_first(conn, text, args, mode, size, timeout)
        rows, count = await conn.fetch(text, args, "all", size, timeout)
        return shape(rows, count, mode, size)  # type: ignore[arg-type]  # "all": a list


_TLS_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


def connect_failure(where: str, exc: BaseException, options: Mapping[str, str]) -> str:
    """Return the message for a failed connect: what failed and why, down its causes.

    A driver library's own message may not say why (aiomysql: only "Can't connect"; an
    unreadable CA file: only "No such file or directory"): the first cause that does (a
    certificate that did not verify) is added, and a missing file names the TLS files the
    DSN gave. Paths are not secrets; passwords never reach this text.

    >>> import ssl
    >>> err = OSError("can't connect")
    >>> err.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    >>> connect_failure("db", err, {}).partition(" (because: ")[2]
    'SSLCertVerificationError: certificate verify failed)'
    >>> missing = FileNotFoundError(2, "No such file")
    >>> connect_failure("db", missing, {"sslrootcert": "/x.crt"}).partition("(TLS files: ")[2]
    "sslrootcert='/x.crt')"
    """
    message = f"could not connect to {where}: {type(exc).__name__}: {exc}"
    cause, seen = exc.__cause__ or exc.__context__, 0
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLError):
            message += f" (because: {type(cause).__name__}: {cause})"
            break
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    if isinstance(exc, FileNotFoundError | PermissionError | ssl.SSLError) and exc.filename is None:
        files = ", ".join(f"{k}={options[k]!r}" for k in _TLS_FILES if k in options)
        if files:
            message += f" (TLS files: {files})"
    return message
