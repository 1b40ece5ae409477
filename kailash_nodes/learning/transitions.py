"""Counted transitions out of one context (a shape, or a pair of shapes), bounded in size.

A `Followers` table holds at most ``cap`` next shapes. When a new one arrives at a full table
the weakest entry goes: an edge into a shape the tracker has already evicted first, else the
one with the lowest count (the oldest among equals). When the table's total reaches
``halve_at`` every count is halved, so counts stay bounded and recent behaviour outweighs
old behaviour after the workload changes. Each table keeps its highest count (``top``) and
the follower that has it (``lead``) up to date, so its best follower and how confident it
is (`Followers.confidence`) cost no scan.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from kailash_nodes.measure import Samples

__all__ = ["Edge", "Followers", "wilson_lower_bound"]

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_lower_bound(count: float, total: int, z: float = Z_95) -> float:
    """Return the Wilson score lower bound of the proportion ``count / total``.

    With p = count/total and n = total:
    ``(p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``. It is the probability the
    transition has at least, at ~95% confidence: small for few observations, approaching
    ``p`` as ``n`` grows, 0 with no observations.

    >>> round(wilson_lower_bound(4, 5), 3), round(wilson_lower_bound(80, 100), 3)
    (0.376, 0.711)
    >>> round(wilson_lower_bound(1000, 1000), 3), wilson_lower_bound(0, 0)
    (0.996, 0.0)
    """
    if total <= 0:
        return 0.0
    p = count / total
    z2n = z * z / total
    centre = p + z2n / 2
    spread = z * math.sqrt(p * (1 - p) / total + z2n / (4 * total))
    return max(0.0, (centre - spread) / (1 + z2n))


@functools.lru_cache(maxsize=4096)
def _wilson_95(count: int, total: int) -> float:
    # Counts are small bounded integers (see ``halve_at``): the same pairs recur constantly.
    return wilson_lower_bound(count, total)


class Edge:
    """One transition: how often it was seen and, for first-order edges, recent gaps (s)."""

    __slots__ = ("count", "gaps")

    def __init__(self, count: int = 0, gaps: Samples | None = None) -> None:
        self.count = count
        self.gaps = gaps


class Followers:
    """The next shapes seen after one context, with counts; see the module docstring."""

    __slots__ = ("edges", "lead", "top", "total")

    def __init__(self) -> None:
        self.edges: dict[str, Edge] = {}
        self.total = 0  # transitions seen out of this context, evicted followers included
        self.top = 0  # the highest count in ``edges`` (0 when empty)
        self.lead: str | None = None  # a follower with count ``top`` (None when empty)

    def add(self, shape: str, cap: int, halve_at: int, live: Callable[[str], bool]) -> Edge:
        """Count one transition to ``shape``; return its edge (created if new).

        ``cap`` bounds the table; ``live(shape)`` says whether the tracker still knows a
        shape (dead ones are evicted first).
        """
        edge = self.edges.get(shape)
        if edge is None:
            if len(self.edges) >= cap:
                self._evict_weakest(live)
            edge = self.edges[shape] = Edge()
        edge.count += 1
        if edge.count > self.top:
            self.top = edge.count
            self.lead = shape
        self.total += 1
        if self.total >= halve_at:
            self.halve()
        return edge

    def halve(self) -> None:
        """Halve every count (rounding down), dropping the edges that reach zero."""
        for shape in [s for s, e in self.edges.items() if e.count < 2]:
            del self.edges[shape]
        for edge in self.edges.values():
            edge.count //= 2
        self.total //= 2  # still >= the sum of the halved counts
        self.recount_top()

    def recount_top(self) -> None:
        """Recompute ``top`` and ``lead`` from the edges (after halving, eviction or
        loading); the first of equals leads."""
        self.top, self.lead = 0, None
        for shape, edge in self.edges.items():
            if edge.count > self.top:
                self.top, self.lead = edge.count, shape

    def confidence(self) -> float:
        """Return the Wilson lower bound of the best follower's share (0.0 when empty).

        >>> f = Followers()
        >>> for shape in "AAAB":
        ...     _ = f.add(shape, 8, 1000, lambda s: True)
        >>> f.top, f.lead, f.total, round(f.confidence(), 3)
        (3, 'A', 4, 0.301)
        """
        return _wilson_95(self.top, self.total)

    def share(self, shape: str, plus: int = 0) -> float:
        """Return the share of this context's transitions that went to ``shape``, counting
        ``plus`` more of them (a transition seen but not recorded yet); 0.0 when empty."""
        edge = self.edges.get(shape)
        total = self.total + plus
        return ((edge.count if edge is not None else 0) + plus) / total if total else 0.0

    def ranked(self, live: Callable[[str], bool]) -> list[tuple[str, Edge]]:
        """Return the live edges, most frequent first (ties by shape, for determinism)."""
        items = [(s, e) for s, e in self.edges.items() if live(s)]
        items.sort(key=lambda item: (-item[1].count, item[0]))
        return items

    def _evict_weakest(self, live: Callable[[str], bool]) -> None:
        # min() keeps the first of equals: dict order is insertion order, so the oldest.
        victim = min(self.edges, key=lambda s: (live(s), self.edges[s].count))
        if self.edges.pop(victim).count >= self.top:
            self.recount_top()
