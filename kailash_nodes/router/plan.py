"""What the router knows about a statement text, looked up once per statement.

A `Plan` is built the first time a text is routed: its classification, the text rewritten
for the driver's placeholder style, and the facts every statement's routing reads
(whether it writes, is DDL, may go to a replica, its ``query_type``), computed once
rather than per statement (``Classification.writes`` and ``ddl`` are set operations, and
an enum's ``.value`` is a descriptor call). `PlanCache` keeps them per text, bounded; a
change of what classification decides (the function catalog) clears it.
"""

from __future__ import annotations

from collections.abc import Callable

from kailash_nodes.errors import ParameterError
from kailash_nodes.sql import Classification, RewrittenQuery, rewrite

__all__ = ["Plan", "PlanCache"]


class Plan:
    """One statement text's classification, driver text and routing facts."""

    __slots__ = (
        "cls",
        "counts_as_write",
        "ddl",
        "one_shot",
        "query_type",
        "replica_safe",
        "rq",
        "writes",
    )

    def __init__(self, cls: Classification, rq: RewrittenQuery | None) -> None:
        self.cls = cls
        # None when the text does not rewrite (mixed placeholder styles...): the pool's
        # execute raises that ParameterError again, with its context
        self.rq = rq
        self.writes = cls.writes
        self.ddl = cls.ddl  # a DDL part anywhere (its tables' statements go stale, and
        # a function it creates or drops changes what a replica may run)
        self.replica_safe = cls.replica_safe
        self.counts_as_write = self.writes or cls.transaction_op is not None
        self.query_type = cls.category.value
        # Nothing for a session to keep and nothing to invalidate: outside a session or a
        # workflow run, it may take the pool's one-shot path (QueryRouter.route, run_once)
        self.one_shot = (
            rq is not None
            and rq.statements == 1
            and not rq.session_state
            and cls.transaction_op is None
            and not cls.ddl
        )


class PlanCache:
    """Plans per statement text, at most ``size`` (the oldest dropped first).

    >>> from kailash_nodes.sql import classify
    >>> plans = PlanCache(lambda q: classify(q, "postgres"), "numeric", size=2)
    >>> p = plans.get("SELECT * FROM t WHERE id = ?")
    >>> p.rq.text, p.replica_safe, p.writes, p.query_type
    ('SELECT * FROM t WHERE id = $1', True, False, 'read_simple')
    >>> plans.get("SELECT * FROM t WHERE id = ?") is p, plans.lookups, plans.misses
    (True, 2, 1)
    """

    __slots__ = ("_classify", "_plans", "_size", "_style", "lookups", "misses")

    def __init__(
        self, classify: Callable[[str], Classification], style: str, size: int = 8192
    ) -> None:
        self._classify = classify
        self._style = style
        self._size = size
        self._plans: dict[str, Plan] = {}
        self.lookups = 0  # texts looked up; ``misses`` of them were classified anew
        self.misses = 0

    def get(self, query: str) -> Plan:
        """Return the plan of ``query`` (a str), building it on first sight."""
        self.lookups += 1
        plan = self._plans.get(query)
        if plan is None:
            plan = self._build(query)
        return plan

    def _build(self, query: str) -> Plan:
        self.misses += 1
        cls = self._classify(query)
        try:
            rq: RewrittenQuery | None = rewrite(query, self._style)
        except ParameterError:  # raised again, with context, when the statement runs
            rq = None
        plans = self._plans
        if len(plans) >= self._size:
            del plans[next(iter(plans))]  # the oldest text first
        plan = plans[query] = Plan(cls, rq)
        return plan

    def clear(self) -> None:
        """Forget every plan (what classification decides has changed)."""
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)
