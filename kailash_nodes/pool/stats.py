"""Pool statistics: counters plus bounded windows of measured durations.

Every value is measured; every average or percentile is reported with its sample count.
Percentiles use the nearest-rank method over the window (the most recent samples).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["PoolStats", "Window", "percentile"]


def percentile(ordered: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` percentile (0 < q <= 100) of sorted samples.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    >>> percentile([], 95)
    0.0
    """
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Window:
    """The last ``size`` samples of a duration (seconds), and how many were ever added."""

    __slots__ = ("_samples", "total_count", "total_sum")

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.total_count = 0
        self.total_sum = 0.0

    def add(self, seconds: float) -> None:
        """Record one sample."""
        self._samples.append(seconds)
        self.total_count += 1
        self.total_sum += seconds

    def recent(self, n: int) -> list[float]:
        """Return the last ``n`` samples (fewer if the window is smaller)."""
        if n <= 0:
            return []
        samples = self._samples
        return list(samples)[-n:] if n < len(samples) else list(samples)

    def summary_ms(self) -> dict[str, float | int]:
        """Return avg/p50/p95/p99/max in milliseconds over the window, with the counts."""
        ordered = sorted(self._samples)
        n = len(ordered)
        return {
            "avg_ms": (sum(ordered) / n * 1000.0) if n else 0.0,
            "p50_ms": percentile(ordered, 50) * 1000.0,
            "p95_ms": percentile(ordered, 95) * 1000.0,
            "p99_ms": percentile(ordered, 99) * 1000.0,
            "max_ms": (ordered[-1] * 1000.0) if n else 0.0,
            "samples": n,
            "total_samples": self.total_count,
        }


class PoolStats:
    """Counters and windows of one pool; the engine updates them, readers copy them."""

    __slots__ = (
        "acquire_wait",
        "acquires",
        "affinity_picks",
        "checks_failed",
        "checks_performed",
        "connections_closed",
        "connections_created",
        "connections_failed",
        "connections_recycled",
        "handoffs_deferred",
        "hold_time",
        "queries_executed",
        "query_errors",
        "query_time",
        "requests_rejected",
        "resets",
        "rollbacks",
        "timeouts",
    )

    def __init__(self, window: int = 2048) -> None:
        self.acquire_wait = Window(window)
        self.query_time = Window(window)
        self.hold_time = Window(window)
        self.acquires = 0
        self.affinity_picks = 0
        self.timeouts = 0
        self.requests_rejected = 0
        self.connections_created = 0
        self.connections_failed = 0
        self.connections_recycled = 0
        self.connections_closed = 0
        self.handoffs_deferred = 0
        self.queries_executed = 0
        self.query_errors = 0
        self.checks_performed = 0
        self.checks_failed = 0
        self.resets = 0
        self.rollbacks = 0

    def counters(self) -> dict[str, Any]:
        """Return the plain counters as a dict."""
        return {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("acquire_wait", "query_time", "hold_time")
        }
