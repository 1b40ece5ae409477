"""The memory bounds of a `QueryPatternTracker`; `LearningSettings` holds their rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from kailash_nodes.config import LearningSettings

__all__ = ["BOUND_NAMES", "DEFAULTS", "Bounds", "validate_into"]

DEFAULTS = LearningSettings()
"""The tracker's default options: the one place they are defined is `LearningSettings`."""


def validate_into(
    target: Any, data: dict[str, Any], store: Iterable[str] | None = None
) -> LearningSettings:
    """Validate ``data`` (tracker option names) with `LearningSettings`; store it on ``target``.

    Each validated value named in ``store`` (default: all of ``data``; a float option's
    int becomes a float) is set on the frozen ``target``; the settings are returned.
    Raises `ConfigError` naming every bad option, its value and what is allowed.
    """
    settings: LearningSettings = LearningSettings.build(data)
    for name in data if store is None else store:
        object.__setattr__(target, name, getattr(settings, name))
    return settings


@dataclass(frozen=True, slots=True)
class Bounds:
    """Caps that keep the tracker's memory flat however long it runs.

    Validated at construction by `LearningSettings` (rules and defaults:
    docs/configuration.md). Raises `ConfigError` naming the option, the rule and the value.

    ====================  ==========================================================
    option                bounds
    ====================  ==========================================================
    max_shapes            shapes kept; the least recently seen is evicted with its
                          statistics and the transitions out of it
    max_followers         next shapes kept per context (first and second order)
    max_contexts          second-order contexts (previous shape) kept per shape
    loop_window           statements a loop count looks back over; each session
                          keeps its last loop_window + 1 shapes, each shape at
                          most loop_window - 1 loop contexts (counts 2..window)
    duration_window       most recent durations kept per shape (for p50/p95)
    gap_window            most recent gaps kept per transition (for the delay)
    max_sessions          live sessions; the least recently active is dropped
    session_ttl           seconds a session may stay idle before it is dropped
    max_transition_count  a context's counts are halved when its total gets here
    ====================  ==========================================================

    With the defaults a full tracker holds 2000 duration windows of 128 samples, 16,000
    gap windows of 16, ~2000 x 72 small count entries (more for shapes that repeat
    within a session: up to 7 loop contexts of 8 entries each), 10000 sessions of 9 shape
    references and, with run templates, each session's statements so far (up to
    ``max_run_length``, 64) and up to 1024 counted runs: 37.8 MB measured with
    tracemalloc (``benchmarks/bench_learning.py --memory``).

    >>> Bounds(session_ttl=5).session_ttl
    5.0
    >>> Bounds(max_shapes=0)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: max_shapes must be an integer >= 1 (got max_shapes=0)
    """

    max_shapes: int = DEFAULTS.max_shapes
    max_followers: int = DEFAULTS.max_followers
    max_contexts: int = DEFAULTS.max_contexts
    loop_window: int = DEFAULTS.loop_window
    duration_window: int = DEFAULTS.duration_window
    gap_window: int = DEFAULTS.gap_window
    max_sessions: int = DEFAULTS.max_sessions
    session_ttl: float = DEFAULTS.session_ttl
    max_transition_count: int = DEFAULTS.max_transition_count

    def __post_init__(self) -> None:
        validate_into(self, {name: getattr(self, name) for name in BOUND_NAMES})

    @classmethod
    def from_settings(cls, settings: LearningSettings) -> Bounds:
        """Return the bounds that ``settings`` holds."""
        return cls(**{name: getattr(settings, name) for name in BOUND_NAMES})


BOUND_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Bounds))
"""The `Bounds` fields, in order: the tracker options that cap its memory."""
