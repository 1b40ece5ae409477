"""PostgreSQL's catalog reads: replica status, WAL positions, the connection budget, and
which functions a standby may run.

Kept apart from ``postgres.py`` because nothing here needs asyncpg: each read runs on an
open connection through the ``DriverConnection`` protocol (prepared and cached there like
any statement), so ``lsn_to_int`` can be imported without the driver library.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, cast

from kailash_nodes.drivers.base import (
    ConnectionLimit,
    DriverConnection,
    FunctionCatalog,
    ReplicaStatus,
)

__all__ = [
    "STANDBY_READERS",
    "STANDBY_UNSAFE",
    "STANDBY_UNSAFE_PREFIXES",
    "PostgresCatalog",
    "lsn_to_int",
]

# Measured on the standby: lag 0 when everything received is replayed (and a WAL receiver
# runs), else the age of the last replayed commit; the replay LSN is what read-your-writes
# compares against. A primary that went through crash recovery keeps answering the LSN
# that recovery stopped at (docs: "remains static"), so only a server in recovery reports one.
_REPLICA_SQL = (
    "SELECT pg_is_in_recovery() AS standby, "
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS replay_lsn, "
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text END AS receive_lsn, "
    "EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS streaming, "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
    "AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0.0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag"
)
# A streaming standby with WAL received but not replayed yet is read again after this
# pause: the age of the last replayed commit overstates its lag when what arrived is not a
# commit (the standby snapshot an idle primary logs every 15 s, a checkpoint) after a quiet
# spell, and a busy standby can be caught in that moment.
CATCH_UP_PAUSE: Final = 0.05
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


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Functions a standby may not run although pg_proc may call them stable or immutable and
# parallel safe, or that act on the server that runs them rather than read it (the sources,
# and how the list was chosen: docs/classification.md, "The server's catalog"). Applied to
# every schema; most are volatile anyway, the list keeps them out whatever a server says.
STANDBY_UNSAFE: Final = _names(
    """pg_backup_start pg_backup_stop pg_switch_wal pg_create_restore_point pg_current_wal_lsn
    pg_current_wal_insert_lsn pg_current_wal_flush_lsn pg_walfile_name pg_walfile_name_offset
    pg_promote pg_wal_replay_pause pg_wal_replay_resume
    pg_cancel_backend pg_terminate_backend pg_reload_conf pg_rotate_logfile
    pg_log_backend_memory_contexts
    pg_create_physical_replication_slot pg_create_logical_replication_slot
    pg_drop_replication_slot pg_copy_physical_replication_slot
    pg_copy_logical_replication_slot pg_replication_slot_advance
    pg_stat_clear_snapshot pg_stat_force_next_flush
    txid_current txid_current_if_assigned pg_current_xact_id pg_current_xact_id_if_assigned
    pg_export_snapshot pg_import_system_collations pg_nextoid
    nextval setval currval lastval set_config pg_notify
    brin_summarize_new_values brin_summarize_range brin_desummarize_range
    gin_clean_pending_list"""
)
# LIKE patterns of the same: logical decoding and replication origins, statistics resets,
# advisory locks, large objects, binary-upgrade support, dblink (writes elsewhere).
STANDBY_UNSAFE_PREFIXES: Final = (
    "pg\\_logical\\_%",
    "pg\\_replication\\_origin\\_%",
    "pg\\_stat\\_reset%",
    "pg\\_advisory\\_%",
    "pg\\_try\\_advisory\\_%",
    "lo\\_%",
    "binary\\_upgrade\\_%",
    "dblink%",
)
# pg_catalog functions that only read and run on a standby (checked on one), though
# pg_proc calls them volatile or parallel restricted: recovery information, the server's
# address, start and configuration times, object sizes.
STANDBY_READERS: Final = _names(
    """pg_is_in_recovery pg_last_wal_receive_lsn pg_last_wal_replay_lsn
    pg_last_xact_replay_timestamp pg_is_wal_replay_paused pg_get_wal_replay_pause_state
    inet_server_addr inet_server_port pg_conf_load_time pg_postmaster_start_time
    pg_jit_available version pg_database_size pg_relation_size pg_total_relation_size
    pg_table_size pg_indexes_size pg_tablespace_size"""
)
# One row per name a call may use: "schema.fn" for every function, and the bare name for
# functions in the connection's search path (pg_catalog's: bare only). A name is safe only
# when every function behind it is; "why" lists what the others are.
_FUNCTIONS_SQL = """
WITH f AS (
  SELECT lower(p.proname) AS name, lower(n.nspname) AS schema,
         n.nspname = 'pg_catalog' AS builtin,
         n.nspname = ANY (current_schemas(true)) AS searched,
         CASE
           WHEN p.proname = ANY ($1::text[]) OR p.proname LIKE ANY ($2::text[])
             THEN 'cannot run on a standby, or acts on the server that runs it'
           WHEN n.nspname = 'pg_catalog' AND p.proname = ANY ($3::text[]) THEN NULL
           WHEN p.prokind = 'p' THEN 'a procedure'
           WHEN p.prokind <> 'f' AND n.nspname <> 'pg_catalog'
             THEN 'a user-defined aggregate or window function'
           WHEN p.provolatile = 'v' THEN 'volatile'
           WHEN p.proparallel = 'r' THEN 'parallel restricted'
           WHEN p.proparallel <> 's' THEN 'parallel unsafe'
         END AS why
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname NOT LIKE 'pg\\_toast%'
), k AS (
  SELECT CASE WHEN builtin THEN name ELSE schema || '.' || name END AS key, builtin, why
  FROM f
  UNION ALL
  SELECT name, builtin, why FROM f WHERE searched AND NOT builtin
)
SELECT key, bool_and(why IS NULL) AS safe, bool_and(builtin) AS builtin,
       string_agg(DISTINCT why, ', ' ORDER BY why) AS why
