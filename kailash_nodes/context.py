"""Context shared across layers: the workflow run, and the node's causal token, of a task.

A leaf module so that the router (which reads both) does not depend on the runtime that
sets them. ``run_id_var`` holds the run's id for the whole run; ``causal_var`` holds the
`CausalContext` of the node executing now (a new one per node execution).
"""

from __future__ import annotations

import contextvars
from typing import Protocol

__all__ = ["CausalContext", "Token", "causal_var", "current_run_id", "merge_token", "run_id_var"]

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kailash_nodes_run_id", default=None
)


def current_run_id() -> str | None:
    """Return the id of the workflow run executing in this context, or None outside a run."""
    return run_id_var.get()


class Token(Protocol):
    """A read-your-writes token: a router session's, or a node's `CausalContext`."""

    write_lsn: int
    lsn_pending: bool
    primary_until: float


class CausalContext:
    """What one node execution's reads must see: the writes upstream of it and its own.

    ``write_lsn``: the highest primary WAL position after those writes (0: none known);
    ``lsn_pending``: a write happened whose position was not read (any position read on
    the primary later covers it); ``primary_until``: on backends without positions, read
    the primary until this ``time.monotonic()`` instant. The same three fields as a
    router session's token, so the router's read-your-writes code serves both.

    >>> a, b = CausalContext("run"), CausalContext("run")
    >>> a.write_lsn, b.lsn_pending, b.primary_until = 7, True, 2.0
    >>> c = CausalContext("run", (a, b))
    >>> (c.write_lsn, c.lsn_pending, c.primary_until, c.tracked)
    (7, True, 2.0, True)
    >>> CausalContext("run").tracked
    False
    """

    __slots__ = ("lsn_pending", "primary_until", "run_id", "write_lsn")

    def __init__(self, run_id: str, upstream: tuple[CausalContext, ...] = ()) -> None:
        self.run_id = run_id
        self.write_lsn = 0
        self.lsn_pending = False
        self.primary_until = 0.0
        for other in upstream:
            self.merge(other)

    def merge(self, other: Token) -> None:
        """Raise this token to cover ``other``'s (`merge_token`)."""
        merge_token(self, other)

    @property
    def tracked(self) -> bool:
        """Return whether some write is covered (a position, a pending one or a window)."""
        return bool(self.write_lsn or self.lsn_pending or self.primary_until)

    def __repr__(self) -> str:
        return (
            f"CausalContext(run={self.run_id!r}, write_lsn={self.write_lsn}, "
            f"pending={self.lsn_pending}, primary_until={self.primary_until:.3f})"
        )


def merge_token(into: Token, other: Token) -> None:
    """Raise ``into`` to cover ``other``: the higher position, pending if either is, the
    later window."""
    if other.write_lsn > into.write_lsn:
        into.write_lsn = other.write_lsn
    into.lsn_pending = into.lsn_pending or other.lsn_pending
    if other.primary_until > into.primary_until:
        into.primary_until = other.primary_until


causal_var: contextvars.ContextVar[CausalContext | None] = contextvars.ContextVar(
    "kailash_nodes_causal", default=None
)
