"""QueryPatternTracker: learning, predicting, sessions, bounds and insights (pure logic)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import fields

import pytest

from kailash_nodes.errors import ConfigError
from kailash_nodes.learning import Bounds, Prediction, QueryPatternTracker, TrackerOptions

CYCLE = ["SELECT a", "SELECT b", "UPDATE c", "INSERT d", "SELECT e", "DELETE f"]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(t: QueryPatternTracker, shapes: Iterable[str], session: str | None = "s") -> None:
    """Record ``shapes`` in order in ``session``, 1 s apart, 0.1 s each."""
    for shape in shapes:
        t.record(shape, session=session, duration_s=0.1, rows=1, is_write=False)


def test_predicts_the_successor_on_a_deterministic_cycle() -> None:
    t = QueryPatternTracker()
    feed(t, CYCLE * 20)
    for i, shape in enumerate(CYCLE[:-1]):
        top = t.predict_next(shape, k=3)
        assert [p.shape for p in top] == [CYCLE[i + 1]]
        assert top[0].probability == 1.0
    best = t.predict_next("SELECT a", session="s")[0]
    assert (best.support, best.order) == (20, 1)  # first order: 20 A -> B beats 19 (F, A) -> B
    assert 0.8 < best.confidence < 1.0


def test_confidence_is_the_wilson_bound_and_grows_with_support() -> None:
    few, many = QueryPatternTracker(), QueryPatternTracker()
    for t, n in ((few, 2), (many, 50)):
        for i in range(n):
            feed(t, ["A", "B"], session=f"b{i}")
            feed(t, ["A", "C"], session=f"c{i}")
    p_few, p_many = few.predict_next("A")[0], many.predict_next("A")[0]
    assert p_few.probability == p_many.probability == 0.5
    assert 0 < p_few.confidence < p_many.confidence < 0.5
    assert (p_few.support, p_many.support) == (4, 100)


def test_expected_delay_is_the_median_gap_from_end_to_next_start() -> None:
    t = QueryPatternTracker()
    for i, gap in enumerate([0.5, 0.7, 10.0]):
        session = f"run{i}"
        t.record("A", session=session, duration_s=0.1, rows=0, is_write=False, at=100.0)
        end_b = 100.0 + gap + 0.2  # B starts `gap` after A ended and runs 0.2 s
        t.record("B", session=session, duration_s=0.2, rows=0, is_write=False, at=end_b)
    (p,) = t.predict_next("A")
    assert p.expected_delay_s == pytest.approx(0.7)


def test_second_order_context_disambiguates_a_shared_shape() -> None:
    t = QueryPatternTracker()
    for i in range(10):
        feed(t, ["X", "S", "P"], session=f"x{i}")
        feed(t, ["Y", "S", "Q"], session=f"y{i}")
    feed(t, ["Y", "S"], session="live")
    p = t.predict_next("S", session="live")[0]
    assert (p.shape, p.order) == ("Q", 2)
    assert 0.95 < p.probability < 1.0  # ~2.5% that S was noise and Y's successor comes
    assert t.predict_next("S")[0].probability == 0.5  # no session: first order only
    feed(t, ["X"], session="next")  # predicting S before it is recorded: context (X, S)
    assert t.predict_next("S", session="next")[0].shape == "P"


def test_one_observed_pair_does_not_override_a_well_supported_transition() -> None:
    t = QueryPatternTracker()
    for i in range(30):
        feed(t, ["A", "B", "C"], session=f"r{i}")
    feed(t, ["Z", "B", "ODD"], session="noise")  # context (Z, B) seen once
    feed(t, ["Z", "B"], session="live")
    p = t.predict_next("B", session="live")[0]
    assert (p.shape, p.order) == ("C", 1)


def test_first_order_tracker_learns_no_second_order_context() -> None:
    t = QueryPatternTracker(order=1)
    for i in range(5):
        feed(t, ["X", "S", "P", "S", "P"], session=f"x{i}")
    assert all(not s.contexts and not s.loops for s in t._shapes.values())
    assert t._starts.total == 0 and t.noise_floor == 0.0
    assert t.predict_next("S", session="x4")[0].order == 1


def test_learns_the_cycle_despite_20_percent_noise() -> None:
    rng = random.Random(4)
    noise_shapes = CYCLE + [f"SELECT adhoc_{i}" for i in range(20)]
    t = QueryPatternTracker()
    hits = scored = 0
    for run in range(300):
        session, prev = f"run{run}", None
        for step in CYCLE:
            roll = rng.random()
            shapes = [rng.choice(noise_shapes)] if roll < 0.2 else []
            shapes += [step] if roll >= 0.1 else []  # < 0.1 substitutes, < 0.2 inserts
            for shape in shapes:
                if prev is not None and run >= 50:
                    top = t.predict_next(prev, session=session, k=1)
                    hits += bool(top) and top[0].shape == shape
                    scored += 1
                feed(t, [shape], session=session)
                prev = shape
    for i, shape in enumerate(CYCLE[:-1]):
        assert t.predict_next(shape)[0].shape == CYCLE[i + 1]
    # ~82% of targets are cycle steps; noise is unpredictable. Without the noise back-off
    # and the session-start context this scores ~0.70, with them ~0.75.
    assert hits / scored >= 0.72


def test_interleaved_sessions_do_not_cross_contaminate() -> None:
    t = QueryPatternTracker()
    one, two = ["A", "B", "C"] * 10, ["X", "Y", "Z"] * 10
    for a, x in zip(one, two, strict=True):
        feed(t, [a], session="one")
        feed(t, [x], session="two")
    assert [p.shape for p in t.predict_next("A")] == ["B"]
    assert [p.shape for p in t.predict_next("C")] == ["A"]
    assert [p.shape for p in t.predict_next("X")] == ["Y"]
    assert [p.shape for p in t.predict_next("Z")] == ["X"]
    assert t.counters["transitions"] == 2 * 29


def test_records_without_session_update_statistics_but_learn_no_transition() -> None:
    t = QueryPatternTracker()
    feed(t, ["A", "B", "A", "B"], session=None)
    assert t.predict_next("A") == []
    shapes = {s["shape"]: s for s in t.insights()["top_shapes"]}
    assert shapes["A"]["count"] == 2
    assert t.counters["records_without_session"] == 4


@pytest.mark.parametrize("parameters", [[1, "x"], (1, "x"), {"id": 1}, None])
def test_record_execution_accepts_list_tuple_dict_and_none_parameters(parameters: object) -> None:
    t = QueryPatternTracker()
    for fp in ("SELECT a", "SELECT b"):
        t.record_execution(fp, 2.0, "conn-1", parameters, True, 3, session_id="wf-run")
    (p,) = t.predict_next("SELECT a")
    assert p.shape == "SELECT b"
    top = t.insights()["top_shapes"][0]
    assert (top["count"], top["kind"], top["mean_rows"], top["p50_ms"]) == (1, "unknown", 3, 2.0)


def test_predict_next_queries_returns_the_original_dict_shape() -> None:
    t = QueryPatternTracker()
    for i in range(3):
        t.record("A", session=f"r{i}", duration_s=0.0, rows=0, is_write=False, at=0.0)
        t.record("B", session=f"r{i}", duration_s=0.0, rows=0, is_write=False, at=2.0)
        t.record("C", session=f"r{i}", duration_s=0.0, rows=0, is_write=False, at=602.0)
    (d,) = t.predict_next_queries("A")
    assert d["fingerprint"] == "B" and d["probability"] == 1.0
    assert 0 < d["confidence"] < 1 and d["expected_delay_s"] == 2.0
    assert {"fingerprint", "probability", "confidence", "expected_time"} <= d.keys()
    assert t.predict_next_queries("B", time_window_minutes=5) == []  # expected in 10 min
    assert len(t.predict_next_queries("B", time_window_minutes=11)) == 1
    assert t.predict_next_queries("unknown") == []


def test_idle_sessions_expire_after_the_ttl() -> None:
    clock = FakeClock()
    t = QueryPatternTracker(session_ttl=60.0, clock=clock)
    feed(t, ["A"], session="old")
    clock.now = 61.0
    feed(t, ["X"], session="new")  # expires "old" on the way
    feed(t, ["B"], session="old")  # a fresh session: no A -> B
    assert t.predict_next("A") == []
    assert t.counters["sessions_expired"] == 1


def test_sessions_beyond_the_cap_drop_the_least_recently_active() -> None:
    t = QueryPatternTracker(max_sessions=2)
    for s in ("one", "two", "three"):
        feed(t, ["A"], session=s)
    feed(t, ["B"], session="one")  # "one" was dropped: no A -> B
    assert t.predict_next("A") == []
    assert t.counters["sessions_evicted"] == 2
    t.end_session("three")
    assert t.insights()["totals"]["live_sessions"] == 1


def test_least_recently_seen_shape_is_evicted_with_its_transitions() -> None:
    t = QueryPatternTracker(max_shapes=3)
    feed(t, ["B", "A"], session="s")  # B -> A
    feed(t, ["A", "Q"], session="t")  # A -> Q
    feed(t, ["B", "C", "D"], session=None)  # A is now the least recently seen
    assert [s["shape"] for s in t.insights()["top_shapes"]] == ["B", "C", "D"]
    assert t.predict_next("A") == []  # its own transitions went with it
    assert t.predict_next("B") == []  # the edge into it is hidden
    assert t.counters["shapes_evicted"] == 2


def test_full_follower_table_drops_its_weakest_entry() -> None:
    t = QueryPatternTracker(max_followers=2)
    for i, nxt in enumerate(["B", "B", "B", "C", "D"]):
        feed(t, ["A", nxt], session=f"r{i}")
    assert [p.shape for p in t.predict_next("A")] == ["B", "D"]
    assert t.predict_next("A")[0].support == 5


def test_counts_are_halved_when_a_context_reaches_its_cap() -> None:
    t = QueryPatternTracker(max_transition_count=10)
    for i in range(9):
        feed(t, ["A", "B" if i % 3 else "C"], session=f"r{i}")
    feed(t, ["A", "B"], session="last")
    p = t.predict_next("A")[0]
    assert (p.shape, p.support) == ("B", 5)
    assert p.probability == pytest.approx(3 / 5)


def test_bounds_hold_under_100k_records_with_many_shapes() -> None:
    rng = random.Random(7)
    b = Bounds(
        max_shapes=50,
        max_followers=4,
        max_contexts=3,
        loop_window=4,
        duration_window=16,
        gap_window=4,
        max_sessions=20,
        max_transition_count=200,
    )
    t = QueryPatternTracker(**{f.name: getattr(b, f.name) for f in fields(b)})
    shapes = [f"SELECT t{i}" for i in range(500)]
    hot = shapes[:10]  # a hot set keeps some shapes alive, repeating, and their tables full
    names = rng.choices(hot, k=60_000) + rng.choices(shapes, k=40_000)
    rng.shuffle(names)
    sessions = rng.choices([f"s{i}" for i in range(100)], k=len(names))
    record = t.record
    for name, session in zip(names, sessions, strict=True):
        record(name, session=session, duration_s=0.001, rows=1, is_write=False)
    assert len(t._shapes) <= 50 and len(t._sessions) <= 20
    for stats in t._shapes.values():
        assert len(stats.durations) <= 16
        assert len(stats.followers.edges) <= 4 and stats.followers.total < 200
        assert all(e.gaps is not None and len(e.gaps) <= 4 for e in stats.followers.edges.values())
        assert len(stats.contexts) <= 3
        assert all(len(c.edges) <= 4 and c.total < 200 for c in stats.contexts.values())
        assert set(stats.loops) <= {2, 3, 4}
        assert all(len(c.edges) <= 4 and c.total < 200 for c in stats.loops.values())
    assert any(stats.loops for stats in t._shapes.values())  # the bound was exercised
    assert all(len(state.recent) <= 5 for state in t._sessions.values())
    assert len(t._starts.edges) <= 4 and t._starts.total < 200
    assert t.counters["records"] == 100_000 and t.counters["shapes_evicted"] > 400


def test_insights_report_top_shapes_percentiles_kind_errors_and_successors() -> None:
    t = QueryPatternTracker()
    for i in range(1, 21):
        session = f"r{i}"
        t.record("SELECT u", session=session, duration_s=i / 1000, rows=i, is_write=False)
        t.record("UPDATE u", session=session, duration_s=0.005, rows=-1, is_write=True)
    t.record("UPDATE u", session=None, duration_s=0.005, rows=1, is_write=True, success=False)
    report = t.insights(top=1)
    (top,) = report["top_shapes"]
    assert top["shape"] == "UPDATE u" and top["count"] == 21 and top["errors"] == 1
    assert (top["kind"], top["writes"], top["mean_rows"], top["row_samples"]) == ("write", 21, 1, 1)
    select = t.insights()["top_shapes"][1]
    assert (select["p50_ms"], select["p95_ms"], select["duration_samples"]) == (10.0, 19.0, 20)
    assert select["kind"] == "read" and select["mean_rows"] == 10.5
    assert select["successors"][0]["shape"] == "UPDATE u"
    assert select["successors"][0]["probability"] == 1.0 and select["successor_samples"] == 20
    totals = report["totals"]
    assert (totals["records"], totals["shapes"], totals["transitions"]) == (41, 2, 20)
    assert totals["bounds"]["max_shapes"] == 2000


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="duration_s must be >= 0"):
        QueryPatternTracker().record("A", session=None, duration_s=-1.0, rows=0, is_write=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_shapes": 0}, "max_shapes must be an integer >= 1 (got max_shapes=0)"),
        ({"session_ttl": 0}, "session_ttl must be a number > 0 (got session_ttl=0)"),
        ({"max_transition_count": 1}, "max_transition_count must be an integer >= 2"),
        ({"order": 3}, "order must be 1 or 2 (got order=3)"),
        ({"min_context_support": 0}, "min_context_support must be an integer >= 1"),
        ({"noise_floor": "x"}, "noise_floor must be a number >= 0 and < 1 (got 'x' of type str)"),
        ({"run_templates": 1}, "run_templates must be True or False (got 1 of type int)"),
        ({"max_run_length": 0}, "max_run_length must be an integer >= 1"),
        ({"max_shape": 5}, "unknown option(s) ['max_shape'] for QueryPatternTracker"),
        ({"loop_window": 1}, "loop_window must be an integer >= 2 (got loop_window=1)"),
        ({"noise_floor": -0.1}, "noise_floor must be a number >= 0 and < 1"),
        ({"noise_floor": 1}, "noise_floor must be a number >= 0 and < 1 (got noise_floor=1)"),
        ({"persist_path": ""}, "persist_path must be a non-empty string or None"),
        ({"clock": 3}, "clock must be callable (got int)"),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(
    options: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        QueryPatternTracker(**options)


def test_options_object_and_keywords_build_the_same_tracker() -> None:
    options = TrackerOptions(bounds=Bounds(max_shapes=2), run_templates=False)
    by_object = QueryPatternTracker(options)
    by_keywords = QueryPatternTracker(max_shapes=2, run_templates=False)
    assert by_object.options == by_keywords.options == options
    for t in (by_object, by_keywords):
        for name in ("A", "B", "C"):
            t.record(name, session=None, duration_s=0.0, rows=0, is_write=False)
        assert t.insights()["totals"]["shapes"] == 2
        assert t.insights()["totals"].get("run_templates") is None


def test_options_and_keywords_together_are_rejected() -> None:
    with pytest.raises(ConfigError, match="not both"):
        QueryPatternTracker(TrackerOptions(), max_shapes=3)
    with pytest.raises(ConfigError, match="must be a TrackerOptions"):
        QueryPatternTracker({"max_shapes": 3})  # type: ignore[arg-type]


def test_default_options_hold_the_documented_bounds() -> None:
    assert TrackerOptions().bounds == Bounds()
    assert QueryPatternTracker().bounds == Bounds()


def test_prediction_is_frozen() -> None:
    p = Prediction("A", 1.0, 0.5, None, 3)
    with pytest.raises(AttributeError):
        p.shape = "B"  # type: ignore[misc]
