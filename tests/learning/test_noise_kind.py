"""Learning whether noise statements come between workflow steps or replace them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from kailash_nodes.learning import QueryPatternTracker
from kailash_nodes.learning.transitions import Followers

FLOW = ["A", "B", "C", "D", "E", "F"]


def noisy_runs(kind: str, n: int, start: int = 0) -> Iterator[tuple[str, list[str]]]:
    """Yield ``n`` runs of FLOW (session, shapes), each with one ad-hoc statement seen
    nowhere else, inserted before (``kind="insert"``) or replacing step 1 + i % 4."""
    for i in range(start, start + n):
        shapes = list(FLOW)
        if kind == "replace":
            shapes[1 + i % 4] = f"ADHOC{i}"
        else:
            shapes.insert(1 + i % 4, f"ADHOC{i}")
        yield f"{kind}{i}", shapes


def feed(t: QueryPatternTracker, shapes: Iterable[str], session: str) -> None:
    """Record ``shapes`` in order in ``session``."""
    for shape in shapes:
        t.record(shape, session=session, duration_s=0.001, rows=1, is_write=False)


def trained(kind: str, n: int = 200, **options: Any) -> QueryPatternTracker:
    """Return a tracker that saw ``n`` runs of FLOW with noise of ``kind``."""
    t = QueryPatternTracker(**options)
    for session, shapes in noisy_runs(kind, n):
        feed(t, shapes, session)
    return t


def top(t: QueryPatternTracker, shapes: list[str], session: str = "live") -> tuple[str, int]:
    """Feed ``shapes`` to a new ``session``; return the best next shape and its order."""
    feed(t, shapes, session)
    best = t.predict_next(shapes[-1], session=session, k=1)
    t.end_session(session)
    return best[0].shape, best[0].order


def kinds(t: QueryPatternTracker) -> tuple[int, int]:
    """Return the tracker's (inserted, replaced) counts."""
    counts = t.insights()["totals"]["noise_kinds"]
    return counts["inserted"], counts["replaced"]


def test_replace_only_noise_predicts_the_step_after_the_replaced_one() -> None:
    t = trained("replace")
    inserted, replaced = kinds(t)
    assert replaced >= 100 and inserted == 0
    assert t._kinds is not None and t._kinds.odds == (1 / (replaced + 1), 1.0)
    # NEW replaced C (the step after B): D comes next, not C
    assert top(t, ["A", "B", "NEW"]) == ("D", 0)
    assert top(t, ["A", "B", "C", "D", "NEW"]) == ("F", 0)  # NEW replaced E
    fixed = trained("replace", learn_noise_kind=False)  # "inserted" alone: C
    assert top(fixed, ["A", "B", "NEW"]) == ("C", 0)
    assert "noise_kinds" not in fixed.insights()["totals"]


def test_insert_only_noise_predicts_the_step_it_displaced() -> None:
    t = trained("insert")
    inserted, replaced = kinds(t)
    assert inserted >= 100 and replaced == 0
    assert top(t, ["A", "B", "NEW"]) == ("C", 0)
    assert top(t, ["A", "B", "C", "D", "NEW"]) == ("E", 0)
    fixed = trained("insert", learn_noise_kind=False)
    assert top(fixed, ["A", "B", "NEW"]) == ("C", 0)


def test_a_step_after_a_noise_statement_is_not_mistaken_for_noise() -> None:
    # After NEW, the next step tells which kind it was: both trackers follow it.
    for kind, after, expected in (("replace", "C", "D"), ("insert", "B", "C")):
        t = trained(kind)
        assert top(t, ["A", "NEW", after])[0] == expected


def test_without_noise_nothing_is_judged() -> None:
    t = trained("replace", n=0)
    for i in range(100):
        feed(t, FLOW, f"clean{i}")
    assert kinds(t) == (0, 0)
    assert t._kinds is not None and t._kinds.odds == (1.0, 1.0)
    assert "noise_kinds" not in trained("replace", n=10, noise_floor=0).insights()["totals"]


def test_the_counts_are_bounded_and_follow_a_workload_that_changes() -> None:
    t = QueryPatternTracker(max_transition_count=100)  # NoiseKinds halve at 100 too
    for session, shapes in noisy_runs("insert", 300):
        feed(t, shapes, session)
        assert sum(kinds(t)) < 100
    assert kinds(t)[1] == 0
    assert top(t, ["A", "B", "NEW"]) == ("C", 0)
    for session, shapes in noisy_runs("replace", 300, start=300):
        feed(t, shapes, session)
        assert sum(kinds(t)) < 100
    inserted, replaced = kinds(t)
    assert inserted == 0 and replaced > 20  # the insertions halved away
    assert top(t, ["A", "B", "NEW"]) == ("D", 0)


def test_the_learned_weights_are_odds_against_the_likelier_kind() -> None:
    t = trained("replace")
    feed(t, ["A", "B"], "live")
    t.record("NEW", session=None, duration_s=0.0, rows=0, is_write=False)  # known, unseen
    _, replaced = kinds(t)
    best = {p.shape: p.probability for p in t.predict_next("NEW", session="live", k=20)}
    # "NEW was inserted" predicts what follows (A, B) with weight 1 / (replaced + 1);
    # "NEW replaced C" what follows C (its first-order table, D 2 times in 3, is surer
    # than (B, C), 1 in 2) with weight 1 x P(C | A, B), as it bets on C alone; "NEW is a
    # step" predicts nothing (nothing followed NEW)
    after_ab, after_c = t._shapes["B"].contexts["A"], t._shapes["C"].followers
    assert after_c.share("D") == pytest.approx(2 / 3)
    inserted, p_c = 1 / (replaced + 1), after_ab.share("C")
    assert best["C"] == pytest.approx(inserted / (inserted + p_c) * p_c)
    assert best["D"] == pytest.approx(p_c / (inserted + p_c) * after_c.share("D"))
    assert max(best, key=best.__getitem__) == "D"


def test_a_table_keeps_its_best_follower_through_halving_and_eviction() -> None:
    f = Followers()
    live = {"A", "B", "C"}.__contains__
    for shape in "ABBCC":
        f.add(shape, cap=2, halve_at=100, live=live)  # A evicted when C arrives
    assert (f.lead, f.top, set(f.edges)) == ("B", 2, {"B", "C"})  # the first to reach 2
    for _ in range(2):
        f.add("C", cap=2, halve_at=7, live=live)  # C: 4, B: 2, halved at a total of 7
    assert (f.lead, f.top, f.total, f.edges["B"].count) == ("C", 2, 3, 1)
    f.add("D", cap=2, halve_at=100, live=live)  # the weakest goes: B
    assert (f.lead, f.top, set(f.edges)) == ("C", 2, {"C", "D"})
    f.add("D", cap=2, halve_at=100, live=live)
    assert (f.lead, f.top) == ("C", 2)  # a tie: the first to reach 2 keeps the lead
    f.add("D", cap=2, halve_at=100, live=live)
    assert (f.lead, f.top) == ("D", 3)
    f.edges.pop("D")
    f.recount_top()
    assert (f.lead, f.top) == ("C", 2)
    empty = Followers()
    empty.recount_top()
    assert (empty.lead, empty.top) == (None, 0)
