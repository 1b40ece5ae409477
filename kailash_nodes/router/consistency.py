"""Read-your-writes: what a token holder's next replica read must see after its writes.

A token (`kailash_nodes.context.Token`) is held by a router session (an explicit
``session_id``) or by the node executing in a workflow run (its `CausalContext`, which
starts from the tokens of the nodes upstream of it); the rules are the same for both.

Where the driver tracks positions (``Driver.tracks_positions``: PostgreSQL's WAL LSN), a
write leaves the primary's ``write_position`` as the holder's token, and a replica serves
the holder only once its ``replay_position`` has reached it. The position is read on
the connection that wrote, after the write's answer; if that read fails, the write still
stands (its answer is the outcome) and the token is *pending*: any position read later on
any primary connection is at or past the write, so one is read before the holder's next
replica read. Backends without positions get a time window instead: the holder reads
the primary until a replica within the lag threshold must have caught up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kailash_nodes.context import Token
from kailash_nodes.drivers import catalog_read
from kailash_nodes.errors import ConnectionFailed, PoolTimeout, QueryError, TooManyRequests
from kailash_nodes.pool import ConnectionPool, PooledConnection
from kailash_nodes.router.replicas import ReplicaState

__all__ = ["ReadYourWrites"]

logger = logging.getLogger("kailash_nodes.router")


class ReadYourWrites:
    """Tokens after writes and the check that a replica has caught up.

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

    async def note_write(self, token: Token, pool: ConnectionPool, pc: PooledConnection) -> None:
        """Remember what the token holder's next replica read must see; never raises for it.

        With positions: the write position, read on ``pc`` (the connection that wrote). If that
        read fails (the connection died after the write's answer), the token is pending.
        """
        if not self.track_lsn:
            self.note_unknown_write(token)
            return
        token.lsn_pending = True  # what a failed or cancelled read below leaves
        try:
            lsn = await _write_position(pool, pc)
        except (ConnectionFailed, QueryError) as exc:
            logger.debug("write position after a write not read (read later): %s", exc)
            return
        token.write_lsn = max(token.write_lsn, lsn)
        token.lsn_pending = False

    def note_unknown_write(self, token: Token) -> None:
        """A write may have happened at a position not known: read-your-writes must hold."""
        if self.track_lsn:
            token.lsn_pending = True
        elif self.replicas:
            token.primary_until = time.monotonic() + self.window

    async def position_known(self, token: Token) -> bool:
        """Return whether ``token``'s position is known, reading a pending one from a
        primary connection (acquire limit: the pool's timeout, at most 2 s). False: the
        read goes to the primary (counted in ``fallbacks``)."""
        if not token.lsn_pending:
            return True
        pool = self.primary
        try:
            async with pool.connection(timeout=min(pool.config.timeout, 2.0)) as pc:
                lsn = await _write_position(pool, pc)
        except (ConnectionFailed, PoolTimeout, TooManyRequests, QueryError) as exc:
            logger.debug("write position for a pending token not read: %s", exc)
            self.fallbacks += 1
            return False
        token.write_lsn = max(token.write_lsn, lsn)
        token.lsn_pending = False
        return True

    async def caught_up(self, state: ReplicaState, pc: PooledConnection, lsn: int) -> bool:
        """Wait up to ``timeout`` until the replica (``pc`` is one of its connections) has
        replayed ``lsn``, polling every millisecond. Raises QueryError (the read was
        refused) or ConnectionFailed."""
        self.waits += 1
        deadline = time.monotonic() + self.timeout
        while True:
            pool = state.pool
            replayed = await catalog_read(
                pc, pool.driver.replay_position, pool.config.query_timeout
            )
            state.replay_lsn = max(state.replay_lsn, replayed or 0)
            if state.replay_lsn >= lsn:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.001)


async def _write_position(pool: ConnectionPool, pc: PooledConnection) -> int:
    """Read the write position on ``pc``, one of ``pool``'s connections."""
    return await catalog_read(pc, pool.driver.write_position, pool.config.query_timeout) or 0
