"""PostgreSQL driver on asyncpg: statements prepared on the server and reused per connection."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import asyncpg

from kailash_nodes.config import ConnectParams
from kailash_nodes.drivers.base import Rows
from kailash_nodes.errors import ConnectionFailed, ParameterError, QueryError

__all__ = ["DRIVER", "PostgresConnection", "PostgresDriver"]

# Clears what a caller may have left on the session; run only when a release is dirty.
# DEALLOCATE ALL drops the server side of our statement cache too, so the cache is cleared.
_RESET_SQL = (
    "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL; "
    "DISCARD TEMP; DISCARD SEQUENCES; DEALLOCATE ALL;"
)
# SQLSTATEs meaning the session is gone: class 08, and operator intervention on it.
_FATAL_STATES = frozenset({"57P01", "57P02", "57P03", "57P05"})
_VALUE_IN_MESSAGE = re.compile(r"^(invalid input for query argument \$\d+): .*? \((.*)\)$", re.S)
_RETURNS_ROWS = re.compile(
    r"^\s*(\(\s*)*(SELECT|WITH|VALUES|TABLE|SHOW|EXPLAIN|FETCH)\b|\bRETURNING\b", re.I
)
_COUNT_MISMATCH = re.compile(r"the server expects \d+ arguments? for this query")


class PostgresConnection:
    """An asyncpg connection with its own bounded cache of prepared statements."""

    __slots__ = ("_conn", "_max", "_stmts", "server_prepare", "statements_prepared")

    def __init__(self, conn: Any, cache_size: int) -> None:
        self._conn = conn
        # query text -> (PreparedStatement, whether it returns rows), least recently used
        # first. An OrderedDict rather than cachetools.LRUCache: a hit is on every query's
        # path, and OrderedDict's get/move_to_end are C calls (measured ~1 µs less a query).
        self._stmts: OrderedDict[str, tuple[Any, bool]] = OrderedDict()
        self._max = max(cache_size, 1)
        self.server_prepare = cache_size > 0
        self.statements_prepared = 0

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement on a prepared statement; retry once if its plan went stale."""
        stmts = self._stmts
        cached = stmts.get(text)
        if cached is not None and cached[1] and mode == "all":  # the hot path: one frame
            stmts.move_to_end(text)
            try:
                records = await cached[0].fetch(*args, timeout=timeout)
            except asyncpg.InvalidCachedStatementError:
                pass  # re-prepared below
            except Exception as exc:
                raise self._wrap(exc) from exc
            else:
                return [dict(r) for r in records], len(records)
        try:
            try:
                return await self._fetch(text, args, mode, size, timeout)
            except asyncpg.InvalidCachedStatementError:
                self._stmts.pop(text, None)
                if self._conn.is_in_transaction():
                    raise
                return await self._fetch(text, args, mode, size, timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc

    async def _fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        if not self.server_prepare:
            return await self._fetch_unprepared(text, args, mode, size, timeout)
        cached = self._stmts.get(text)
        if cached is None:
            cached = await self._prepare(text, timeout)
        else:
            self._stmts.move_to_end(text)
        stmt, returns_rows = cached
        if not returns_rows:  # a command without result columns: count from its tag
            await stmt.fetch(*args, timeout=timeout)
            return (None if mode == "one" else []), _affected(stmt.get_statusmsg())
        if mode == "one":
            row = await stmt.fetchrow(*args, timeout=timeout)
            return (dict(row) if row is not None else None), (0 if row is None else 1)
        records = await stmt.fetch(*args, timeout=timeout)
        rows = [dict(r) for r in (records if mode == "all" else records[:size])]
        return rows, len(rows)

    async def _prepare(self, text: str, timeout: float | None) -> tuple[Any, bool]:
        # An explicit name: with asyncpg's own cache off, an unnamed prepare would make
        # every execution send its own Parse (a second message per query).
        self.statements_prepared += 1
        # Names unique per connection object: behind a transaction-pooling proxy (where
        # prepare must be off) a stray reuse then fails loudly instead of binding another
        # client's statement of the same name.
        name = f"kn_{id(self):x}_{self.statements_prepared}"
        stmt = await self._conn.prepare(text, name=name, timeout=timeout)
        cached = self._stmts[text] = (stmt, bool(stmt.get_attributes()))
        if len(self._stmts) > self._max:  # evict the least recently used; asyncpg closes it
            self._stmts.popitem(last=False)
        return cached

    async def prepare(self, text: str, timeout: float | None) -> bool:
        """Prepare ``text`` now (a predicted statement); False if cached or prepare is off."""
        if not self.server_prepare or text in self._stmts:
            return False
        try:
            await self._prepare(text, timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc
        return True

    async def _fetch_unprepared(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        # Unnamed statements (PgBouncer-safe): no result description before running, so a
        # statement that cannot return rows runs as a command, for its row count.
        if not _RETURNS_ROWS.search(text):
            status = await self._conn.execute(text, *args, timeout=timeout)
            return (None if mode == "one" else []), _affected(status)
        records = await self._conn.fetch(text, *args, timeout=timeout)
        rows = [dict(r) for r in records]
        if mode == "one":
            return (rows[0] if rows else None), min(len(rows), 1)
        rows = rows if mode == "all" else rows[:size]
        return rows, len(rows)

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """Run a multi-statement string with the simple query protocol."""
        try:
            status = await self._conn.execute(text, timeout=timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc
        return [], _affected(status)

    def in_transaction(self) -> bool:
        """Return asyncpg's client-side view of the transaction status."""
        return bool(self._conn.is_in_transaction())

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

    def resize_statement_cache(self, size: int) -> None:
        """Keep at most ``size`` statements, the most recently used; 0 turns prepare off."""
        self._max = max(size, 1)
        while len(self._stmts) > (size if size > 0 else 0):
            self._stmts.popitem(last=False)
        self.server_prepare = size > 0

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
        """Drop locks, cursors, listeners, settings, temp tables and prepared statements."""
        try:
            if self._conn.is_in_transaction():
                await self._conn.execute("ROLLBACK", timeout=timeout)
            await self._conn.execute(_RESET_SQL, timeout=timeout)
        except Exception as exc:
            raise self._wrap(exc) from exc
        self._stmts.clear()
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


def _affected(status: str) -> int:
    """Return the row count of a command tag.

    >>> _affected("INSERT 0 3"), _affected("UPDATE 2"), _affected("CREATE TABLE")
    (3, 2, 0)
    """
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class PostgresDriver:
    """Opens asyncpg connections; asyncpg's own statement cache is off (ours replaces it)."""

    name = "postgresql"
    placeholder_style = "numeric"

    async def connect(self, params: ConnectParams, statement_cache_size: int) -> PostgresConnection:
        """Open one connection within ``params.connect_timeout``; raise ConnectionFailed."""
        extra: dict[str, Any] = {}
        if "sslmode" in params.options:
            extra["ssl"] = params.options["sslmode"]
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
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConnectionFailed(
                f"could not connect to {params.describe()}: {type(exc).__name__}: {exc}"
            ) from exc
        return PostgresConnection(conn, statement_cache_size)


DRIVER = PostgresDriver()
