"""Loop contexts, the session-start context and the noise back-off (pure logic)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from kailash_nodes.learning import QueryPatternTracker

SEARCH = ["LIST", "P", "R", "P", "R", "P", "R", "LOG"]  # a loop of three P -> R rounds
PREVIOUS = {"start_context": False, "loop_contexts": False, "noise_floor": 0}
FLOW5 = {"flow": ["A", "B", "C", "D", "E"]}


def feed(t: QueryPatternTracker, shapes: Iterable[str], session: str) -> None:
    """Record ``shapes`` in order in ``session``."""
    for shape in shapes:
        t.record(shape, session=session, duration_s=0.001, rows=1, is_write=False)


def trained(runs: dict[str, list[str]], n: int = 10, **options: Any) -> QueryPatternTracker:
    """Return a tracker that saw each of ``runs`` ``n`` times, one session per run."""
    t = QueryPatternTracker(**options)
    for i in range(n):
        for name, shapes in runs.items():
            feed(t, shapes, session=f"{name}{i}")
    return t


def top(t: QueryPatternTracker, session: str, shapes: list[str]) -> tuple[str, int] | None:
    """Feed ``shapes`` to a new ``session``; return the best next shape and its order."""
    feed(t, shapes, session)
    best = t.predict_next(shapes[-1], session=session, k=1)
    return (best[0].shape, best[0].order) if best else None


# -- loop contexts -------------------------------------------------------------------------


def test_loop_count_tells_the_last_round_of_a_loop_from_the_others() -> None:
    t = trained({"search": SEARCH})
    loops = t._shapes["R"].loops
    assert {n: {s: e.count for s, e in f.edges.items()} for n, f in loops.items()} == {
        2: {"P": 10},
        3: {"LOG": 10},
    }
    assert top(t, "one", SEARCH[:3]) == ("P", 2)  # (P, R) after LIST: P 2/3 of the time
    assert top(t, "two", SEARCH[:5]) == ("P", 3)  # R seen twice lately
    assert top(t, "three", SEARCH[:7]) == ("LOG", 3)  # the third R ends the loop


def test_without_loop_contexts_the_third_round_looks_like_the_others() -> None:
    t = trained({"search": SEARCH}, loop_contexts=False)
    assert top(t, "three", SEARCH[:7]) == ("P", 2)
    assert all(not s.loops for s in t._shapes.values())


def test_a_replaced_round_still_counts_through_its_neighbour() -> None:
    t = trained({"search": SEARCH})
    # the second R replaced by an ad-hoc statement: R occurs twice, P three times
    assert top(t, "noisy", ["LIST", "P", "R", "P", "ADHOC", "P", "R"]) == ("LOG", 3)


def test_a_loop_longer_than_the_window_stops_counting_at_the_window() -> None:
    t = trained({"long": ["A", "B"] * 6 + ["END"]}, loop_window=4)
    assert set(t._shapes["B"].loops) == {2}  # A, B, A, B at most in any 4 statements
    assert len(t._sessions["long9"].recent) == 5


# -- the session-start context ---------------------------------------------------------------


def test_the_session_start_is_a_context_for_the_first_statement() -> None:
    runs = {"opens": ["B", "Y"], "middle": ["A", "B", "X"]}
    assert top(trained(runs), "new", ["B"]) == ("Y", 2)
    assert top(trained(runs, **PREVIOUS), "new", ["B"]) == ("X", 1)  # a tie, by name


def test_an_unknown_first_statement_predicts_the_usual_first_one() -> None:
    t = trained({"checkout": ["A", "B", "C"]})
    t.record("ADHOC", session=None, duration_s=0.0, rows=0, is_write=False)  # known, no followers
    assert top(t, "new", ["ADHOC"]) == ("A", 0)  # inserted before the run's first step
    assert top(trained({"checkout": ["A", "B", "C"]}, **PREVIOUS), "new", ["ADHOC"]) is None


# -- the noise back-off ------------------------------------------------------------------------


def test_an_inserted_statement_hands_the_prediction_to_the_one_before() -> None:
    t = trained({"flow": ["A", "B", "C", "D"]})
    t.record("ADHOC", session=None, duration_s=0.0, rows=0, is_write=False)  # known shape
    feed(t, ["A", "B", "ADHOC"], session="live")  # ADHOC followed nothing so far
    best = t.predict_next("ADHOC", session="live", k=3)
    # from the context (A, B): C ten times, ADHOC (just recorded) once
    assert [(p.shape, p.order, p.support) for p in best] == [("C", 0, 11), ("ADHOC", 0, 11)]
    assert best[0].probability == pytest.approx(10 / 11)
    off = trained({"flow": ["A", "B", "C", "D"]}, noise_floor=0)
    off.record("ADHOC", session=None, duration_s=0.0, rows=0, is_write=False)
    assert top(off, "live", ["A", "B", "ADHOC"]) is None  # nothing ever followed ADHOC


def test_a_known_statement_out_of_place_is_treated_as_noise() -> None:
    # D followed B once in 101 (this session): it is probably noise, and C (what B is
    # followed by: D was inserted) or D (what C is followed by: D replaced C) comes next,
    # not E (what follows D). Nothing seen yet says which kind of noise this workload has.
    t = trained(FLOW5, n=100)
    feed(t, ["A", "B", "D"], session="live")
    best = t.predict_next("D", session="live", k=3)
    assert {p.shape for p in best[:2]} == {"C", "D"} and best[0].order == 0
    assert best[0].probability == pytest.approx(best[1].probability, rel=0.02)
    fixed = trained(FLOW5, n=100, learn_noise_kind=False)  # "inserted" alone
    assert top(fixed, "live", ["A", "B", "D"]) == ("C", 0)
    assert top(trained(FLOW5, n=100, noise_floor=0), "live", ["A", "B", "D"]) == ("E", 1)
    # after only 10 runs, once in 11 is too often to call it noise
    assert top(trained(FLOW5, n=10), "live", ["A", "B", "D"]) == ("E", 1)


def test_a_statement_seen_often_enough_is_not_noise() -> None:
    for floor, expected in ((0.025, ("F", 2)), (0.5, ("B", 0))):
        t = trained({"main": ["A", "B"]}, n=9, noise_floor=floor)
        feed(t, ["A", "E", "F"], session="branch")
        # A -> E: 2 of 11 with "live"'s own: a step at noise_floor 0.025 (E's own successor
        # comes next), noise at 0.5 (A's successor does)
        assert top(t, "live", ["A", "E"]) == expected


def test_after_an_inserted_statement_the_step_before_it_is_the_context() -> None:
    # B is shared: after A it leads to Q, after Y to P (a tie first-order, P first by name)
    runs = {"aq": ["A", "B", "Q"], "yp": ["Y", "B", "P"]}
    t = trained(runs, n=100)
    t.record("ADHOC", session=None, duration_s=0.0, rows=0, is_write=False)
    assert top(t, "live", ["A", "ADHOC", "B"]) == ("Q", 0)  # context (A, B), ADHOC skipped
    off = trained(runs, n=100, noise_floor=0)
    off.record("ADHOC", session=None, duration_s=0.0, rows=0, is_write=False)
    assert top(off, "live", ["A", "ADHOC", "B"]) == ("P", 1)


def test_after_a_replaced_step_the_next_step_predicts_its_own_successor() -> None:
    t = trained({"flow": ["A", "B", "C", "D"]})
    # B replaced by ADHOC: C never followed A, and after 10 runs ADHOC after A (1 in 11) is
    # not unlikely enough to look for the step it replaced; C's own successor wins
    assert top(t, "live", ["A", "ADHOC", "C"]) == ("D", 1)


def test_the_replaced_step_is_inferred_and_used_as_the_context() -> None:
    # C is shared: after B it leads to Q, after X to P (a tie first-order, P first by name)
    runs = {"abcq": ["A", "B", "C", "Q"], "yxcp": ["Y", "X", "C", "P"]}
    t = trained(runs, n=100)
    # ADHOC (once in 101 after A: noise) replaced B, the step after A that C follows
    assert top(t, "live", ["A", "ADHOC", "C"]) == ("Q", 0)
    assert top(trained(runs, n=100, noise_floor=0), "live", ["A", "ADHOC", "C"]) == ("P", 1)


def test_the_hypotheses_are_weighed_by_their_evidence() -> None:
    t = trained({"flow": ["A", "B", "C", "D"]})
    feed(t, ["A", "B", "ADHOC", "D"], session="one")  # ADHOC replaced C once
    feed(t, ["A", "B", "ADHOC"], session="two")
    mixed = t.predict_next("ADHOC", session="two", k=3)
    # (A, B) was followed by C 10 times and ADHOC twice: P(ADHOC | A, B) = 2/12; P(B | A) = 1
    step, noise = 1.0 * 2 / 12, 1.0 * 0.025  # "ADHOC is a step" vs "ADHOC is noise"
    share = {p.shape: p.probability for p in mixed}
    assert share == pytest.approx(
        {
            "D": step / (step + noise),  # what followed (B, ADHOC)
            "C": noise / (step + noise) * 10 / 12,  # what follows (A, B)
            "ADHOC": noise / (step + noise) * 2 / 12,
        }
    )
    assert [p.shape for p in mixed] == ["D", "C", "ADHOC"]
    assert [(p.order, p.support) for p in mixed] == [(2, 1)] * 3  # the heaviest: (B, ADHOC)
    assert all(0 <= p.confidence < p.probability for p in mixed)


def test_predicting_before_recording_uses_the_same_history() -> None:
    t = trained({"flow": ["A", "B", "C", "D"]})
    t.record("ADHOC", session=None, duration_s=0.0, rows=0, is_write=False)
    feed(t, ["A", "B"], session="live")
    before = t.predict_next("ADHOC", session="live")  # ADHOC not recorded in "live" yet
    feed(t, ["ADHOC"], session="live")
    after = t.predict_next("ADHOC", session="live")
    assert [(p.shape, p.order) for p in before] == [("C", 0)]
    # the same hypotheses win; the tables now also hold B -> ADHOC
    assert [(p.shape, p.order) for p in after] == [("C", 0), ("ADHOC", 0)]


def test_predictions_without_a_session_stay_first_order() -> None:
    t = trained({"flow": ["A", "B", "C"], "other": ["X", "B", "D"]})
    assert [(p.shape, p.probability, p.order) for p in t.predict_next("B", k=3)] == [
        ("C", 0.5, 1),
        ("D", 0.5, 1),
    ]
    assert t.predict_next("B", session="unknown") == t.predict_next("B")
