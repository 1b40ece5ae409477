"""QueryLearner: SQL text in, the likely next statement's text out, without any node."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kailash_nodes.errors import ConfigError
from kailash_nodes.learning import QueryLearner, QueryPatternTracker
from kailash_nodes.learning.learner import MIN_SUPPORT

A = "SELECT id FROM users WHERE id = ?"
B = "SELECT id, name FROM users WHERE id = ?"
C = "UPDATE users SET name = ? WHERE id = ?"


@dataclass
class Lease:
    """What the pool hands its observer: only ``session`` is read."""

    session: str | None = None


def learner(**options: object) -> QueryLearner:
    return QueryLearner(QueryPatternTracker(run_templates=False), dialect="sqlite", **options)  # type: ignore[arg-type]


def run(q: QueryLearner, session: str, *texts: str) -> None:
    for text in texts:
        q.observe(text, 0.001, 1, True, session)
    q.end_session(session)


def test_next_query_returns_the_text_that_followed_once_it_has_support() -> None:
    q = learner()
    shape = q.shape_of(A)
    assert shape is not None
    for i in range(MIN_SUPPORT - 1):
        run(q, f"run-{i}", A, B)
    q.observe(A, 0.001, 1, True, "now")
    assert q.next_query(shape, "now") is None  # support below MIN_SUPPORT
    run(q, "run-last", A, B)
    q.observe(A, 0.001, 1, True, "now2")
    assert q.next_query(shape, "now2") == B


def test_next_query_needs_the_follower_to_be_likely() -> None:
    q = learner()
    for i in range(4):  # A -> B, C or another as often: each a third, below 0.5
        run(q, f"b-{i}", A, B)
        run(q, f"c-{i}", A, C)
        run(q, f"x-{i}", A, "SELECT 1")
    q.observe(A, 0.001, 1, True, "now")
    assert q.next_query(q.shape_of(A) or "", "now") is None


def test_writes_and_reads_are_recorded_with_their_kind() -> None:
    q = learner()
    run(q, "s", A, C)
    kinds = {s["shape"]: s["kind"] for s in q.tracker.insights()["top_shapes"]}
    assert kinds[q.shape_of(A)] == "read"
    assert kinds[q.shape_of(C)] == "write"


def test_unclassifiable_text_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(query: str, dialect: str | None) -> None:
        raise ValueError(query)

    q = learner()
    monkeypatch.setattr("kailash_nodes.learning.learner.classify", refuse)
    q.observe(A, 0.001, 0, True, "s")
    assert q.shape_of(A) is None
    assert q.tracker.insights()["totals"]["records"] == 0


def test_observe_lease_uses_the_lease_session_else_the_run() -> None:
    runs = iter(["run-1", "run-1"])
    q = QueryLearner(
        QueryPatternTracker(run_templates=False), dialect="sqlite", run_id=lambda: next(runs)
    )
    q.observe_lease(A, 0.001, 1, True, Lease())  # the run's
    q.observe_lease(B, 0.001, 1, True, Lease())  # the run's: A -> B learned
    q.observe_lease(C, 0.001, 1, True, Lease("router-session"))  # its own session
    totals = q.tracker.insights()["totals"]
    assert totals["transitions"] == 1
    assert totals["live_sessions"] == 2


def test_texts_are_bounded() -> None:
    q = learner(max_texts=1)
    q.observe(A, 0.001, 1, True, "s")
    q.observe(B, 0.001, 1, True, "s")
    assert len(q._texts) == 1
    with pytest.raises(ConfigError, match="max_texts must be an integer >= 1"):
        learner(max_texts=0)


def test_an_unknown_dialect_is_rejected_at_construction() -> None:
    with pytest.raises(ConfigError, match="dialect 'oracle' is not supported"):
        QueryLearner(dialect="oracle")
