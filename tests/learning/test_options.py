"""Tracker options: `LearningSettings` holds every rule and default; options are built from it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes.config import LearningSettings
from kailash_nodes.errors import ConfigError
from kailash_nodes.learning import Bounds, PatternFileError, QueryPatternTracker, TrackerOptions


def test_defaults_agree_across_settings_options_and_bounds() -> None:
    settings = LearningSettings()
    options = TrackerOptions()
    for field in dataclasses.fields(Bounds):
        assert getattr(Bounds(), field.name) == getattr(settings, field.name), field.name
        assert getattr(options.bounds, field.name) == getattr(settings, field.name), field.name
    for field in dataclasses.fields(TrackerOptions):
        if field.name not in ("bounds", "clock"):
            assert getattr(options, field.name) == getattr(settings, field.name), field.name
    assert options.settings() == settings
    assert set(LearningSettings.options()) == {f.name for f in dataclasses.fields(Bounds)} | {
        f.name for f in dataclasses.fields(TrackerOptions)
    } - {"bounds", "clock"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Bounds(max_followers=0), "max_followers must be an integer >= 1"),
        (lambda: Bounds(session_ttl=float("nan")), "session_ttl must be a number > 0"),
        (lambda: Bounds(duration_window=2.0), "duration_window must be an integer >= 1"),
        (lambda: TrackerOptions(order=True), "order must be 1 or 2 (got True of type bool)"),
        (lambda: TrackerOptions(noise_floor=1), "noise_floor must be a number >= 0 and < 1"),
        (lambda: TrackerOptions(persist_path=5), "persist_path must be a non-empty string"),
        (lambda: TrackerOptions(bounds={}), "bounds must be a Bounds (got dict)"),
    ],
)
def test_direct_construction_uses_the_models_rules(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_every_bad_keyword_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as err:
        TrackerOptions.from_keywords(max_shapes=0, order=5, run_templates="yes")
    text = str(err.value)
    assert "max_shapes must be" in text and "order must be" in text
    assert "run_templates must be True or False (got 'yes'" in text


def test_float_options_are_stored_as_floats() -> None:
    options = TrackerOptions.from_keywords(session_ttl=5, noise_floor=0)
    assert type(options.bounds.session_ttl) is float and type(options.noise_floor) is float
    assert type(TrackerOptions(noise_floor=0).noise_floor) is float


def test_a_path_object_is_kept_and_validated_as_its_text(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    options = TrackerOptions.from_keywords(persist_path=path)
    assert options.persist_path is path and TrackerOptions(persist_path=path) == options
    assert options.settings().persist_path == str(path)


def test_options_round_trip_through_settings() -> None:
    clock = lambda: 1.0  # noqa: E731
    settings = LearningSettings.from_options({"max_shapes": 3, "order": 1, "persist_path": "a"})
    options = TrackerOptions.from_settings(settings, clock=clock)
    assert (options.bounds.max_shapes, options.order, options.persist_path) == (3, 1, "a")
    assert options.clock is clock and options.settings() == settings


def test_restore_replaces_what_was_learned(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    saved = QueryPatternTracker()
    for name in ("A", "B"):
        saved.record(name, session="s", duration_s=0.0, rows=0, is_write=False)
    saved.save(path)
    t = QueryPatternTracker()
    t.record("C", session=None, duration_s=0.0, rows=0, is_write=False)
    t.restore(path)
    assert [p.shape for p in t.predict_next("A")] == ["B"]
    assert t.insights()["totals"]["shapes"] == 2
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(PatternFileError, match="not a query-pattern file"):
        t.restore(path)
