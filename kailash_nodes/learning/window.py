"""A fixed-size ring of float samples in one flat ``array('d')``.

The tracker keeps one window of durations per shape and one of gaps per transition; with
thousands of shapes a deque of Python floats would cost ~4x the memory of packed doubles.
"""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterable

__all__ = ["Window"]


class Window:
    """The most recent ``size`` samples; appending is O(1) and allocates only while filling.

    >>> w = Window(3)
    >>> for x in (1.0, 2.0, 3.0, 4.0):
    ...     w.append(x)
    >>> w.ordered(), len(w), w.median()
    ([2.0, 3.0, 4.0], 3, 3.0)
    """

    __slots__ = ("_median", "_next", "_size", "samples")

    def __init__(self, size: int, initial: Iterable[float] = ()) -> None:
        self._size = size
        self._next = 0  # slot the next sample overwrites once the ring is full
        self._median: float | None = None  # cached until the next append
        self.samples = array("d")
        for value in initial:
            self.append(value)

    def __len__(self) -> int:
        return len(self.samples)

    def append(self, value: float) -> None:
        """Add ``value``, overwriting the oldest sample when the window is full."""
        self._median = None
        if len(self.samples) < self._size:
            self.samples.append(value)
            return
        self.samples[self._next] = value
        self._next = (self._next + 1) % self._size

    def ordered(self) -> list[float]:
        """Return the samples oldest first."""
        return list(self.samples[self._next :]) + list(self.samples[: self._next])

    def median(self) -> float | None:
        """Return the median sample, or None when there is none (cached until an append).

        >>> w = Window(4, [5.0, 1.0])
        >>> w.median(), Window(4).median()
        (3.0, None)
        >>> w.append(0.0)
        >>> w.median()
        1.0
        """
        if self._median is None and self.samples:
            self._median = statistics.median(self.samples)
        return self._median
