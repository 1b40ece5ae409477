"""Context shared across layers: the workflow run, and the node's causal context, of a task.

A leaf module so that the router (which reads both) does not depend on the runtime that
sets them. ``run_id_var`` holds the run's id for the whole run; ``causal_var`` holds the
`CausalContext` of the node executing now (a new one per node execution).
"""

from __future__ import annotations

import contextvars
from typing import Protocol

__all__ = [
    "CausalContext",
    "CausalToken",
    "Token",
    "causal_var",
    "current_run_id",
    "merge_token",
    "run_id_var",
]

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kailash_nodes_run_id", default=None
)


def current_run_id() -> str | None:
    """Return the id of the workflow run executing in this context, or None outside a run."""
    return run_id_var.get()


class Token(Protocol):
    """A read-your-writes token: a router session's, or a node's `CausalToken`."""

    write_lsn: int
    lsn_pending: bool
    primary_until: float


class CausalToken:
    """One node execution's token for one primary (the fields of `Token`)."""

    __slots__ = ("lsn_pending", "primary_until", "write_lsn")

    def __init__(self) -> None:
        self.write_lsn = 0
        self.lsn_pending = False
        self.primary_until = 0.0

    def __repr__(self) -> str:
        return (
            f"CausalToken(write_lsn={self.write_lsn}, pending={self.lsn_pending}, "
            f"primary_until={self.primary_until:.3f})"
        )


class CausalContext:
    """What one node execution's reads must see: the writes upstream of it and its own.

    ``tokens`` maps a primary (the router's primary pool object: positions of different
    servers do not compare) to a `CausalToken`: ``write_lsn`` the highest WAL position
    after those writes (0: none known), ``lsn_pending`` a write happened whose position
    was not read (any position read on that primary later covers it), ``primary_until``
    (backends without positions) read that primary until this ``time.monotonic()``
    instant. The router adds a primary's token on the node's first statement there that
    is not a plain read; a plain read finds none and allocates nothing.

    >>> a, b, p, q = CausalContext("run"), CausalContext("run"), object(), object()
    >>> a.token(p).write_lsn = 7
    >>> b.token(p).lsn_pending = True
    >>> b.token(q).primary_until = 2.0
    >>> c = CausalContext("run", (a, b))
    >>> c.tokens[p].write_lsn, c.tokens[p].lsn_pending, c.tokens[q].primary_until
    (7, True, 2.0)
    >>> c.tracked, CausalContext("run").tracked
    (True, False)
    """

    __slots__ = ("run_id", "tokens")

    def __init__(self, run_id: str, upstream: tuple[CausalContext, ...] = ()) -> None:
        self.run_id = run_id
        self.tokens: dict[object, CausalToken] = {}
        for other in upstream:
            self.merge(other)

    def token(self, primary: object) -> CausalToken:
        """Return the token for ``primary``, adding an empty one on first use."""
        token = self.tokens.get(primary)
        if token is None:
            token = self.tokens[primary] = CausalToken()
        return token

    def merge(self, other: CausalContext) -> None:
        """Raise every token to cover ``other``'s (`merge_token`, primary by primary)."""
        for primary, token in other.tokens.items():
            merge_token(self.token(primary), token)

    @property
    def tracked(self) -> bool:
        """Return whether some write is covered (a position, a pending one or a window)."""
        return any(t.write_lsn or t.lsn_pending or t.primary_until for t in self.tokens.values())

    def __repr__(self) -> str:
        return f"CausalContext(run={self.run_id!r}, tokens={self.tokens!r})"


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
