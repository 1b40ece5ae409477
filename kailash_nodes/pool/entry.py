"""One pooled server connection and the handle a caller holds while it is checked out."""

from __future__ import annotations

from kailash_nodes.drivers import DriverConnection
from kailash_nodes.errors import ConnectionReleased

__all__ = ["Entry", "PooledConnection"]

MAX_HEALTH = 100.0


class Entry:
    """A server connection with its bookkeeping; the pool owns it, callers never see it."""

    __slots__ = (
        "broken",
        "busy",
        "conn",
        "created",
        "deadline",
        "dirty",
        "health",
        "last_used",
        "leased",
        "name",
        "queries",
        "suspect",
    )

    def __init__(self, conn: DriverConnection, name: str, created: float, deadline: float) -> None:
        self.conn = conn
        self.name = name
        self.created = created
        self.deadline = deadline  # monotonic time after which it is retired (lifetime)
        self.last_used = created
        self.health = MAX_HEALTH
        self.broken = False  # unusable: discard on release
        self.busy = False  # a statement is on the wire: no second one, no release
        self.dirty = False  # session state may have changed: reset on release
        self.queries = 0
        self.suspect = False  # check before lending: another connection was just lost
        self.leased = False  # checked out right now (by anyone: the node, a router, a session)

    def credit(self, amount: float) -> None:
        """Raise the health score after a success, capped at 100."""
        self.health = min(MAX_HEALTH, self.health + amount)

    def debit(self, amount: float) -> None:
        """Lower the health score after a failure, floored at 0."""
        self.health = max(0.0, self.health - amount)


class PooledConnection:
    """A checked-out connection: valid from acquire until release, then detached.

    A stale handle kept after release cannot run queries: using it raises
    :class:`~kailash_nodes.errors.ConnectionReleased`.
    """

    __slots__ = ("_entry", "acquired_at", "id", "pool", "session", "wait")

    def __init__(
        self, entry: Entry, lease_id: str, pool: object, acquired_at: float, wait: float
    ) -> None:
        self._entry: Entry | None = entry
        self.id = lease_id
        self.pool = (
            pool  # the ConnectionPool that lent it (typed loosely: entry.py imports no engine)
        )
        self.acquired_at = acquired_at
        self.wait = wait  # seconds from the acquire call to the checkout
        self.session: str | None = None  # set by a router acting for a session

    @property
    def entry(self) -> Entry:
        """Return the pooled entry; raise ConnectionReleased after release."""
        entry = self._entry
        if entry is None:
            raise ConnectionReleased(f"connection {self.id!r} was already released")
        return entry

    @property
    def released(self) -> bool:
        """Return whether this handle was released."""
        return self._entry is None

    @property
    def health_score(self) -> float:
        """Return the connection's current health score (0-100)."""
        return self.entry.health

    @property
    def connection(self) -> DriverConnection:
        """Return the driver connection (its statement cache, transaction state); raise
        ConnectionReleased after release."""
        entry = self._entry  # not through ``entry``: one property call on the router's path
        if entry is None:
            raise ConnectionReleased(f"connection {self.id!r} was already released")
        return entry.conn

    @property
    def broken(self) -> bool:
        """Return whether the connection is marked unusable (it is discarded on release)."""
        return self.entry.broken

    def mark_broken(self) -> None:
        """Mark the connection unusable: release discards and replaces it."""
        self.entry.broken = True

    def __repr__(self) -> str:
        state = "released" if self._entry is None else "active"
        return f"<PooledConnection {self.id} {state}>"
