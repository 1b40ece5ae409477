"""Learning settings: the pattern tracker's options, validated (the tracker's own names).

The one place the tracker's rules and defaults are defined: `kailash_nodes.learning`'s
``TrackerOptions`` and ``Bounds`` take their defaults from this model and validate every
data option with it (``TrackerOptions.from_keywords`` through `from_options`). The pool
node's tracker gets ``persist_path`` = the pool's ``pattern_store``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from kailash_nodes.config.model import Settings

__all__ = ["LearningSettings"]


class LearningSettings(Settings):
    """Validated ``QueryPatternTracker`` options: memory bounds and model components.

    Bounds (see ``learning.Bounds``): ``max_shapes``, ``max_followers``, ``max_contexts``,
    ``loop_window``, ``duration_window``, ``gap_window``, ``max_sessions``,
    ``session_ttl`` (s), ``max_transition_count``. Model: ``order`` (1 or 2) and the
    components the second order enables (meanings: ``learning.TrackerOptions``).
    ``persist_path`` is text here; the tracker also takes a path object (validated as its
    text) and a ``clock`` (a callable, not data, so not a setting).
    """

    owner: ClassVar[str] = "QueryPatternTracker"

    max_shapes: Annotated[int, Field(ge=1)] = 2000
    max_followers: Annotated[int, Field(ge=1)] = 8
    max_contexts: Annotated[int, Field(ge=1)] = 8
    loop_window: Annotated[int, Field(ge=2)] = 8
    duration_window: Annotated[int, Field(ge=1)] = 128
    gap_window: Annotated[int, Field(ge=1)] = 16
    max_sessions: Annotated[int, Field(ge=1)] = 10_000
    session_ttl: Annotated[float, Field(gt=0)] = 300.0
    max_transition_count: Annotated[int, Field(ge=2)] = 1000
    order: Annotated[int, Field(ge=1, le=2, json_schema_extra={"rule": "1 or 2"})] = 2
    start_context: bool = True
    loop_contexts: bool = True
    noise_floor: Annotated[
        float, Field(ge=0, lt=1, json_schema_extra={"rule": "a number >= 0 and < 1"})
    ] = 0.025
    learn_noise_kind: bool = True
    min_context_support: Annotated[int, Field(ge=1)] = 1
    run_templates: bool = True
    max_run_length: Annotated[int, Field(ge=1)] = 64
    persist_path: Annotated[str | None, Field(min_length=1)] = None
