"""The memory bounds of a `QueryPatternTracker`, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass, fields

from kailash_nodes.config import check_number

__all__ = ["Bounds"]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Caps that keep the tracker's memory flat however long it runs.

    ====================  =======  ==========================================================
    option                default  bounds
    ====================  =======  ==========================================================
    max_shapes            2000     shapes kept; the least recently seen is evicted with its
                                   statistics and the transitions out of it
    max_followers         8        next shapes kept per context (first and second order)
    max_contexts          8        second-order contexts (previous shape) kept per shape
    loop_window           8        statements a loop count looks back over; each session
                                   keeps its last loop_window + 1 shapes, each shape at
                                   most loop_window - 1 loop contexts (counts 2..window)
    duration_window       128      most recent durations kept per shape (for p50/p95)
    gap_window            16       most recent gaps kept per transition (for the delay)
    max_sessions          10000    live sessions; the least recently active is dropped
    session_ttl           300.0    seconds a session may stay idle before it is dropped
    max_transition_count  1000     a context's counts are halved when its total gets here
    ====================  =======  ==========================================================

    With the defaults a full tracker holds 2000 duration windows of 128 samples, 16,000
    gap windows of 16, ~2000 x 72 small count entries (more for shapes that repeat
    within a session: up to 7 loop contexts of 8 entries each), 10000 sessions of 9 shape
    references and, with run templates, each session's statements so far (up to
    ``max_run_length``, 64) and up to 1024 counted runs: 37.8 MB measured with
    tracemalloc (``benchmarks/bench_learning.py --memory``).

    >>> Bounds(max_shapes=0)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: max_shapes must be an integer >= 1 (got max_shapes=0)
    """

    max_shapes: int = 2000
    max_followers: int = 8
    max_contexts: int = 8
    loop_window: int = 8
    duration_window: int = 128
    gap_window: int = 16
    max_sessions: int = 10_000
    session_ttl: float = 300.0
    max_transition_count: int = 1000

    def __post_init__(self) -> None:
        for field in fields(self):
            name, value = field.name, getattr(self, field.name)
            if name == "session_ttl":
                ttl = check_number(name, value, low=0, strict=True)
                object.__setattr__(self, name, ttl)
            else:
                least = 2 if name in ("max_transition_count", "loop_window") else 1
                check_number(name, value, low=least, integer=True)
