"""`QueryLearner`: learn from executed SQL text and predict the next statement's text.

The engine-level entry to learning: it classifies each statement into its shape
(`kailash_nodes.sql.classify`, cached by text), records it in a `QueryPatternTracker` for
its session or workflow run, keeps the latest text of each shape, and answers "which
statement will this session run next?" only when the prediction is likely and supported.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from kailash_nodes.config import check_number
from kailash_nodes.errors import ConfigError
from kailash_nodes.learning.tracker import QueryPatternTracker
from kailash_nodes.sql import classify

__all__ = ["MIN_PROBABILITY", "MIN_SUPPORT", "QueryLearner"]

MIN_PROBABILITY = 0.5
"""A predicted statement is offered only when it is at least this likely to come next."""
MIN_SUPPORT = 3
"""... and only when its context was observed at least this many times."""


class _Lease(Protocol):
    """What `QueryLearner.observe_lease` reads of a pool lease."""

    @property
    def session(self) -> str | None: ...


def _no_run() -> str | None:
    return None


class QueryLearner:
    """Record executed statements by shape per session; offer the likely next statement.

    ``dialect``: the dialect statements are classified in (the driver's ``dialect``:
    "postgres", "mysql" or "sqlite"); ``run_id``: returns the workflow run in progress,
    the session of a statement that has none (default: none); ``max_texts``: bounds the
    shape -> latest text map (least recently stored dropped first). Raises `ConfigError`
    for a bad option.

    >>> learner = QueryLearner(QueryPatternTracker(run_templates=False), dialect="sqlite")
    >>> for _ in range(3):
    ...     learner.observe("SELECT a FROM t WHERE id = 1", 0.001, 1, True, "s")
    ...     learner.observe("SELECT b FROM t WHERE id = 2", 0.001, 1, True, "s")
    ...     learner.end_session("s")
    >>> learner.observe("SELECT a FROM t WHERE id = 7", 0.001, 1, True, "s2")
    >>> learner.next_query(learner.shape_of("SELECT a FROM t WHERE id = 7"), "s2")
    'SELECT b FROM t WHERE id = 2'
    """

    __slots__ = ("_dialect", "_run_id", "_texts", "max_texts", "tracker")

    def __init__(
        self,
        tracker: QueryPatternTracker | None = None,
        *,
        dialect: str = "postgres",
        run_id: Callable[[], str | None] = _no_run,
        max_texts: int = 4096,
    ) -> None:
        self.tracker = tracker if tracker is not None else QueryPatternTracker()
        self.max_texts = check_number("max_texts", max_texts, low=1, integer=True)
        try:
            classify("SELECT 1", dialect)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"dialect {dialect!r} is not supported: {exc}") from exc
        self._dialect = dialect
        self._run_id = run_id
        self._texts: OrderedDict[str, str] = OrderedDict()

    def shape_of(self, query: str) -> str | None:
        """Return ``query``'s shape (its normalised fingerprint); None when unclassifiable."""
        try:
            return classify(query, self._dialect).fingerprint
        except Exception:  # unclassifiable text: nothing to learn
            return None

    def observe(
        self, query: str, duration_s: float, rows: int, success: bool, session: str | None
    ) -> None:
        """Record one execution of ``query`` in ``session`` (a client session or a
        workflow run; None: statistics only). ``rows < 0`` means unknown. Unclassifiable
        text is skipped. Raises ValueError for a negative ``duration_s``."""
        try:
            cls = classify(query, self._dialect)
        except Exception:  # unclassifiable text: nothing to learn
            return
        texts = self._texts
        texts[cls.fingerprint] = query
        texts.move_to_end(cls.fingerprint)
        if len(texts) > self.max_texts:
            texts.popitem(last=False)
        self.tracker.record(
            cls.fingerprint,
            session=session,
            duration_s=duration_s,
            rows=rows,
            is_write=not cls.replica_safe,
            success=success,
        )

    def observe_lease(
        self, query: str, duration_s: float, rows: int, success: bool, lease: _Lease
    ) -> None:
        """Like `observe`, with the pool observer's signature: the session is the lease's
        (a router session), else the workflow run in progress (``run_id``)."""
        self.observe(query, duration_s, rows, success, lease.session or self._run_id())

    def next_query(self, shape: str, session: str | None) -> str | None:
        """Return the text of the statement likely to follow ``shape`` in ``session``:
        only when it is at least `MIN_PROBABILITY` likely with at least `MIN_SUPPORT`
        observations behind it, and its text was seen; else None."""
        best = self.tracker.predict_next(shape, session=session, k=1)
        if not best or best[0].probability < MIN_PROBABILITY or best[0].support < MIN_SUPPORT:
            return None
        return self._texts.get(best[0].shape)

    def end_session(self, session: str) -> None:
        """End ``session`` (a finished workflow run): see `QueryPatternTracker.end_session`."""
        self.tracker.end_session(session)
