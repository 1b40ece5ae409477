"""MySQL / MariaDB driver on aiomysql (autocommit on, like the other backends).

aiomysql has no server-side prepared statements (it speaks only the text protocol, not
the binary one COM_STMT_PREPARE/EXECUTE needs): statements are sent as text with the
parameters escaped client-side, which ``server_prepare = False`` reports honestly. Nothing
is cached per connection either; what is reused is the router's per-text work
(``statement_cache = "client_text"``).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import re
import ssl
from collections.abc import Mapping
from typing import Any, cast

import aiomysql
import pymysql

from kailash_nodes.config import ConnectParams
from kailash_nodes.drivers.base import (
    ConnectionLimit,
    CursorReads,
    DriverConnection,
    FunctionCatalog,
    NoReplication,
    NoServerPrepare,
    Rows,
    connect_failure,
    is_query,
    read_limited,
    shape,
    too_large,
)
from kailash_nodes.errors import ConfigError, ConnectionFailed, ParameterError, QueryError
from kailash_nodes.secret import Secret

__all__ = ["DRIVER", "MySQLConnection", "MySQLCursor", "MySQLDriver"]

# Client error codes that mean the connection is gone (CR_* in MySQL's errmsg.h), plus
# the server's "connection was killed" (ER_CONNECTION_KILLED, ER_SERVER_SHUTDOWN).
_LOST = frozenset({2003, 2006, 2013, 2014, 2045, 2055, 1927, 1053})
# Parameter types pymysql escapes faithfully (anything else it would send as str(value)).
_SENDABLE = frozenset({int, float, str, bytes, bool, type(None)})
# An explicit LIMIT overrides sql_select_limit: such a query goes through a cursor instead.
_LIMIT = re.compile(r"\bLIMIT\b", re.I)
# Every session counts (processlist has no program name; performance_schema's connect
# attributes are off by default on MariaDB): the pool's own connections are subtracted.
_LIMIT_SQL = (
    "SELECT @@max_connections AS max_connections, "
    "(SELECT COUNT(*) FROM information_schema.processlist) AS everyone"
)
# Stored functions with their declared data access (builtins are not listed here: the
# classifier knows them). MySQL has no overloads; a bare call resolves in the default
# database, so only its functions get a bare name.
_FUNCTIONS_SQL = (
    "SELECT LOWER(ROUTINE_SCHEMA) AS db, LOWER(ROUTINE_NAME) AS name, "
    "SQL_DATA_ACCESS AS access, COALESCE(ROUTINE_SCHEMA = DATABASE(), 0) AS here "
    "FROM information_schema.ROUTINES WHERE ROUTINE_TYPE = 'FUNCTION'"
)
_READ_ONLY_ACCESS = frozenset({"NO SQL", "READS SQL DATA"})
_SENDABLE_BASES = (
    int, float, str, bytes, bytearray, decimal.Decimal, datetime.date, datetime.time,
    datetime.timedelta, list, tuple, set, frozenset,
)  # fmt: skip


class MySQLConnection(CursorReads, NoServerPrepare):
    """An aiomysql connection with one reusable dict cursor."""

    __slots__ = ("_conn", "_cursor", "mariadb", "server_prepare")

    client_statement_cache = False  # nothing is cached per connection

    def __init__(self, conn: Any, cursor: Any) -> None:
        self._conn = conn
        self._cursor = cursor
        self.server_prepare = False
        #: MariaDB (``SET STATEMENT ... FOR`` bounds a query's rows on the server)
        self.mariadb = "mariadb" in str(conn.get_server_info()).lower()

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement; the whole result is read (aiomysql buffers it), except for
        "one" and "many" of a query: an unbuffered cursor, no more rows held than asked."""
        for i, value in enumerate(args):  # inline: a call costs the hot path ~60 ns
            if type(value) not in _SENDABLE and not isinstance(value, _SENDABLE_BASES):
                # pymysql would silently send str(value): refuse instead.
                raise _unsendable(i, value)
        if mode != "all":
            return await self.fetch_some(text, args, mode, size, timeout)
        cur = self._cursor
        try:
            async with asyncio.timeout(timeout):
                await cur.execute(text, args)
                rows = await cur.fetchall() if cur.description else None
        except Exception as exc:
            raise self._wrap(exc) from exc
        if rows is None:
            return [], max(cur.rowcount, 0)
        data = list(rows)
        return data, len(data)

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """Run a multi-statement string (the connection allows multi-statements)."""
        cur = self._cursor
        try:
            async with asyncio.timeout(timeout):
                await cur.execute(text, ())  # text comes rewritten: "%" already doubled
                affected = max(cur.rowcount, 0)
                while await cur.nextset():
                    affected = max(cur.rowcount, 0)
        except Exception as exc:
            raise self._wrap(exc) from exc
        return [], affected

    async def fetch_limited(
        self,
        text: str,
        args: tuple[Any, ...],
        mode: str,
        size: int,
        max_rows: int,
        timeout: float | None,
    ) -> Rows:
        """Run one statement, a query with at most ``max_rows + 1`` rows sent.

        On MariaDB, one round trip: ``SET STATEMENT sql_select_limit=max_rows+1 FOR``
        the query (no session state is changed). Elsewhere, and for a query with its own
        ``LIMIT`` (which wins over sql_select_limit), an unbuffered cursor whose unread
        rows are drained past the limit (bounded memory, not time).
        """
        if not is_query(text):
            return await self.fetch(text, args, mode, size, timeout)
        if not self.mariadb or _LIMIT.search(text):
            return await read_limited(self, text, args, mode, size, max_rows, timeout)
        limited = f"SET STATEMENT sql_select_limit={int(max_rows) + 1} FOR {text}"
        rows, count = await self.fetch(limited, args, "all", size, timeout)
        if count > max_rows:
            raise too_large(max_rows)
        return shape(rows, count, mode, size)  # type: ignore[arg-type]  # "all": a list

    async def open_cursor(
        self, text: str, args: tuple[Any, ...], timeout: float | None
    ) -> MySQLCursor:
        """Send ``text`` on an unbuffered cursor (``SSDictCursor``): rows stay on the wire
        until fetched. Raises QueryError, ConnectionFailed or ParameterError."""
        _check_args(args)
        cur = await self._conn.cursor(aiomysql.SSDictCursor)
        try:
            async with asyncio.timeout(timeout):
                await cur.execute(text, args)
        except Exception as exc:
            raise self._wrap(exc) from exc
        return MySQLCursor(self, cur)

    def in_transaction(self) -> bool:
        """Return the server status flag from the last reply (no round trip)."""
        return bool(self._conn.get_transaction_status())

    def is_closed(self) -> bool:
        """Return whether aiomysql has closed the connection."""
        return bool(self._conn.closed)

    async def ping(self, timeout: float) -> None:
        """Send COM_PING; raise ConnectionFailed if the connection is dead."""
        try:
            async with asyncio.timeout(timeout):
                await self._conn.ping(reconnect=False)
        except Exception as exc:
            self._conn.close()
            raise ConnectionFailed(f"MySQL connection check failed: {exc}") from exc

    async def rollback(self, timeout: float) -> None:
        """Roll back the open transaction."""
        try:
            async with asyncio.timeout(timeout):
                await self._conn.rollback()
        except Exception as exc:
            raise self._wrap(exc) from exc

    async def reset(self, timeout: float) -> bool:
        """Return False: aiomysql cannot send COM_RESET_CONNECTION, so replace instead."""
        return False

    async def close(self, timeout: float) -> None:
        """Send COM_QUIT within ``timeout``, else drop the socket."""
        try:
            async with asyncio.timeout(timeout):
                await self._conn.ensure_closed()
        except Exception:
            self._conn.close()

    def terminate(self) -> None:
        """Drop the socket at once."""
        self._conn.close()

    def _wrap(self, exc: BaseException) -> Exception:
        if isinstance(exc, TimeoutError):
            self._conn.close()  # the reply is still on the wire: the protocol is out of step
            return QueryError("query timed out", error_type="QueryTimeout")
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code in _LOST or isinstance(exc, OSError | pymysql.err.InterfaceError):
            self._conn.close()
            return ConnectionFailed(f"MySQL connection lost: {exc}")
        if isinstance(exc, TypeError | ValueError):
            return ParameterError(f"query parameters could not be sent: {exc}")
        if isinstance(exc, pymysql.MySQLError):
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            return QueryError(f"({code}) {message}", error_type=type(exc).__name__)
        if self._conn.closed:
            return ConnectionFailed(f"MySQL connection failed: {exc}")
        return QueryError(str(exc), error_type=type(exc).__name__)


