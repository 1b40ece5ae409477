"""Sessions: a physical connection pinned to a session id, and read-your-writes tokens.

A session pins a primary connection from ``BEGIN`` until ``COMMIT``/``ROLLBACK``, or from a
session-state statement (``SET``, ``LISTEN``, a temp table) until ``end_session`` or until
it sits idle past the timeout; an abandoned session is rolled back and its connection
returned by the reaper. Statements of one session run one at a time (a lock per session).
"""

from __future__ import annotations

import asyncio
import logging
import time

from kailash_nodes.background import Periodic
from kailash_nodes.pool import ConnectionPool, PooledConnection

__all__ = ["Session", "SessionTable"]

logger = logging.getLogger("kailash_nodes.router")


class Session:
    """One session's pinned connection (if any) and its consistency token."""

    __slots__ = (
        "conn", "expired", "id", "in_transaction", "last_used", "lock", "lsn_pending", "pool",
        "primary_until", "sticky", "write_lsn",
    )  # fmt: skip

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.conn: PooledConnection | None = None
        self.pool: ConnectionPool | None = None
        self.in_transaction = False
        self.sticky = False  # session state was set: keep the connection after a commit
        self.write_lsn = 0  # primary WAL position after this session's last write
        # A write happened (or may have) whose position is not known yet: read one from
        # any primary connection before the next replica read (it is at or past the write).
        self.lsn_pending = False
        self.primary_until = 0.0  # no WAL positions (MySQL, SQLite): read the primary until
        self.expired = False  # its transaction was rolled back by the reaper
        self.last_used = time.monotonic()
        self.lock = asyncio.Lock()

    @property
    def pinned(self) -> bool:
        """Return whether a connection is pinned to this session."""
        return self.conn is not None

    @property
    def tracked(self) -> bool:
        """Return whether the session carries read-your-writes state worth keeping."""
        return bool(self.write_lsn or self.lsn_pending or self.primary_until > time.monotonic())

    def forget_writes(self) -> None:
        """Drop the read-your-writes token, pending position and post-write window."""
        self.write_lsn = 0
        self.lsn_pending = False
        self.primary_until = 0.0


class SessionTable:
    """Sessions by id, with a reaper for abandoned ones."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.sessions: dict[str, Session] = {}
        self.expired = 0
        self._reaper = Periodic(
            "kailash_nodes-router:session-reaper",
            lambda: self.reap(time.monotonic()),
            lambda: min(self.timeout / 2, 1.0),
        )

    def get(self, session_id: str) -> Session:
        """Return the session, creating it on first use."""
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = Session(session_id)
        session.last_used = time.monotonic()
        return session

    def active_transactions(self) -> int:
        """Return how many sessions have an open transaction."""
        return sum(1 for s in self.sessions.values() if s.in_transaction)

    def pinned(self) -> int:
        """Return how many sessions hold a connection."""
        return sum(1 for s in self.sessions.values() if s.pinned)

    async def unpin(self, session_id: str, session: Session) -> None:
        """Return the session's connection to its pool (rolling back what is open).

        The session holds no connection from the first line on, whatever the release does:
        a dead connection is never kept (the pool replaces it on release).
        """
        conn, pool = session.conn, session.pool
        session.conn, session.pool = None, None
        session.in_transaction = session.sticky = False
        if not session.tracked:
            self.sessions.pop(session_id, None)
        if conn is not None and pool is not None and not conn.released:
            await pool.release(conn)

    def start(self) -> None:
        """Start the reaper, every ``min(timeout / 2, 1)`` s ±20% (idempotent)."""
        self._reaper.start()

    async def stop(self) -> None:
        """Stop the reaper and return every pinned connection."""
        await self._reaper.stop()
        for sid, session in list(self.sessions.items()):
            await self.unpin(sid, session)
        self.sessions.clear()

    async def reap(self, now: float) -> int:
        """Roll back and return sessions idle past the timeout; forget stale tokens.

        Also unpin, at once, a session whose pinned connection is known to be closed (its
        backend was terminated while idle): its transaction is lost, and it is marked so.
        Returns how many sessions holding a connection expired.
        """
        reaped = 0
        for sid, session in list(self.sessions.items()):
            if session.lock.locked():
                continue
            if now - session.last_used > self.timeout:
                reaped += await self._expire(sid, session, now)
            elif session.conn is not None and _closed(session.conn):
                async with session.lock:
                    if session.conn is not None and _closed(session.conn):
                        logger.warning("session %s: its connection closed while idle", sid)
                        await self._drop(sid, session, now)
        return reaped

    async def _expire(self, sid: str, session: Session, now: float) -> int:
        async with session.lock:  # a statement arriving now waits for the rollback
            pinned = session.pinned
            if pinned:
                logger.warning("session %s abandoned for %.0fs: rolling back", sid, self.timeout)
                self.expired += 1
            session.forget_writes()
            await self._drop(sid, session, now)
        return int(pinned)

    async def _drop(self, sid: str, session: Session, now: float) -> None:
        """Unpin; a transaction left open, or session state, gets a tombstone for one more
        timeout (a later statement would run without it)."""
        lost_transaction = session.in_transaction or session.sticky
        await self.unpin(sid, session)
        if lost_transaction:  # later statements fail until a BEGIN, a SET or end_session
            session.expired = True
            session.last_used = now
            self.sessions[sid] = session


def _closed(pc: PooledConnection) -> bool:
    """Return whether a pinned connection is known to be closed (no round trip)."""
    return pc.released or pc.connection.is_closed()
