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

from collections.abc import Iterable
from typing import Any, Protocol

from kailash_nodes.config import ConnectParams

__all__ = ["FETCH_MODES", "Driver", "DriverConnection", "NoServerPrepare", "Rows"]

FETCH_MODES = ("all", "one", "many")

# What a fetch returns: the data in the requested shape and the row count
# (rows returned for statements that return rows, rows affected for the others).
Rows = tuple["list[dict[str, Any]] | dict[str, Any] | None", int]


class DriverConnection(Protocol):
    """One open server connection, used by one caller at a time."""

    #: True when statements are prepared on the server and reused (asyncpg).
    server_prepare: bool

    async def fetch(
        self, text: str, args: tuple[Any, ...], mode: str, size: int, timeout: float | None
    ) -> Rows:
        """Run one statement; return its rows in ``mode`` shape and the row count."""
        ...

    async def execute_script(self, text: str, timeout: float | None) -> Rows:
        """Run a multi-statement string without parameters."""
        ...

    def in_transaction(self) -> bool:
        """Return whether a transaction is open, from client-side state (no round trip)."""
        ...

    def session_changed(self) -> bool:
        """Return whether the server reported a change of who the session runs as (role,
        session authorization) since it was clean; client-side, no round trip."""
        ...

    def has_statement(self, text: str) -> bool:
        """Return whether ``text`` is prepared on this connection (False without prepare)."""
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

    def resize_statement_cache(self, size: int) -> None:
        """Keep at most ``size`` prepared statements (0 turns server-side prepare off)."""
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


class Driver(Protocol):
    """A backend: its name, its placeholder style, and how to connect."""

    name: str
    #: target style for kailash_nodes.sql.rewrite: "numeric", "format" or "qmark"
    placeholder_style: str

    async def connect(self, params: ConnectParams, statement_cache_size: int) -> DriverConnection:
        """Open one connection; raise ConnectionFailed (or ConfigError) on failure."""
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

    def resize_statement_cache(self, size: int) -> None:
        """Do nothing: there is no cache of ours to resize."""
