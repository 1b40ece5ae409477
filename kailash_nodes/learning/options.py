"""`TrackerOptions`: every option of a `QueryPatternTracker`, validated by `LearningSettings`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kailash_nodes.config import LearningSettings
from kailash_nodes.errors import ConfigError
from kailash_nodes.learning.bounds import BOUND_NAMES, DEFAULTS, Bounds, validate_into

__all__ = ["StrPath", "TrackerOptions"]

StrPath = str | os.PathLike[str]

_MODEL = (
    "order",
    "start_context",
    "loop_contexts",
    "noise_floor",
    "learn_noise_kind",
    "min_context_support",
    "run_templates",
    "max_run_length",
)
"""The fields besides bounds, persist_path and clock; `LearningSettings` has their rules."""


@dataclass(frozen=True, slots=True)
class TrackerOptions:
    """What a `QueryPatternTracker` learns and how much it keeps.

    Every data option is validated by `LearningSettings`, which holds the rules and the
    defaults (docs/configuration.md lists them); ``clock`` must be callable and
    ``persist_path`` may also be a path object. Raises `ConfigError` naming the option,
    the value and what is allowed.

    =====================  ======================================================
    option                 meaning
    =====================  ======================================================
    bounds                 memory caps (`Bounds`; each also a keyword of
                           `from_keywords`)
    order                  1: first-order transitions only (every option below
                           but ``persist_path`` and ``clock`` then has no
                           effect); 2: second-order contexts too
    start_context          the session's start counts as the shape before its
                           first statement
    loop_contexts          learn what follows a shape by how often it recurred
                           lately (`kailash_nodes.learning.history.loop_count`)
    noise_floor            share below which a statement is treated as noise by
                           the back-off (`kailash_nodes.learning.history`);
                           0 turns the back-off off
    learn_noise_kind       the back-off learns whether noise statements are
                           inserted between steps or replace them
    min_context_support    observations a second-order or loop context needs
                           before it may decide
    run_templates          finished sessions that repeat become templates that
                           predict (`kailash_nodes.learning.runs`)
    max_run_length         the longest session counted as a run
    persist_path           JSON file loaded at construction when it exists and
                           written by ``save``
    clock                  time source when ``record`` gets no ``at``
                           (default ``time.monotonic``)
    =====================  ======================================================

    >>> TrackerOptions.from_keywords(max_shapes=10, run_templates=False).bounds.max_shapes
    10
    >>> TrackerOptions(order=3)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: order must be 1 or 2 (got order=3)
    """

    bounds: Bounds = field(default_factory=Bounds)
    order: int = DEFAULTS.order
    start_context: bool = DEFAULTS.start_context
    loop_contexts: bool = DEFAULTS.loop_contexts
    noise_floor: float = DEFAULTS.noise_floor
    learn_noise_kind: bool = DEFAULTS.learn_noise_kind
    min_context_support: int = DEFAULTS.min_context_support
    run_templates: bool = DEFAULTS.run_templates
    max_run_length: int = DEFAULTS.max_run_length
    persist_path: StrPath | None = DEFAULTS.persist_path
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bounds, Bounds):
            raise ConfigError(f"bounds must be a Bounds (got {type(self.bounds).__name__})")
        if not callable(self.clock):
            raise ConfigError(f"clock must be callable (got {type(self.clock).__name__})")
        data = {name: getattr(self, name) for name in _MODEL}
        validate_into(self, {**data, "persist_path": _path_text(self.persist_path)}, data)

    @classmethod
    def from_keywords(cls, **keywords: Any) -> TrackerOptions:
        """Return the options from flat keywords: the `LearningSettings` options and ``clock``.

        Raises `ConfigError` naming every unknown keyword or bad value.
        """
        clock = keywords.pop("clock", time.monotonic)
        path = keywords.get("persist_path")
        if path is not None:
            keywords["persist_path"] = _path_text(path)
        settings = LearningSettings.from_options(keywords)
        return cls.from_settings(settings, persist_path=path, clock=clock)

    @classmethod
    def from_settings(
        cls,
        settings: LearningSettings,
        *,
        persist_path: StrPath | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> TrackerOptions:
        """Return the options ``settings`` holds; ``persist_path`` (a path object) replaces
        the settings' one when given."""
        own = {name: getattr(settings, name) for name in _MODEL}
        path = settings.persist_path if persist_path is None else persist_path
        return cls(Bounds.from_settings(settings), **own, persist_path=path, clock=clock)

    def settings(self) -> LearningSettings:
        """Return these options as `LearningSettings` (``persist_path`` as text; no clock)."""
        data = {name: getattr(self.bounds, name) for name in BOUND_NAMES}
        data.update((name, getattr(self, name)) for name in _MODEL)
        result: LearningSettings = LearningSettings.build(
            {**data, "persist_path": _path_text(self.persist_path)}
        )
        return result

    @property
    def second_order(self) -> bool:
        """Return whether second-order contexts are learned (``order`` 2)."""
        return self.order == 2


def _path_text(path: Any) -> Any:
    """Return a path object's text (what `LearningSettings` validates); anything else as is."""
    return os.fspath(path) if isinstance(path, os.PathLike) else path
