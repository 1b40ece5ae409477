"""What the tracker knows about one query shape: counters, a duration window, transitions."""

from __future__ import annotations

from kailash_nodes.learning.transitions import Followers
from kailash_nodes.measure import Samples

__all__ = ["START", "ShapeStats"]

START = "\x00start"
"""The pseudo-shape before a session's first statement (no SQL fingerprint holds a NUL).

As a second-order context, ``contexts[START]`` of a shape counts what follows it when it
opened its session.
"""


class ShapeStats:
    """Statistics of one shape and the transitions out of it.

    ``followers`` counts first-order transitions (this shape -> next); ``contexts[prev]``
    counts second-order ones (prev, this shape -> next), ``prev`` possibly `START`;
    ``loops[n]`` counts what follows this shape when its loop count is ``n`` >= 2 (see
    `kailash_nodes.learning.history.loop_count`). ``rows``/``row_samples`` skip
    executions that reported no row count (a negative ``rows``, as DB-API's -1).
    """

    __slots__ = (
        "contexts",
        "count",
        "durations",
        "errors",
        "followers",
        "loops",
        "reads",
        "row_samples",
        "rows",
        "writes",
    )

    def __init__(self, duration_window: int) -> None:
        self.count = 0
        self.errors = 0
        self.reads = 0
        self.writes = 0
        self.rows = 0
        self.row_samples = 0
        self.durations = Samples(duration_window)
        self.followers = Followers()
        self.contexts: dict[str, Followers] = {}
        self.loops: dict[int, Followers] = {}

    def observe(self, duration_s: float, rows: int, is_write: bool | None, success: bool) -> None:
        """Count one execution; ``is_write=None`` means the caller did not say."""
        self.count += 1
        self.durations.add(duration_s)
        if not success:
            self.errors += 1
        if is_write is not None:
            if is_write:
                self.writes += 1
            else:
                self.reads += 1
        if rows >= 0:
            self.rows += rows
            self.row_samples += 1

    @property
    def kind(self) -> str:
        """Return "read", "write", "mixed" or "unknown" from the counted executions."""
        if self.reads and self.writes:
            return "mixed"
        if self.writes:
            return "write"
        return "read" if self.reads else "unknown"
