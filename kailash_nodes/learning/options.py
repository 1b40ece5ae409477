"""`TrackerOptions`: every option of a `QueryPatternTracker`, validated once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kailash_nodes.config import check_bool, check_number
from kailash_nodes.errors import ConfigError
from kailash_nodes.learning.bounds import Bounds

__all__ = ["StrPath", "TrackerOptions"]

StrPath = str | os.PathLike[str]

_BOUNDS = frozenset(f.name for f in fields(Bounds))


@dataclass(frozen=True, slots=True)
class TrackerOptions:
    """What a `QueryPatternTracker` learns and how much it keeps.

    =====================  =======  ======================================================
    option                 default  meaning
    =====================  =======  ======================================================
    bounds                 Bounds() memory caps (`Bounds`; each also a keyword of
                                    `from_keywords`)
    order                  2        1: first-order transitions only (every option below
                                    but ``persist_path`` and ``clock`` then has no
                                    effect); 2: second-order contexts too
    start_context          True     the session's start counts as the shape before its
                                    first statement
    loop_contexts          True     learn what follows a shape by how often it recurred
                                    lately (`kailash_nodes.learning.history.loop_count`)
    noise_floor            0.025    share below which a statement is treated as noise by
                                    the back-off (`kailash_nodes.learning.history`);
                                    0 turns the back-off off
    learn_noise_kind       True     the back-off learns whether noise statements are
                                    inserted between steps or replace them
    min_context_support    1        observations a second-order or loop context needs
                                    before it may decide
    run_templates          True     finished sessions that repeat become templates that
                                    predict (`kailash_nodes.learning.runs`)
    max_run_length         64       the longest session counted as a run
    persist_path           None     JSON file loaded at construction when it exists and
                                    written by ``save``
    clock                  monotonic time source when ``record`` gets no ``at``
    =====================  =======  ======================================================

    Raises `ConfigError` naming the option, the rule and the value.

    >>> TrackerOptions.from_keywords(max_shapes=10, run_templates=False).bounds.max_shapes
    10
    >>> TrackerOptions(order=3)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: order must be 1 or 2 (got order=3)
    """

    bounds: Bounds = field(default_factory=Bounds)
    order: int = 2
    start_context: bool = True
    loop_contexts: bool = True
    noise_floor: float = 0.025
    learn_noise_kind: bool = True
    min_context_support: int = 1
    run_templates: bool = True
    max_run_length: int = 64
    persist_path: StrPath | None = None
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bounds, Bounds):
            raise ConfigError(f"bounds must be a Bounds (got {type(self.bounds).__name__})")
        if self.order not in (1, 2) or isinstance(self.order, bool):
            raise ConfigError(f"order must be 1 or 2 (got order={self.order!r})")
        for name in ("start_context", "loop_contexts", "learn_noise_kind", "run_templates"):
            check_bool(name, getattr(self, name))
        floor = check_number("noise_floor", self.noise_floor, low=0, high=1)
        if floor == 1:
            raise ConfigError(
                f"noise_floor must be >= 0 and < 1 (got noise_floor={self.noise_floor!r})"
            )
        object.__setattr__(self, "noise_floor", floor)
        check_number("min_context_support", self.min_context_support, low=1, integer=True)
        check_number("max_run_length", self.max_run_length, low=1, integer=True)
        if not callable(self.clock):
            raise ConfigError(f"clock must be callable (got {type(self.clock).__name__})")

    @classmethod
    def from_keywords(cls, **keywords: Any) -> TrackerOptions:
        """Return the options from flat keywords: the `Bounds` fields and this class's.

        Raises `ConfigError` for an unknown keyword or a bad value.
        """
        unknown = set(keywords) - _BOUNDS - _OWN
        if unknown:
            allowed = ", ".join(sorted(_BOUNDS | _OWN))
            raise ConfigError(f"unknown tracker option(s) {sorted(unknown)} (allowed: {allowed})")
        bounds = {k: v for k, v in keywords.items() if k in _BOUNDS}
        own: Mapping[str, Any] = {k: v for k, v in keywords.items() if k in _OWN}
        return cls(bounds=Bounds(**bounds), **own)

    @property
    def second_order(self) -> bool:
        """Return whether second-order contexts are learned (``order`` 2)."""
        return self.order == 2


_OWN = frozenset(f.name for f in fields(TrackerOptions)) - {"bounds"}
