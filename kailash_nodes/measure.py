"""Measured samples: a bounded window of recent values and nearest-rank percentiles.

Every average or percentile the package reports comes from a :class:`Samples` window and
is reported with its sample count (``samples``) and the count ever added
(``total_samples``).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable

__all__ = ["Samples", "percentile"]


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


class Samples:
    """The last ``size`` values added, and how many were ever added.

    ``add`` is one deque append and one addition: cheap enough for every query.

    >>> w = Samples(3, [1.0, 2.0, 3.0, 4.0])
    >>> w.ordered(), len(w), w.median(), w.total_count
    ([2.0, 3.0, 4.0], 3, 3.0, 4)
    >>> Samples(4).median() is None
    True
    """

    __slots__ = ("_samples", "total_count")

    def __init__(self, size: int = 2048, initial: Iterable[float] = ()) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.total_count = 0
        for value in initial:
            self.add(value)

    def add(self, value: float) -> None:
        """Record one value (the oldest drops out of a full window)."""
        self._samples.append(value)
        self.total_count += 1

    def __len__(self) -> int:
        return len(self._samples)

    def ordered(self) -> list[float]:
        """Return the values in the window, oldest first."""
        return list(self._samples)

    def recent(self, n: int) -> list[float]:
        """Return the last ``n`` values (fewer if the window holds fewer)."""
        if n <= 0:
            return []
        samples = self._samples
        return list(samples)[-n:] if n < len(samples) else list(samples)

    def median(self) -> float | None:
        """Return the median of the window, or None when it is empty."""
        return statistics.median(self._samples) if self._samples else None

    def summary_ms(self) -> dict[str, float | int]:
        """Return avg/p50/p95/p99/max in milliseconds over the window (values in seconds),
        with the window's sample count and the count ever added."""
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
