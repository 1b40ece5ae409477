"""A statement on its way through the router, and what routing it gave.

Shared by the router's modules: `engine.py` routes, `pinned.py` runs statements on a
session's pinned connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kailash_nodes.context import Token
from kailash_nodes.errors import QueryError
from kailash_nodes.pool import QueryResult
from kailash_nodes.router.plan import Plan
from kailash_nodes.router.sessions import Session

__all__ = ["COMMITS", "ENDS", "Call", "Routed"]

ENDS = frozenset({"commit", "rollback", "prepare_transaction"})  # end a transaction
COMMITS = frozenset({"commit", "prepare_transaction"})  # raise a token (its writes are in)


@dataclass(slots=True)
class Routed:
    """A routed statement's result and how it was routed."""

    result: QueryResult | None
    error: QueryError | None
    metadata: dict[str, Any]
    connection_id: str


class Call:
    """One statement on its way through the router (a named bundle, not a public type)."""

    __slots__ = ("cls", "params", "plan", "predict", "query", "session", "start", "token")

    def __init__(self, plan: Plan, query: str, params: Any, start: float) -> None:
        self.plan = plan
        self.cls = plan.cls
        self.query = query
        self.params = params
        self.start = start
        self.session: Session | None = None
        # Read-your-writes: the session, or the workflow node's CausalToken for our primary
        self.token: Token | None = None
        self.predict = False  # ran prepared and learning is on: prepare what follows