FROM k GROUP BY key
"""


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
        it cannot be measured: no transaction replayed yet).

        A streaming standby that has received WAL it has not replayed is read once more
        after `CATCH_UP_PAUSE`: when it has replayed all it had received by then, its lag
        is the time that took (at most the pause and the read), not the age of its last
        replayed commit, which after a quiet spell on the primary can be minutes.
        """
        row = await _row(conn, _REPLICA_SQL, timeout)
        position = lsn_to_int(row["replay_lsn"]) if row["replay_lsn"] else None
        lag = float(row["lag"] or 0.0)
        if lag > CATCH_UP_PAUSE and row["streaming"] and row["receive_lsn"] and position:
            received = lsn_to_int(row["receive_lsn"])
            if received > position:
                began = time.monotonic()
                await asyncio.sleep(CATCH_UP_PAUSE)
                replayed = await self.replay_position(conn, timeout)
                if replayed is not None and replayed >= received:
                    position, lag = replayed, min(lag, time.monotonic() - began)
        return ReplicaStatus(bool(row["standby"]), position, lag)

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

    async def function_catalog(
        self, conn: DriverConnection, timeout: float | None
    ) -> FunctionCatalog | None:
        """Read pg_proc: a function a standby may run is a plain function (or one of
        pg_catalog's aggregates and window functions), stable or immutable, parallel
        safe and not in ``STANDBY_UNSAFE``; or one of pg_catalog's ``STANDBY_READERS``."""
        args = (list(STANDBY_UNSAFE), list(STANDBY_UNSAFE_PREFIXES), list(STANDBY_READERS))
        data, _ = await conn.fetch(_FUNCTIONS_SQL, args, "all", 0, timeout)
        rows = cast(list[dict[str, Any]], data)
        safe = frozenset(r["key"] for r in rows if r["safe"])
        unsafe = {r["key"]: r["why"] for r in rows if not r["safe"]}
        builtin = frozenset(r["key"] for r in rows if not r["safe"] and r["builtin"])
        return FunctionCatalog("pg_proc", safe, unsafe, builtin)
