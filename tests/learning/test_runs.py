"""Run templates: whole runs learned from finished sessions, predicting across noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kailash_nodes.learning import PatternFileError, QueryPatternTracker
from kailash_nodes.learning.runs import NoiseLevel, RunTemplates
from kailash_nodes.learning.tracker import RUN_TEMPLATE

FLOW = ["LOGIN", "USER", "CART", "PAY", "AUDIT"]


def trained(runs: int = 20, **options: object) -> QueryPatternTracker:
    """A tracker that saw ``runs`` finished runs of FLOW, each with one statement replaced
    by an ad-hoc one seen once (so no transition table ever saw two in a row)."""
    t = QueryPatternTracker(**options)
    for i in range(runs):
        shapes = list(FLOW)
        if i % 2:
            shapes[1 + i % 3] = f"ADHOC{i}"
        for shape in shapes:
            t.record(shape, session=f"r{i}", duration_s=0.0, rows=0, is_write=False)
        t.end_session(f"r{i}")
    return t


def feed(t: QueryPatternTracker, session: str, shapes: list[str]) -> None:
    for shape in shapes:
        t.record(shape, session=session, duration_s=0.0, rows=0, is_write=False)


def test_a_finished_run_seen_three_times_becomes_a_template() -> None:
    t = RunTemplates()
    for _ in range(2):
        t.finish(FLOW, clean=0.8)
    assert t.templates == {} and t.start() is None
    t.finish(FLOW, clean=0.8)
    assert list(t.templates) == [tuple(FLOW)]
    t.finish(list(range(100)), clean=0.8)  # type: ignore[arg-type]  # too long: not counted
    assert t.finished == 3


def test_templates_are_weighted_by_how_often_they_run_not_how_often_they_come_out_clean() -> None:
    t = RunTemplates(min_count=1, rebuild_every=1)
    short, long = ("A", "B"), ("A", "C", "D", "E", "F", "G")
    for _ in range(64):
        t.finish(short, clean=0.5)
    for _ in range(4):  # as often run (256 times each), clean 0.5**6 of the time, not 0.5**2
        t.finish(long, clean=0.5)
    assert t.templates[long] == t.templates[short] == 0.5


def test_counted_runs_stay_bounded() -> None:
    t = RunTemplates(max_candidates=8, rebuild_every=1000)
    for i in range(100):
        t.finish(("A", f"X{i}", "B"), clean=0.8)
        t.finish(("A", "B"), clean=0.8)
        assert len(t.candidates) <= 9
    assert ("A", "B") in t.candidates  # the one that repeats survives the halvings


def test_after_an_inserted_statement_the_template_predicts_the_step_it_displaced() -> None:
    t = trained(runs=30)
    feed(t, "live", ["LOGIN", "USER", "NEVER_SEEN"])
    best = t.predict_next("NEVER_SEEN", session="live", k=2)
    assert best[0].order == RUN_TEMPLATE
    assert {p.shape for p in best} == {"CART", "PAY"}  # inserted before CART, or replaced it
    totals = t.insights()["totals"]["run_templates"]
    assert totals["finished_runs"] == 30 and totals["templates"] == 1
    assert totals["statements_surprised"] == 1 and totals["statements_explained"] == 2
    feed(t, "live", ["CART"])
    (after_cart,) = t.predict_next("CART", session="live", k=1)
    assert (after_cart.shape, after_cart.order) == ("PAY", RUN_TEMPLATE)
    assert after_cart.probability > 0.5
    assert after_cart.support >= 3 and 0 < after_cart.confidence < after_cart.probability


def test_a_prediction_before_recording_looks_ahead_without_recording() -> None:
    t = trained(runs=30)
    feed(t, "live", ["LOGIN"])
    ahead = t.predict_next("USER", session="live", k=1)[0]
    assert (ahead.shape, ahead.order) == ("CART", RUN_TEMPLATE)
    assert t.predict_next("LOGIN", session="live", k=1)[0].shape == "USER"  # unchanged


def test_a_workflow_no_template_knows_hands_back_to_the_transition_tables() -> None:
    t = trained(runs=30)
    for i in range(5):  # another workflow, learned by the tables but never finished
        feed(t, f"other{i}", ["REPORT", "SUM", "EXPORT"])
    feed(t, "live", ["REPORT", "SUM"])
    best = t.predict_next("SUM", session="live", k=1)[0]
    assert best.shape == "EXPORT" and best.order != RUN_TEMPLATE


def test_a_session_past_the_end_of_every_template_stops_using_them() -> None:
    t = trained(runs=30)
    feed(t, "live", [*FLOW, "LOGIN"])
    best = t.predict_next("LOGIN", session="live", k=1)
    assert not best or best[0].order != RUN_TEMPLATE


def test_without_run_templates_nothing_is_counted() -> None:
    t = trained(runs=30, run_templates=False)
    feed(t, "live", ["LOGIN", "USER", "NEVER_SEEN"])
    assert all(p.order != RUN_TEMPLATE for p in t.predict_next("NEVER_SEEN", session="live"))
    assert "runs" not in t._document()


def test_expired_and_evicted_sessions_count_as_finished_runs() -> None:
    t = QueryPatternTracker(session_ttl=10.0, max_sessions=2)
    runs = t._runs
    assert runs is not None
    for i in range(3):
        for j, shape in enumerate(FLOW):
            t.record(shape, session=f"r{i}", duration_s=0.0, rows=0, is_write=False, at=100 * i + j)
    assert runs.finished == 2  # r0 evicted at r2's start (max_sessions), r1 expired (ttl)
    assert list(runs.templates) == []
    t.record("LOGIN", session="late", duration_s=0.0, rows=0, is_write=False, at=1000.0)
    assert runs.finished == 3 and list(runs.templates) == [tuple(FLOW)]


def test_run_templates_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    before = trained(runs=30)
    before.save(path)
    saved = json.loads(path.read_text())["runs"]
    assert saved["finished"] == 30 and [FLOW, 15] in saved["sequences"]
    after = QueryPatternTracker.load(path)
    for t in (before, after):
        feed(t, "live", ["LOGIN", "USER", "NEVER_SEEN"])
    assert after.predict_next("NEVER_SEEN", session="live") == before.predict_next(
        "NEVER_SEEN", session="live"
    )
    small = QueryPatternTracker.load(path, max_run_length=3)  # FLOW is longer: not kept
    assert small._runs is not None and small._runs.templates == {}


def test_noise_level_is_bounded_and_decays() -> None:
    level = NoiseLevel(halve_at=10)
    for i in range(25):
        level.add(surprised=i % 5 == 0)
    assert level.explained + level.surprised < 10
    assert 0.01 <= level.rate <= 0.5


def test_a_malformed_runs_part_is_a_pattern_file_error(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    trained(runs=6).save(path)
    document = json.loads(path.read_text())
    for bad in ([["LOGIN", 3]], [[[], 3]], [[["LOGIN"], 0]], [[["LOGIN"], "x"]]):
        document["runs"]["sequences"] = bad
        path.write_text(json.dumps(document))
        with pytest.raises(PatternFileError, match="malformed"):
            QueryPatternTracker.load(path)
    del document["runs"]  # written before run templates existed: loads without them
    path.write_text(json.dumps(document))
    runs = QueryPatternTracker.load(path)._runs
    assert runs is not None and runs.finished == 0


def test_runs_longer_than_max_run_length_are_neither_counted_nor_predicted_from() -> None:
    t = trained(runs=30, max_run_length=4)  # FLOW has 5 statements
    runs = t._runs
    assert runs is not None and runs.finished == 0 and runs.templates == {}
    short = trained(runs=30)
    feed(short, "live", [*FLOW[:2], "NEVER_SEEN"])
    assert short.predict_next("NEVER_SEEN", session="live")[0].order == RUN_TEMPLATE
    long_session = QueryPatternTracker(max_run_length=2)
    feed(long_session, "s", FLOW)
    assert long_session._sessions["s"].run is not None
    assert long_session._sessions["s"].run.shapes is None  # past the cap: no template


def test_interleaved_sessions_are_learned_each_on_its_own() -> None:
    t = QueryPatternTracker()
    other = ["REPORT", "SUM", "EXPORT"]
    for batch in range(4):  # a FLOW run and a report run, statement by statement in turn
        a, b = f"flow{batch}", f"report{batch}"
        for i in range(len(FLOW)):
            feed(t, a, [FLOW[i]])
            if i < len(other):
                feed(t, b, [other[i]])
        t.end_session(a)
        t.end_session(b)
    runs = t._runs
    assert runs is not None and set(runs.templates) == {tuple(FLOW), tuple(other)}
    feed(t, "live", ["REPORT", "NEVER_SEEN"])
    best = t.predict_next("NEVER_SEEN", session="live", k=2)
    assert best[0].order == RUN_TEMPLATE and {p.shape for p in best} <= {"SUM", "EXPORT"}
