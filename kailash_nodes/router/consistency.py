"""Read-your-writes: what a session's next replica read must see after its writes.

Where the driver tracks positions (``Driver.tracks_positions``: PostgreSQL's WAL LSN), a
write leaves the primary's ``write_position`` as the session's token, and a replica serves
the session only once its ``replay_position`` has reached it. The position is read on
the connection that wrote, after the write's answer; if that read fails, the write still
stands (its answer is the outcome) and the token is *pending*: any position read later on
any primary connection is at or past the write, so one is read before the session's next
replica read. Backends without positions get a time window instead: the session reads
the primary until a replica within the lag threshold must have caught up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kailash_nodes.drivers import catalog_read
from kailash_nodes.errors import ConnectionFailed, PoolTimeout, QueryError, TooManyRequests
from kailash_nodes.pool import ConnectionPool, PooledConnection
from kailash_nodes.router.replicas import ReplicaState
from kailash_nodes.router.sessions import Session

__all__ = ["ReadYourWrites"]

logger = logging.getLogger("kailash_nodes.router")


class ReadYourWrites:
    """Tokens after a session's writes and the check that a replica has caught up.

    ``track_lsn``: the driver tracks positions and there are replicas; else, with replicas, a
    ``window`` of seconds on the primary after each write. ``waits`` counts replica
    position checks, ``fallbacks`` reads sent to the primary for lack of a position.
    """

    __slots__ = ("fallbacks", "primary", "replicas", "timeout", "track_lsn", "waits", "window")

    def __init__(
        self,
        primary: ConnectionPool,
        *,
        track_lsn: bool,
        replicas: bool,
        window: float,
        timeout: float,
    ) -> None:
        self.primary = primary
        self.track_lsn = track_lsn
        self.replicas = replicas
        self.window = window
        self.timeout = timeout
        self.waits = 0
        self.fallbacks = 0

    async def note_write(
        self, session: Session, pool: ConnectionPool, pc: PooledConnection
    ) -> None:
        """Remember what the session's next replica read must see; never raises for it.

        With positions: the write position, read on ``pc`` (the connection that wrote). If that
        read fails (the connection died after the write's answer), the token is pending.
        """
        if not self.track_lsn:
            self.note_unknown_write(session)
            return
        session.lsn_pending = True  # what a failed or cancelled read below leaves
        try:
            lsn = await _write_position(pool, pc)
        except (ConnectionFailed, QueryError) as exc:
            logger.debug("write position after a write not read (read later): %s", exc)
            return
        session.write_lsn = max(session.write_lsn, lsn)
        session.lsn_pending = False

    def note_unknown_write(self, session: Session) -> None:
        """A write may have happened at a position not known: read-your-writes must hold."""
        if self.track_lsn:
            session.lsn_pending = True
        elif self.replicas:
            session.primary_until = time.monotonic() + self.window

    async def position_known(self, session: Session) -> bool:
        """Return whether the session's token is known, reading a pending one from a
        primary connection (acquire limit: the pool's timeout, at most 2 s). False: the
        read goes to the primary (counted in ``fallbacks``)."""
        if not session.lsn_pending:
            return True
        pool = self.primary
        try:
            async with pool.connection(timeout=min(pool.config.timeout, 2.0)) as pc:
                lsn = await _write_position(pool, pc)
        except (ConnectionFailed, PoolTimeout, TooManyRequests, QueryError) as exc:
            logger.debug("write position for session %s not read: %s", session.id, exc)
            self.fallbacks += 1
            return False
        session.write_lsn = max(session.write_lsn, lsn)
        session.lsn_pending = False
        return True

    async def caught_up(self, state: ReplicaState, pc: PooledConnection, token: int) -> bool:
        """Wait up to ``timeout`` until the replica (``pc`` is one of its connections) has
        replayed ``token``, polling every millisecond. Raises QueryError (the read was
        refused) or ConnectionFailed."""
        self.waits += 1
        deadline = time.monotonic() + self.timeout
        while True:
            pool = state.pool
            replayed = await catalog_read(
                pc, pool.driver.replay_position, pool.config.query_timeout
            )
            state.replay_lsn = max(state.replay_lsn, replayed or 0)
            if state.replay_lsn >= token:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.001)


async def _write_position(pool: ConnectionPool, pc: PooledConnection) -> int:
    """Read the write position on ``pc``, one of ``pool``'s connections."""
    return await catalog_read(pc, pool.driver.write_position, pool.config.query_timeout) or 0