class MySQLCursor:
    """An unbuffered result: each batch is read off the wire as it is asked for."""

    __slots__ = ("_cur", "_owner")

    def __init__(self, owner: MySQLConnection, cur: Any) -> None:
        self._owner = owner
        self._cur = cur

    async def fetch(self, size: int, timeout: float | None) -> list[dict[str, Any]]:
        """Return up to ``size`` next rows."""
        try:
            async with asyncio.timeout(timeout):
                return list(await self._cur.fetchmany(size))
        except Exception as exc:
            raise self._owner._wrap(exc) from exc

    async def close(self, timeout: float | None, *, commit: bool) -> None:
        """Read and drop the rows still on the wire (MySQL cannot stop a result midway
        without killing the statement), so the connection is in step again; ``commit``
        does not apply (no transaction was opened)."""
        if self._owner._conn.closed:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._cur.close()
        except Exception as exc:
            raise self._owner._wrap(exc) from exc


def _check_args(args: tuple[Any, ...]) -> None:
    """Refuse a parameter pymysql would silently send as ``str(value)``."""
    for i, value in enumerate(args):
        if type(value) not in _SENDABLE and not isinstance(value, _SENDABLE_BASES):
            raise _unsendable(i, value)


def _unsendable(i: int, value: Any) -> ParameterError:
    return ParameterError(
        f"parameter {i + 1} has type {type(value).__name__}, which MySQL cannot take"
    )


