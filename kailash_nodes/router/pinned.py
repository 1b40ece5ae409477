"""Statements of a session holding a pinned connection: a transaction or session state.

`PinnedSessions` is mixed into `QueryRouter` (engine.py): it pins a connection when a
statement starts a transaction or session state, runs the session's statements on it, and
unpins it when the transaction ends (or tombstones a session whose transaction died with
its connection). The router's own routing (`_stateless`, `_run`) is declared here and
defined in engine.py.
"""

from __future__ import annotations

from kailash_nodes.errors import ConnectionFailed, OutcomeUnknown, SessionError
from kailash_nodes.pool import ConnectionPool, PooledConnection
from kailash_nodes.router.call import COMMITS, ENDS, Call, Routed
from kailash_nodes.router.consistency import ReadYourWrites
from kailash_nodes.router.functions import FunctionRules
from kailash_nodes.router.sessions import Session, SessionTable
from kailash_nodes.sql import Category, Classification

__all__ = ["PinnedSessions"]


class PinnedSessions:
    """The session half of `QueryRouter` (see the module docstring)."""

    primary: ConnectionPool
    sessions: SessionTable
    consistency: ReadYourWrites
    functions: FunctionRules

    async def _stateless(self, call: Call) -> Routed:
        raise NotImplementedError  # QueryRouter's

    async def _run(
        self, pool: ConnectionPool, pc: PooledConnection, call: Call, target: str
    ) -> Routed:
        raise NotImplementedError  # QueryRouter's

    async def _in_session(self, call: Call, session: Session) -> Routed:
        """Run ``call`` on the session's pinned connection, pinning one when it starts a
        transaction or session state; run it like any other statement otherwise."""
        pinning = not session.pinned and self._starts_pin(call.cls, session)
        if not session.pinned and not pinning:
            return await self._stateless(call)
        if pinning:
            session.conn = await self.primary.acquire()
            session.pool = self.primary
            session.expired = False
        pool, pc = session.pool, session.conn
        assert pool is not None and pc is not None  # pinned just above or before
        try:
            routed = await self._run(pool, pc, call, "primary")
        except ConnectionFailed as exc:
            await self._pinned_lost(session, call, isinstance(exc, OutcomeUnknown))
            raise
        except BaseException:
            if pc.broken:  # cancelled mid-statement: the pool discards the connection
                await self._pinned_lost(session, call, True)
            raise
        routed.metadata["session_id"] = session.id
        if routed.error is None:
            await self._after_session_statement(session, call, pool, pc)
        else:
            await self._after_session_error(session, call, pc, pinning)
        return routed

    def _starts_pin(self, cls: Classification, session: Session) -> bool:
        """Return whether ``cls`` pins a connection to the unpinned ``session``.

        Raises SessionError for a statement that needs the transaction or session state
        the session no longer (or never) had.
        """
        op = cls.transaction_op
        if op == "begin" or Category.SESSION_STATE in cls.parts:
            return True
        if session.expired:
            raise SessionError(
                f"session {session.id!r} lost its transaction or its session state (SET, temp "
                f"tables...) with its connection (rolled back after "
                f"{self.sessions.timeout:g}s idle, or the connection failed); BEGIN or a "
                "session-state statement starts again, end_session forgets it"
            )
        if op:
            raise SessionError(f"{cls.statement}: no open transaction in session {session.id!r}")
        return False

    async def _after_session_error(
        self, session: Session, call: Call, pc: PooledConnection, pinning: bool
    ) -> None:
        """Keep or drop the pin after a statement the database refused."""
        sid = session.id
        if pinning:  # the BEGIN/SET that would have pinned failed: nothing to keep
            await self.sessions.unpin(sid, session)
        elif pc.broken or pc.connection.is_closed():  # e.g. a MySQL timeout closes it
            await self._pinned_lost(session, call, False)
        elif call.cls.transaction_op in ENDS and not pc.connection.in_transaction():
            await self._end_transaction(sid, session)  # a failed COMMIT ends it too

    async def _pinned_lost(self, session: Session, call: Call, unknown: bool) -> None:
        """Unpin a session whose connection died under ``call``; tombstone a lost transaction.

        A transaction that this statement did not end died with the connection, and so did
        session state pinned by a SET (a later statement would silently run without it):
        what follows is refused until a new BEGIN or session-state statement, or
        end_session. After an end (its COMMIT's outcome unknown, or a ROLLBACK) of a
        session with no state, the transaction is over either way and nothing is refused.
        An unknown outcome makes ``call``'s token pending (the session's, or the node's).
        """
        sid = session.id
        lost = (session.in_transaction and call.cls.transaction_op not in ENDS) or session.sticky
        if unknown and call.token is not None:  # it may have committed: reads must see it
            self.consistency.note_unknown_write(call.token)
        await self.sessions.unpin(sid, session)
        if lost:
            session.expired = True
            self.sessions.sessions[sid] = session

    async def _after_session_statement(
        self, session: Session, call: Call, pool: ConnectionPool, pc: PooledConnection
    ) -> None:
        """Track the pin after a statement that succeeded; a write outside a transaction,
        or a COMMIT, raises ``call``'s token (in a workflow run: the node's, not the run's
        session, so only the nodes downstream of the committing node wait for it)."""
        sid, cls = session.id, call.cls
        op = cls.transaction_op
        if op == "begin":
            session.in_transaction = True
        elif Category.SESSION_STATE in cls.parts:
            session.sticky = True
        try:
            if call.token is not None and (
                op in COMMITS or (cls.writes and not session.in_transaction)
            ):
                await self.consistency.note_write(call.token, pool, pc)
        finally:  # the COMMIT's answer is the outcome: bookkeeping never keeps the pin
            if op in ENDS:
                await self._end_transaction(sid, session)

    async def _end_transaction(self, sid: str, session: Session) -> None:
        session.in_transaction = False
        if not session.sticky:
            await self.sessions.unpin(sid, session)
        self.functions.transaction_ended(self.primary)

    async def end_session(self, session_id: str) -> bool:
        """Return the session's connection (rolling back an open transaction)."""
        session = self.sessions.sessions.get(session_id)
        if session is None:
            return False
        async with session.lock:
            session.forget_writes()
            session.expired = False
            await self.sessions.unpin(session_id, session)
        return True
