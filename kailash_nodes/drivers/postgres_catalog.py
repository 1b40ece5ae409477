"""PostgreSQL's catalog reads: replica status, WAL positions, the connection budget.

Kept apart from ``postgres.py`` because nothing here needs asyncpg: each read runs on an
open connection through the ``DriverConnection`` protocol (prepared and cached there like
any statement), so ``lsn_to_int`` can be imported without the driver library.
"""

from __future__ import annotations

from typing import Any, cast

from kailash_nodes.drivers.base import ConnectionLimit, DriverConnection, ReplicaStatus

__all__ = ["PostgresCatalog", "lsn_to_int"]

# Measured on the standby: lag 0 when everything received is replayed (and a WAL receiver
# runs), else the age of the last replayed commit; the replay LSN is what read-your-writes
# compares against. A primary that went through crash recovery keeps answering the LSN
# that recovery stopped at (docs: "remains static"), so only a server in recovery reports one.
_REPLICA_SQL = (
    "SELECT pg_is_in_recovery() AS standby, "
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS replay_lsn, "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
    "AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0.0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag"
)
# The insert position, not the write position: with synchronous_commit=off a COMMIT is
# acknowledged before its record is written, and a token must still cover it.
_WRITE_SQL = "SELECT pg_current_wal_insert_lsn()::text AS lsn"
_REPLAY_SQL = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS lsn"
_LIMIT_SQL = (
    "SELECT current_setting('max_connections')::int AS max_connections, "
    "current_setting('superuser_reserved_connections')::int AS reserved, "
    "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
    "AND application_name IS DISTINCT FROM $1)::int AS others"
)


def lsn_to_int(lsn: str | None) -> int:
    """Return a PostgreSQL LSN ('16/B374D848') as an integer (0 for None).

    >>> lsn_to_int("0/10"), lsn_to_int("1/0") == 2**32, lsn_to_int(None)
    (16, True, 0)
    """
    if not lsn:
        return 0
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


async def _row(
    conn: DriverConnection, text: str, timeout: float | None, args: tuple[Any, ...] = ()
) -> dict[str, Any]:
    row, _ = await conn.fetch(text, args, "one", 1, timeout)
    return cast(dict[str, Any], row)  # these SELECTs without FROM return one row


class PostgresCatalog:
    """The catalog reads of the Driver protocol for PostgreSQL (a mixin of the driver)."""

    __slots__ = ()

    async def replica_status(
        self, conn: DriverConnection, timeout: float | None
    ) -> ReplicaStatus | None:
        """Return whether the server is in recovery, its replay LSN and its lag (0.0 when
        it cannot be measured: no transaction replayed yet)."""
        row = await _row(conn, _REPLICA_SQL, timeout)
        position = lsn_to_int(row["replay_lsn"]) if row["replay_lsn"] else None
        return ReplicaStatus(bool(row["standby"]), position, float(row["lag"] or 0.0))

    async def write_position(self, conn: DriverConnection, timeout: float | None) -> int | None:
        """Return ``pg_current_wal_insert_lsn()`` as an integer (QueryError on a standby)."""
        return lsn_to_int((await _row(conn, _WRITE_SQL, timeout))["lsn"])

    async def replay_position(self, conn: DriverConnection, timeout: float | None) -> int | None:
        """Return ``pg_last_wal_replay_lsn()`` as an integer (None on a primary, also one
        that went through crash recovery and still remembers where it stopped)."""
        lsn = (await _row(conn, _REPLAY_SQL, timeout))["lsn"]
        return lsn_to_int(lsn) if lsn else None

    async def connection_limit(
        self,
        conn: DriverConnection,
        timeout: float | None,
        *,
        application_name: str,
        own_connections: int,
    ) -> ConnectionLimit | None:
        """Return ``max_connections``, ``superuser_reserved_connections`` and the client
        backends whose ``application_name`` is not ours."""
        row = await _row(conn, _LIMIT_SQL, timeout, (application_name,))
        return ConnectionLimit(
            int(row["max_connections"]), int(row["reserved"]), int(row["others"])
        )
