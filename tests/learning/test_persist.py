"""Persistence of what a QueryPatternTracker learned: round trip, atomicity, versions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes.errors import ConfigError, KailashNodesError
from kailash_nodes.learning import FORMAT_VERSION, PatternFileError, QueryPatternTracker


def trained(**options: Any) -> QueryPatternTracker:
    """Return a tracker that learned X -> S -> P and Y -> S -> Q, with statistics."""
    t = QueryPatternTracker(**options)
    for i in range(10):
        for first, last in (("X", "P"), ("Y", "Q")):
            session, at = f"{first}{i}", 10.0 * i
            t.record(first, session=session, duration_s=0.001, rows=1, is_write=False, at=at)
            t.record("S", session=session, duration_s=0.002, rows=2, is_write=False, at=at + 1)
            t.record(last, session=session, duration_s=0.003, rows=-1, is_write=True, at=at + 3)
    t.record("S", session=None, duration_s=0.004, rows=0, is_write=False, success=False)
    return t


def test_save_and_load_round_trip_keeps_transitions_and_statistics(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    before = trained()
    before.save(path)
    after = QueryPatternTracker.load(path)
    assert after.insights()["top_shapes"] == before.insights()["top_shapes"]
    assert after.counters == before.counters
    assert after.predict_next("S") == before.predict_next("S")
    assert after.predict_next("X")[0].expected_delay_s == pytest.approx(0.998)
    after.record("Y", session="new", duration_s=0.0, rows=0, is_write=False)
    after.record("S", session="new", duration_s=0.0, rows=0, is_write=False)
    p = after.predict_next("S", session="new")[0]
    assert (p.shape, p.order, p.support) == ("Q", 2, 10)  # second-order contexts survived


def test_persist_path_is_loaded_on_construction_and_written_by_save(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    first = trained(persist_path=path)
    assert not path.exists()
    first.save()
    restarted = QueryPatternTracker(persist_path=path)
    assert restarted.counters == first.counters
    assert restarted.predict_next("X")[0].shape == "S"


def test_save_without_any_path_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="save\\(\\) needs a path"):
        QueryPatternTracker().save()


def test_load_applies_the_new_bounds(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    trained().save(path)
    small = QueryPatternTracker.load(path, max_shapes=2, duration_window=3, max_followers=1)
    shapes = {s["shape"]: s for s in small.insights()["top_shapes"]}
    assert set(shapes) == {"S", "Q"}  # the two most recently seen
    assert shapes["S"]["duration_samples"] == 3
    assert [p.shape for p in small.predict_next("S", k=5)] == ["Q"]  # the edge into a kept one


def test_load_rejects_an_unknown_version_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    trained().save(path)
    document = json.loads(path.read_text())
    document["version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(
        PatternFileError, match=r"version 99 is not supported .*reads versions 1, 2"
    ):
        QueryPatternTracker.load(path)
    with pytest.raises(PatternFileError):
        QueryPatternTracker(persist_path=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read query-pattern file"),
        ('{"format": "other", "version": 1}', "not a query-pattern file"),
        ("[1, 2]", "not a query-pattern file"),
        ('{"format": "kailash_nodes.query_patterns", "version": 1}', "malformed"),
        (
            '{"format": "kailash_nodes.query_patterns", "version": 1, "counters": {},'
            ' "shapes": [{"shape": "A"}]}',
            "malformed",
        ),
    ],
)
def test_load_rejects_corrupt_or_foreign_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "patterns.json"
    path.write_text(content)
    with pytest.raises(PatternFileError, match=message) as info:
        QueryPatternTracker.load(path)
    assert str(path) in str(info.value) and isinstance(info.value, KailashNodesError)


def test_load_of_a_missing_file_raises_pattern_file_error(tmp_path: Path) -> None:
    with pytest.raises(PatternFileError, match="cannot read"):
        QueryPatternTracker.load(tmp_path / "absent.json")


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "patterns.json"
    trained().save(path)
    before = path.read_bytes()

    def broken_dump(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)  # what persist calls
    with pytest.raises(OSError, match="disk full"):
        QueryPatternTracker().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["patterns.json"]


async def test_save_async_writes_the_same_document(tmp_path: Path) -> None:
    t = trained()
    await t.save_async(tmp_path / "a.json")
    t.save(tmp_path / "b.json")
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a.pop("saved_at") and b.pop("saved_at")
    assert a == b


def _shape_v1(name: str, count: int, followers: str, contexts: str = "[]") -> str:
    return (
        f'{{"shape": "{name}", "count": {count}, "errors": 0, "reads": {count}, "writes": 0,'
        f' "rows": {count}, "row_samples": {count}, "durations_s": [0.001],'
        f' "followers": {followers}, "contexts": {contexts}}}'
    )


# What this package wrote before loop contexts and session starts (format version 1): three
# runs each of X -> S -> P and Y -> S -> Q.
VERSION_1 = (
    '{"format": "kailash_nodes.query_patterns", "version": 1,'
    ' "saved_at": "2024-01-01T00:00:00+00:00",'
    ' "counters": {"records": 18, "records_without_session": 0, "transitions": 12,'
    ' "shapes_evicted": 0, "sessions_evicted": 0, "sessions_expired": 0},'
    ' "shapes": ['
    + ", ".join(
        [
            _shape_v1("X", 3, '{"total": 3, "edges": [["S", 3, [0.998]]]}'),
            _shape_v1("P", 3, '{"total": 0, "edges": []}'),
            _shape_v1("Y", 3, '{"total": 3, "edges": [["S", 3, [0.998]]]}'),
            _shape_v1(
                "S",
                6,
                '{"total": 6, "edges": [["P", 3, [1.997]], ["Q", 3, [1.997]]]}',
                '[["X", {"total": 3, "edges": [["P", 3]]}],'
                ' ["Y", {"total": 3, "edges": [["Q", 3]]}]]',
            ),
            _shape_v1("Q", 3, '{"total": 0, "edges": []}'),
        ]
    )
    + "]}"
)


def test_a_version_1_file_still_loads_with_no_loops_or_starts(tmp_path: Path) -> None:
    path = tmp_path / "v1.json"
    path.write_text(VERSION_1)
    t = QueryPatternTracker.load(path)
    assert t.counters["transitions"] == 12 and t._starts.total == 0
    assert all(not s.loops for s in t._shapes.values())
    assert t._shapes["S"].contexts["X"].top == 3  # recomputed on load
    t.record("Y", session="new", duration_s=0.0, rows=0, is_write=False)
    t.record("S", session="new", duration_s=0.0, rows=0, is_write=False)
    p = t.predict_next("S", session="new")[0]
    assert (p.shape, p.order, p.support) == ("Q", 2, 3)
    t.save(path)
    assert json.loads(path.read_text())["version"] == FORMAT_VERSION == 2


def test_round_trip_keeps_loop_contexts_session_starts_and_start_contexts(
    tmp_path: Path,
) -> None:
    before = QueryPatternTracker(run_templates=False)  # the transition tables decide
    for i in range(5):
        for j, shape in enumerate(["L", "P", "R", "P", "R", "P", "R", "E"]):
            at = 100.0 * i + j
            before.record(shape, session=f"r{i}", duration_s=0.0, rows=0, is_write=False, at=at)
    path = tmp_path / "patterns.json"
    before.save(path)
    document = json.loads(path.read_text())
    assert document["starts"] == {"total": 5, "edges": [["L", 5]]}
    r = next(s for s in document["shapes"] if s["shape"] == "R")
    assert sorted(r["loops"]) == [
        [2, {"total": 5, "edges": [["P", 5]]}],
        [3, {"total": 5, "edges": [["E", 5]]}],
    ]
    after = QueryPatternTracker.load(path, run_templates=False)
    assert after._starts.edges.keys() == {"L"} and after._starts.top == 5
    assert after._shapes["L"].contexts.keys() == before._shapes["L"].contexts.keys()
    for shapes in (["L"], ["L", "P", "R"], ["L", "P", "R", "P", "R", "P", "R"], ["X"]):
        for t in (before, after):
            for shape in shapes:
                t.record(shape, session="live", duration_s=0.0, rows=0, is_write=False, at=1e3)
        assert after.predict_next(shapes[-1], session="live") == before.predict_next(
            shapes[-1], session="live"
        )
        for t in (before, after):
            t.end_session("live")
    assert after.predict_next("R", session=None)[0].order == 1
    small = QueryPatternTracker.load(path, loop_window=2)
    assert set(small._shapes["R"].loops) == {2}  # loop counts above the window are dropped


def noise_trained(**options: Any) -> QueryPatternTracker:
    """Return a tracker that saw runs of A -> B -> ... -> F, each with one step from B to
    E replaced by an ad-hoc statement seen once."""
    t = QueryPatternTracker(**options)
    for i in range(200):
        shapes = list("ABCDEF")
        shapes[1 + i % 4] = f"ADHOC{i}"
        for shape in shapes:
            t.record(shape, session=f"r{i}", duration_s=0.0, rows=0, is_write=False)
    return t


def test_round_trip_keeps_the_learned_noise_kinds(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    before = noise_trained()
    counts = before.insights()["totals"]["noise_kinds"]
    assert counts["inserted"] == 0 and counts["replaced"] > 100
    before.save(path)
    document = json.loads(path.read_text())
    assert document["version"] == 2 and document["noise_kinds"] == counts
    after = QueryPatternTracker.load(path)
    assert after.insights()["totals"]["noise_kinds"] == counts
    for t in (before, after):
        for shape in ("A", "B", "NEW"):
            t.record(shape, session="live", duration_s=0.0, rows=0, is_write=False)
    assert after.predict_next("NEW", session="live") == before.predict_next("NEW", session="live")
    assert after.predict_next("NEW", session="live")[0].shape == "D"  # NEW replaced C
    fresh = QueryPatternTracker.load(path, learn_noise_kind=False)  # ignores the counts
    assert "noise_kinds" not in fresh.insights()["totals"]
    fresh.save(path)
    assert "noise_kinds" not in json.loads(path.read_text())


def test_noise_kinds_are_optional_and_cut_to_the_bounds_on_load(tmp_path: Path) -> None:
    path = tmp_path / "patterns.json"
    noise_trained().save(path)
    document = json.loads(path.read_text())
    del document["noise_kinds"]  # as written before they were learned
    path.write_text(json.dumps(document))
    t = QueryPatternTracker.load(path)
    assert t.insights()["totals"]["noise_kinds"] == {"inserted": 0, "replaced": 0}
    document["noise_kinds"] = {"inserted": 10, "replaced": 90}
    path.write_text(json.dumps(document))
    small = QueryPatternTracker.load(path, max_transition_count=30)  # halved twice
    assert small.insights()["totals"]["noise_kinds"] == {"inserted": 2, "replaced": 22}
    assert QueryPatternTracker.load(path).insights()["totals"]["noise_kinds"] == {
        "inserted": 10,
        "replaced": 90,
    }


@pytest.mark.parametrize("kinds", ['{"inserted": -1}', '{"replaced": "many"}', "[1, 2]"])
def test_load_rejects_malformed_noise_kinds(tmp_path: Path, kinds: str) -> None:
    path = tmp_path / "patterns.json"
    noise_trained().save(path)
    text = path.read_text()
    start = text.index('"noise_kinds":')
    path.write_text(text[:start] + f'"noise_kinds":{kinds}}}')
    with pytest.raises(PatternFileError, match="malformed"):
        QueryPatternTracker.load(path)
