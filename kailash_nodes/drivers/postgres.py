"""PostgreSQL driver on asyncpg: statements prepared on the server and reused per connection.

Named server-side statements are used only where the server connection cannot change
under the client. At connect the driver compares the backend pid of the handshake
(BackendKeyData, which a transaction-pooling proxy such as PgBouncer must invent) with
``pg_backend_pid()``: if they differ, the connection goes through a proxy and runs every
statement unnamed (Parse, Bind and Execute in one Sync, which the proxy keeps on one
server connection). A server that rejects named statements later (SQLSTATE 26000, 42P05,
or a "prepared statement" error) switches that connection to unnamed statements too, and
the statement is retried once when no transaction was open.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import asyncpg

from kailash_nodes.config import ConnectParams
from kailash_nodes.drivers.base import CursorReads, Rows, connect_failure, is_query, read_first
from kailash_nodes.drivers.postgres_catalog import PostgresCatalog, lsn_to_int
from kailash_nodes.errors import (
    ConnectionFailed,
    KailashNodesError,
    ParameterError,
    QueryError,
    TransactionRolledBack,
)

__all__ = ["DRIVER", "PostgresConnection", "PostgresCursor", "PostgresDriver", "lsn_to_int"]

# Clears everything a caller may have left on the session (run only when a release is
# dirty): DISCARD ALL is SET SESSION AUTHORIZATION DEFAULT (which also resets the role;
# RESET ALL alone does not), RESET ALL, CLOSE ALL, UNLISTEN *, pg_advisory_unlock_all(),
# DEALLOCATE ALL, DISCARD PLANS, TEMP and SEQUENCES. It cannot run in a transaction block,
# so it is sent alone, after a ROLLBACK when one is needed. DEALLOCATE ALL drops the server
# side of our statement cache too, so the cache is cleared.
_RESET_SQL = "DISCARD ALL"
# The protocol call: a cached statement's rows are read with the one call asyncpg's own
# ``PreparedStatement.fetch`` ends in, ``Connection._protocol.bind_execute(state, args,
# "", 0, True, timeout)``, not through that method: its connection check, two coroutines
# and a lambda cost several µs of client CPU per statement (docs/performance.md, session
# 10). What they add is kept: the protocol itself refuses a closed or busy connection, a
# statement whose state asyncpg closed is prepared again (`_fetch`), and an
# OutdatedSchemaCacheError reloads the schema state as asyncpg does (`_recover`). With an
# asyncpg whose call has other parameters (`_has_protocol_call`), every statement takes
# the public path. tests/drivers/test_pg_protocol_call.py checks both.
_PROTOCOL_ARGS = ("self", "state", "args", "portal_name", "limit", "return_extra", "timeout")
# A named statement of ours the server (or a proxy in front of it) does not keep
# (26000 "does not exist", 42P05 "already exists", naming our statement), or a proxy that
# refuses named statements: the statement was never run, so it can be retried unnamed
# outside a transaction. A user's own EXECUTE/DEALLOCATE of a missing name is not this.
_NAMED_REJECTED = frozenset({"26000", "42P05"})
_NAMED_REFUSED = re.compile(r"prepared statements? (are|is) not supported", re.I)
# Statements whose command tag "ROLLBACK" means the transaction failed and was rolled back.
_ENDS_TRANSACTION = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|\Z)|/\*.*?\*/)\s*)*(COMMIT|END|PREPARE\s+TRANSACTION)\b",
    re.I | re.S,
)
# Settings the server reports on every change (ParameterStatus) that say who the session
# runs as: compared at release with their clean values, they catch, without a round trip,
# a role change the text scan cannot see (``set_config('role', ...)`` inside a function,
# on a superuser pool). Two attributes: each read costs ~0.6 µs on every release.
_IDENTITY = ("session_authorization", "is_superuser")
# The DSN options of libpq's that asyncpg supports for TLS; passed through as they are.
_TLS_OPTIONS = frozenset(
    {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl",
     "ssl_min_protocol_version", "ssl_max_protocol_version", "sslnegotiation"}
)  # fmt: skip
# SQLSTATEs meaning the session is gone: class 08, and operator intervention on it.
_FATAL_STATES = frozenset({"57P01", "57P02", "57P03", "57P05"})
_VALUE_IN_MESSAGE = re.compile(r"^(invalid input for query argument \$\d+): .*? \((.*)\)$", re.S)
_RETURNS_ROWS = re.compile(
    r"^\s*(\(\s*)*(SELECT|WITH|VALUES|TABLE|SHOW|EXPLAIN|FETCH)\b|\bRETURNING\b", re.I
)
_COUNT_MISMATCH = re.compile(r"the server expects \d+ arguments? for this query")


class PostgresConnection(CursorReads):
    """An asyncpg connection with its own bounded cache of prepared statements.

    ``behind_proxy`` says the connect-time check found a proxy between client and server;
    ``named_statements`` is False when named statements must not be used (a proxy, or a
    server that rejected one); ``server_prepare`` is True only when statements really are
    prepared on the server and reused (the router counts cache lookups only then).
    """

    __slots__ = (
        "_conn",
        "_cursors",
        "_direct",
        "_max",
        "_prefix",
        "_server_settings",
        "_setting",
        "_settings",
        "_stmts",
        "behind_proxy",
        "named_statements",
        "server_prepare",
        "statements_prepared",
        "statements_reprepared",
    )

    client_statement_cache = False  # has_statement answers for server-side prepare

    def __init__(self, conn: Any, cache_size: int, *, behind_proxy: bool = False) -> None:
        self._conn = conn
        # whether to use "The protocol call" (at the top); the protocol itself is not kept
        # here: it holds the password it authenticated with as a public attribute
        self._direct = _has_protocol_call(conn)
        # query text -> (PreparedStatement, whether it returns rows, its protocol state),
        # least recently used first. An OrderedDict rather than cachetools.LRUCache: a hit
        # is on every query's path, and OrderedDict's get/move_to_end are C calls (measured
        # ~1 µs less a query).
        self._stmts: OrderedDict[str, tuple[Any, bool, Any]] = OrderedDict()
        self._max = max(cache_size, 1)
        self.behind_proxy = behind_proxy
        self.named_statements = not behind_proxy
        self.server_prepare = cache_size > 0 and self.named_statements
        self.statements_prepared = 0
        # cached statements the server found stale (DDL outside the router) and that were
        # prepared again and retried
        self.statements_reprepared = 0
        self._cursors = 0
        # Random per connection: a name can never match another client's statement (or a
        # statement left by an earlier connection object at the same address) on a server
        # connection shared through a proxy.
        self._prefix = f"kn_{secrets.token_hex(4)}_"
        # The server reports both settings on every change (ParameterStatus); asyncpg keeps
        # them in one settings object per connection, read through its ``__getattr__``.
        # Calling that directly skips the failed normal lookup first (1.15 -> 0.32 µs per
        # release, measured), and a server that does not report them reads as unchanged.
        self._server_settings = conn.get_settings()
        self._setting = getattr(type(self._server_settings), "__getattr__", None)
        self._settings = self._reported()

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement; retry once if its plan went stale or a named statement was
        rejected (outside a transaction only). Raises TransactionRolledBack for a COMMIT
        the server answered with ROLLBACK."""
        stmts = self._stmts
        cached = stmts.get(text)
        if (
            cached is not None
            and cached[1]
            and mode == "all"
            and not cached[2].closed
            and self._direct
        ):
            stmts.move_to_end(text)  # the hot path: one frame
            try:
                # PreparedStatement.fetch without the four Python frames around this one
                # call (see "The protocol call" at the top)
                records = (
                    await self._conn._protocol.bind_execute(cached[2], args, "", 0, True, timeout)
                )[0]
            except Exception as exc:
                return await self._recover(exc, text, args, mode, size, timeout)
            return [dict(r) for r in records], len(records)
        try:
            return await self._fetch(text, args, mode, size, timeout)
        except Exception as exc:
            return await self._recover(exc, text, args, mode, size, timeout)

    async def _recover(
        self,
        exc: Exception,
        text: str,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        timeout: float | None,
    ) -> Rows:
        """Retry a statement that never ran (stale plan, rejected name) once, or raise."""
        if isinstance(exc, KailashNodesError):
            raise exc
        if isinstance(exc, asyncpg.exceptions.OutdatedSchemaCacheError):
            # what PreparedStatement.fetch does before raising it (the hot path calls the
            # protocol itself): its rows were read with a stale type; the next run prepares
            # again. The statement ran, so it is not retried.
            await self._conn.reload_schema_state()
            self._stmts.pop(text, None)
            raise self._wrap(exc) from exc
        if isinstance(exc, asyncpg.InvalidCachedStatementError):
            self._stmts.pop(text, None)
            self.statements_reprepared += 1
        elif self.named_statements and self._rejects_named(exc):
            self.use_unnamed_statements()
        else:
            raise self._wrap(exc) from exc
        if self._conn.is_in_transaction():  # the failure aborted it: nothing to retry
            raise self._wrap(exc) from exc
        try:
            return await self._fetch(text, args, mode, size, timeout)
        except KailashNodesError:
            raise
        except Exception as again:
            raise self._wrap(again) from again

    def _rejects_named(self, exc: BaseException) -> bool:
        """Tell whether ``exc`` says the server does not keep our named statements."""
        if not isinstance(exc, asyncpg.PostgresError):
            return False
        message = str(exc)
        if getattr(exc, "sqlstate", None) in _NAMED_REJECTED and self._prefix in message:
            return True
        return _NAMED_REFUSED.search(message) is not None

    def use_unnamed_statements(self) -> None:
        """Stop using named statements on this connection (a proxy or a server that does
        not keep them): the cache is dropped and every statement runs unnamed from now."""
        self.named_statements = False
        self.server_prepare = False
        self._stmts.clear()

    async def _fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        if not self.server_prepare:
            return await self._fetch_unprepared(text, args, mode, size, timeout)
        cached = self._stmts.get(text)
        if cached is not None and cached[2].closed:  # asyncpg gave it up: prepare again
            del self._stmts[text]
            cached = None
        if cached is None:
            cached = await self._prepare(text, timeout)
        else:
            self._stmts.move_to_end(text)
        stmt, returns_rows, _ = cached
        if not returns_rows:  # a command without result columns: count from its tag
            await stmt.fetch(*args, timeout=timeout)
            status = stmt.get_statusmsg()
            _check_commit(status, text)
            return (None if mode == "one" else []), _affected(status)
        if mode == "one":
            row = await stmt.fetchrow(*args, timeout=timeout)
            return (dict(row) if row is not None else None), (0 if row is None else 1)
        if mode == "many" and is_query(text):  # a cursor: only ``size`` rows are read
            return await read_first(self, text, args, mode, size, timeout)
        records = await stmt.fetch(*args, timeout=timeout)
        rows = [dict(r) for r in (records if mode == "all" else records[:size])]
        return rows, len(rows)

    async def _prepare(self, text: str, timeout: float | None) -> tuple[Any, bool, Any]:
        # An explicit name: with asyncpg's own cache off, an unnamed prepare would make
        # every execution send its own Parse (a second message per query).
        self.statements_prepared += 1
        name = f"{self._prefix}{self.statements_prepared}"
        stmt = await self._conn.prepare(text, name=name, timeout=timeout)
        cached = self._stmts[text] = (stmt, bool(stmt.get_attributes()), stmt._state)
        if len(self._stmts) > self._max:  # evict the least recently used; asyncpg closes it
            self._stmts.popitem(last=False)
        return cached

    async def prepare(self, text: str, timeout: float | None) -> bool:
        """Prepare ``text`` now (a predicted statement); False if cached or prepare is off."""
        if not self.server_prepare or text in self._stmts:
            return False
        try:
            await self._prepare(text, timeout)
            # asyncpg's prepare ends with Flush, not Sync: until the next Sync the backend
            # stays in the implicit transaction its Parse opened, holding locks on the
            # statement's tables, and an idle pooled connection would make DDL on them
            # wait. One simple query ends it (inside a transaction, that holds them anyway).
            if not self._conn.is_in_transaction():
                await self._conn.execute("SELECT 1", timeout=timeout)
        except Exception as exc:
            if self._rejects_named(exc):
                self.use_unnamed_statements()
            raise self._wrap(exc) from exc
        return True

    async def _fetch_unprepared(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        # Unnamed statements (PgBouncer-safe): asyncpg with its cache off re-sends Parse
        # with Bind/Execute before one Sync. No result description before running, so a
        # statement that cannot return rows runs as a command, for its row count.
        if not _RETURNS_ROWS.search(text):
            status = await self._conn.execute(text, *args, timeout=timeout)
            _check_commit(status, text)
            return (None if mode == "one" else []), _affected(status)
        if mode == "one":  # a portal row limit of 1: only the first row is sent
            row = await self._conn.fetchrow(text, *args, timeout=timeout)
            return (dict(row) if row is not None else None), (0 if row is None else 1)
        if mode == "many" and is_query(text):
            return await read_first(self, text, args, mode, size, timeout)
        records = await self._conn.fetch(text, *args, timeout=timeout)
        rows = [dict(r) for r in (records if mode == "all" else records[:size])]
        return rows, len(rows)

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """Run a multi-statement string with the simple query protocol.

        Raises TransactionRolledBack when the last statement is a COMMIT the server
        answered with ROLLBACK.
        """
        try:
            status = await self._conn.execute(text, timeout=timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc
        if status == "ROLLBACK":
            _check_commit(status, text.rstrip().rstrip(";").rpartition(";")[2])
        return [], _affected(status)

    async def open_cursor(
        self, text: str, args: tuple[Any, ...], timeout: float | None
    ) -> PostgresCursor:
        """Declare a server-side cursor for ``text``, in a transaction of its own (BEGIN)
        when none is open; every batch is one ``FETCH``.

        SQL-level cursors rather than protocol portals: they run as unnamed statements
        (safe behind a transaction-pooling proxy, which keeps the transaction on one server
        connection) and ``CLOSE`` ends one inside a caller's transaction. Raises QueryError
        (the transaction this opened is rolled back), ConnectionFailed or ParameterError.
        """
        conn = self._conn
        own = not conn.is_in_transaction()
        self._cursors += 1
        name = f"{self._prefix}c{self._cursors}"
        try:
            if own:
                await conn.execute("BEGIN", timeout=timeout)
            await conn.execute(
                f'DECLARE "{name}" NO SCROLL CURSOR FOR {text}', *args, timeout=timeout
            )
        except Exception as exc:
            error = self._wrap(exc)
            if own and not isinstance(error, ConnectionFailed) and conn.is_in_transaction():
                try:
                    await conn.execute("ROLLBACK", timeout=timeout)
                except Exception as again:
                    raise self._wrap(again) from exc
            raise error from exc
        return PostgresCursor(self, name, own=own)

    def in_transaction(self) -> bool:
        """Return asyncpg's client-side view of the transaction status."""
        return bool(self._conn.is_in_transaction())

    def session_changed(self) -> bool:
        """Return whether ``session_authorization`` or ``is_superuser`` (which follows the
        role) differs from the clean session's.

        Client-side, no round trip: the server reports both on every change, even one made
        inside a function the text scan cannot see into.
        """
        return self._reported() != self._settings

    def _reported(self) -> tuple[Any, Any]:
        read, settings = self._setting, self._server_settings
        if read is None:
            return (None, None)
        try:
            return (read(settings, "session_authorization"), read(settings, "is_superuser"))
        except AttributeError:  # a server (or proxy) that does not report them
            return (None, None)

    def has_statement(self, text: str) -> bool:
        """Return whether ``text`` is prepared on this connection."""
        return text in self._stmts

    def cached_statements(self) -> int:
        """Return how many statements are prepared on this connection."""
        return len(self._stmts)

    def forget_statements(self, texts: Iterable[str] | None) -> int:
        """Drop these cached statements (all when None); asyncpg closes them on the server
        when they are freed."""
        if texts is None:
            count = len(self._stmts)
            self._stmts.clear()
            return count
        return sum(self._stmts.pop(t, None) is not None for t in texts)

    def resize_statement_cache(self, size: int) -> bool:
        """Keep at most ``size`` statements, the most recently used; 0 turns prepare off.
        Return True (applied at once).

        Prepare stays off on a connection that must not use named statements.
        """
        self._max = max(size, 1)
        while len(self._stmts) > (size if size > 0 else 0):
            self._stmts.popitem(last=False)
        self.server_prepare = size > 0 and self.named_statements
        return True

    def is_closed(self) -> bool:
        """Return whether asyncpg knows the connection is closed."""
        return bool(self._conn.is_closed())

    async def ping(self, timeout: float) -> None:
        """Run an empty query; raise ConnectionFailed if the connection is dead."""
        try:
            await self._conn.execute("SELECT 1", timeout=timeout)
        except Exception as exc:
            raise ConnectionFailed(f"PostgreSQL connection check failed: {exc}") from exc

    async def rollback(self, timeout: float) -> None:
        """Roll back the open transaction."""
        try:
            await self._conn.execute("ROLLBACK", timeout=timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc

    async def reset(self, timeout: float) -> bool:
        """Return the session to how it was at connect: roll back, then ``DISCARD ALL``
        (role, session authorization, settings, prepared statements, cursors, LISTEN,
        advisory locks, temp tables, sequences and plans)."""
        try:
            if self._conn.is_in_transaction():
                await self._conn.execute("ROLLBACK", timeout=timeout)
            await self._conn.execute(_RESET_SQL, timeout=timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc
        self._stmts.clear()
        if self.session_changed():  # e.g. a startup setting the reset cannot restore
            raise ConnectionFailed("PostgreSQL session identity differs after DISCARD ALL")
        return True

    async def close(self, timeout: float) -> None:
        """Close gracefully within ``timeout``, else terminate."""
        try:
            await self._conn.close(timeout=timeout)
        except Exception:
            self._conn.terminate()

    def terminate(self) -> None:
        """Drop the socket at once."""
        self._conn.terminate()

    def _wrap(self, exc: BaseException) -> Exception:
        message = str(exc)
        if message.startswith("invalid input for query argument"):  # raised client-side
            return ParameterError(_VALUE_IN_MESSAGE.sub(r"\1 (\2)", message))
        if isinstance(exc, asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", None)
            if (state and (state.startswith("08") or state in _FATAL_STATES)) or (
                self._conn.is_closed()
            ):
                return ConnectionFailed(f"PostgreSQL connection lost: {exc} (SQLSTATE {state})")
            return QueryError(str(exc), sqlstate=state, error_type=type(exc).__name__)
        if isinstance(exc, asyncpg.InterfaceError) and _COUNT_MISMATCH.search(str(exc)):
            return ParameterError(str(exc))
        if isinstance(exc, TimeoutError):
            return QueryError("query timed out", sqlstate="57014", error_type="QueryTimeout")
        if isinstance(exc, OSError | asyncpg.InterfaceError) or self._conn.is_closed():
            return ConnectionFailed(f"PostgreSQL connection failed: {exc}")
        return QueryError(str(exc), error_type=type(exc).__name__)


class PostgresCursor:
    """A ``DECLARE``d cursor: each batch is ``FETCH FORWARD n``; ``close`` ends it."""

    __slots__ = ("_name", "_open", "_own", "_owner")

    def __init__(self, owner: PostgresConnection, name: str, *, own: bool) -> None:
        self._owner = owner
        self._name = name
        self._own = own  # the cursor opened the transaction it runs in
        self._open = True

    async def fetch(self, size: int, timeout: float | None) -> list[dict[str, Any]]:
        """Return up to ``size`` next rows (one round trip)."""
        owner = self._owner
        try:
            records = await owner._conn.fetch(
                f'FETCH FORWARD {int(size)} FROM "{self._name}"', timeout=timeout
            )
        except Exception as exc:
            raise owner._wrap(exc) from exc
        return [dict(r) for r in records]

    async def close(self, timeout: float | None, *, commit: bool) -> None:
        """End the transaction the cursor opened (COMMIT or ROLLBACK), or ``CLOSE`` it in
        the caller's transaction (nothing to close when that transaction has failed)."""
        conn = self._owner._conn
        if not self._open or conn.is_closed():
            self._open = False
            return
        self._open = False
        sql = ("COMMIT" if commit else "ROLLBACK") if self._own else f'CLOSE "{self._name}"'
        try:
            await conn.execute(sql, timeout=timeout)
        except asyncpg.InFailedSQLTransactionError:
            return  # the caller's transaction failed: its ROLLBACK drops the cursor
        except Exception as exc:
            raise self._owner._wrap(exc) from exc


def _check_commit(status: str, text: str) -> None:
    """Raise TransactionRolledBack when a COMMIT-like ``text`` got the tag ROLLBACK.

    >>> _check_commit("ROLLBACK", "ROLLBACK"), _check_commit("COMMIT", "COMMIT")
    (None, None)
    >>> _check_commit("ROLLBACK", "/* x */ commit")
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.TransactionRolledBack: COMMIT was answered with ROLLBACK: ...
    """
    if status == "ROLLBACK" and (m := _ENDS_TRANSACTION.match(text)) is not None:
        statement = " ".join(m.group(1).upper().split())
        raise TransactionRolledBack(
            f"{statement} was answered with ROLLBACK: a statement in the transaction had "
            "failed, so the server rolled the whole transaction back and nothing in it was "
            "committed"
        )


def _affected(status: str) -> int:
    """Return the row count of a command tag.

    >>> _affected("INSERT 0 3"), _affected("UPDATE 2"), _affected("CREATE TABLE")
    (3, 2, 0)
    """
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


def _has_protocol_call(conn: Any) -> bool:
    """Tell whether ``conn``'s asyncpg protocol has a ``bind_execute`` taking
    `_PROTOCOL_ARGS` (else the public ``PreparedStatement.fetch`` is used instead)."""
    proto = getattr(conn, "_protocol", None)
    code = getattr(getattr(type(proto), "bind_execute", None), "__code__", None)
    return code is not None and code.co_varnames[: code.co_argcount] == _PROTOCOL_ARGS


_CONNECT_ERRORS = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresDriver(PostgresCatalog):
    """Opens asyncpg connections; asyncpg's own statement cache is off (ours replaces it).

    The catalog reads (replica status, WAL positions, connection limit) come from
    :class:`~kailash_nodes.drivers.postgres_catalog.PostgresCatalog`.
    """

    name = "postgresql"
    placeholder_style = "numeric"
    dialect = "postgres"
    can_prepare = True
    statement_cache = "server_prepared"
    undoes_timed_out = False
    routines_change_session = True
    tracks_positions = True
    max_useful_connections: int | None = None

    async def drain(self, timeout: float) -> None:
        """Return at once: a terminated asyncpg connection holds nothing of the loop."""
        return None

    async def connect(self, params: ConnectParams, statement_cache_size: int) -> PostgresConnection:
        """Open one connection within ``params.connect_timeout``; raise ConnectionFailed.

        Also finds out whether a proxy sits in front of the server (see the module doc).
        """
        extra: dict[str, Any] = {}
        tls = {k: v for k, v in params.options.items() if k in _TLS_OPTIONS}
        if params.ssl_password is not None:  # read from its holder only here
            tls["sslpassword"] = params.ssl_password.reveal()
        if tls:  # libpq's TLS options, which asyncpg reads from a DSN (the fields below win)
            extra["dsn"] = "postgresql://?" + urlencode(tls)
        conn: Any = None
        try:
            conn = await asyncpg.connect(
                host=params.host,
                port=params.port,
                user=params.user,
                password=params.password,
                database=params.database,
                timeout=params.connect_timeout,
                statement_cache_size=0,
                server_settings={"application_name": params.application_name},
                **extra,
            )
            # A proxy answers the startup itself and must invent the BackendKeyData pid
            # (PgBouncer sends a random cancel key); the backend that runs the statement
            # knows its own. Differing pids: the server connection may change between
            # statements, so named statements must not be used. One round trip.
            backend_pid = await conn.fetchval(
                "SELECT pg_backend_pid()", timeout=params.connect_timeout
            )
        except BaseException as exc:  # cancelled during the check too: never leak the socket
            if conn is not None:
                conn.terminate()
            if isinstance(exc, _CONNECT_ERRORS):
                message = connect_failure(params.describe(), exc, params.options)
                raise ConnectionFailed(message) from exc
            raise
        proxied = backend_pid != conn.get_server_pid()
        return PostgresConnection(conn, statement_cache_size, behind_proxy=proxied)


DRIVER = PostgresDriver()