def _tls_context(
    options: Mapping[str, str], ssl_password: Secret | None = None
) -> ssl.SSLContext | None:
    """Return the TLS context the DSN's options ask for, with libpq's names (as for
    PostgreSQL): ``sslmode`` ``disable`` (the default; ``allow``/``prefer`` do the same),
    ``require`` (encrypted, not verified), ``verify-ca``, ``verify-full`` (also the host
    name); ``sslrootcert`` (CA file), ``sslcert``/``sslkey`` (client certificate).

    Raises ConfigError for an unknown ``sslmode``, OSError naming the files when one cannot
    be loaded (the caller wraps it in ConnectionFailed).

    >>> _tls_context({}) is None, _tls_context({"sslmode": "prefer"}) is None
    (True, True)
    >>> ctx = _tls_context({"sslmode": "require"})
    >>> ctx.verify_mode == ssl.CERT_NONE, ctx.check_hostname
    (True, False)
    >>> _tls_context({"sslmode": "verify-full"}).check_hostname
    True
    """
    mode = options.get("sslmode", "disable")
    if mode in ("disable", "allow", "prefer"):
        return None
    if mode not in ("require", "verify-ca", "verify-full"):
        raise ConfigError(
            "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full "
            f"(got sslmode={mode!r})"
        )
    try:
        ctx = ssl.create_default_context(cafile=options.get("sslrootcert"))
        if "sslcert" in options:
            key_password = None if ssl_password is None else ssl_password.reveal()
            ctx.load_cert_chain(options["sslcert"], options.get("sslkey"), key_password)
    except OSError as exc:  # the error itself does not say which file
        files = {k: options[k] for k in ("sslrootcert", "sslcert", "sslkey") if k in options}
        raise OSError(f"TLS files {files} could not be loaded: {exc}") from exc
    ctx.check_hostname = mode == "verify-full"
    if mode == "require":
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MySQLDriver(NoReplication):
    """Opens aiomysql connections in autocommit mode with utf8mb4.

    Replicas are checked for liveness only and there are no positions (GTIDs are not read:
    see docs/backends.md).
    """

    name = "mysql"
    placeholder_style = "format"
    dialect = "mysql"
    can_prepare = False
    statement_cache = "client_text"
    undoes_timed_out = False
    routines_change_session = False
    tracks_positions = False
    max_useful_connections: int | None = None

    async def connection_limit(
        self,
        conn: DriverConnection,
        timeout: float | None,
        *,
        application_name: str,
        own_connections: int,
    ) -> ConnectionLimit | None:
        """Return ``@@max_connections`` (nothing reserved) and every session in the
        processlist but the pool's ``own_connections``."""
        data, _ = await conn.fetch(_LIMIT_SQL, (), "one", 1, timeout)
        row = cast(dict[str, Any], data)  # a SELECT without FROM: one row
        others = int(row["everyone"]) - own_connections
        return ConnectionLimit(int(row["max_connections"]), 0, others)

    async def function_catalog(
        self, conn: DriverConnection, timeout: float | None
    ) -> FunctionCatalog | None:
        """Read information_schema.ROUTINES: a stored function a replica may run is one
        declared ``NO SQL`` or ``READS SQL DATA`` (the declaration is trusted, not checked
        by the server)."""
        data, _ = await conn.fetch(_FUNCTIONS_SQL, (), "all", 0, timeout)
        verdicts: dict[str, str | None] = {}
        for row in cast(list[dict[str, Any]], data):
            access = str(row["access"])
            why = None if access in _READ_ONLY_ACCESS else f"SQL_DATA_ACCESS {access}"
            names = [f"{row['db']}.{row['name']}"] + ([row["name"]] if row["here"] else [])
            verdicts.update(dict.fromkeys(names, why))
        safe = frozenset(n for n, why in verdicts.items() if why is None)
        unsafe = {n: why for n, why in verdicts.items() if why is not None}
        return FunctionCatalog("information_schema.ROUTINES", safe, unsafe, frozenset())

    async def connect(self, params: ConnectParams, statement_cache_size: int) -> MySQLConnection:
        """Open one connection within ``params.connect_timeout``; raise ConnectionFailed."""
        try:
            async with asyncio.timeout(params.connect_timeout):
                conn = await aiomysql.connect(
                    host=params.host or "localhost",
                    port=params.port or 3306,
                    user=params.user,
                    password=params.password or "",
                    db=params.database,
                    autocommit=True,
                    charset=params.options.get("charset", "utf8mb4"),
                    client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
                    connect_timeout=params.connect_timeout,
                    program_name=params.application_name,
                    ssl=_tls_context(params.options, params.ssl_password),
                )
                cursor = await conn.cursor(aiomysql.DictCursor)
        except (OSError, TimeoutError, pymysql.MySQLError) as exc:
            raise ConnectionFailed(connect_failure(params.describe(), exc, params.options)) from exc
        return MySQLConnection(conn, cursor)


DRIVER = MySQLDriver()
