"""Predicting from a session's recent statements: contexts, loop counts and noise back-off.

A session keeps its last ``loop_window + 1`` shapes, `START` before its first. What follows
a shape ``b`` preceded by ``a`` is predicted by the most confident (Wilson lower bound of its
best follower) of: ``b``'s first-order table (order 1); the context (``a``, ``b``) (order
2) once it has ``min_context_support`` observations; the loop context (``b``, n) (order 3),
n = `loop_count`, which tells the rounds of a fixed-length loop apart.

Noise back-off (`Scorer.predict`). With the last three shapes ``z, a, b`` and θ =
``noise_floor``, the prediction mixes the tables of these hypotheses, each weighted by the
likelihood of what was seen under it (``P(x | y)``: the share of ``y``'s followers that
were ``x``): both are steps (``P(a|z)·P(b|a)``, from ``b``'s context); ``b`` was inserted
(``P(a|z)·θ·ι``, from ``a``'s); ``b`` replaced the step ``y`` (only when ``P(b|a) < 2θ``
and the noise kind is learned; ``P(a|z)·θ·ρ``, from ``y``'s); ``a`` was inserted
(``θ·P(b|z)·ι``, from (``z``, ``b``)); ``a`` replaced a step (only when ``P(a|z) < θ``;
from (``y*``, ``b``), ``y*`` the likeliest replaced step). ι and ρ weigh "inserted"
against "replaced": 1 each, or learned per workload by `NoiseKinds` (``learn_noise_kind``)
from which guess the statement after a suspected noise statement matched
(`Scorer.judge`). ``benchmarks/bench_learning.py`` shows what each part buys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kailash_nodes.learning.shape import START, ShapeStats
from kailash_nodes.learning.transitions import Followers

__all__ = ["BACKOFF", "History", "Mixture", "NoiseKinds", "Scorer", "loop_count"]

REPLACED_BELOW = 2  # "b replaced a step" is weighed when P(b | a) < REPLACED_BELOW · θ
BACKOFF = 0  # the order of a prediction made with one of the last two statements skipped
"""`Prediction.order` when a noise hypothesis decided."""

History = tuple[str, ...]
Hypothesis = tuple[float, Followers | None, int]  # weight, table (None: no evidence), order
Mixture = tuple[dict[str, float], int, int]
"""Next-shape probabilities, and the support and order of the heaviest hypothesis."""


def loop_count(history: History, i: int, window: int) -> int:
    """Return how often ``history[i]`` or the shape before it occur among the ``window``
    statements ending at ``history[i]``.

    >>> search = ("P", "R", "P", "R", "P", "R")
    >>> [loop_count(search, i, 8) for i in range(6)]
    [1, 1, 2, 2, 3, 3]
    >>> loop_count(("P", "R", "P", "noise", "P", "R"), 5, 8)  # a replaced R: P still counts
    3
    >>> loop_count(search, 5, 2)
    1
    """
    recent = history[max(0, i + 1 - window) : i + 1]
    n = recent.count(history[i])
    if len(recent) > 1:
        n = max(n, recent.count(recent[-2]))
    return n


class NoiseKinds:
    """How often a statement that looked like noise turned out to have been inserted
    between two steps, and how often to have replaced one (tracker-wide).

    Both counts are halved when their sum reaches ``halve_at``: bounded, and recent
    behaviour outweighs old. ``odds`` is the weights of the two hypotheses, kept up to
    date: for ``i`` inserted and ``r`` replaced, the likelier keeps 1, the other gets its
    Laplace-smoothed odds against it, ``(r + 1) / (i + 1)`` or ``(i + 1) / (r + 1)``.

    >>> kinds = NoiseKinds(halve_at=8)
    >>> kinds.odds  # nothing seen: both in full
    (1.0, 1.0)
    >>> for replaced in (True, True, True, False):
    ...     kinds.add(replaced=replaced)
    >>> kinds.inserted, kinds.replaced, kinds.odds
    (1, 3, (0.5, 1.0))
    >>> for _ in range(4):
    ...     kinds.add(replaced=True)
    >>> kinds.inserted, kinds.replaced, kinds.odds  # 1 + 7 reached 8: halved
    (0, 3, (0.25, 1.0))
    """

    __slots__ = ("halve_at", "inserted", "odds", "replaced")

    def __init__(self, halve_at: int = 1000, inserted: int = 0, replaced: int = 0) -> None:
        self.halve_at = halve_at
        self.inserted = inserted
        self.replaced = replaced
        self.odds = (1.0, 1.0)  # (inserted, replaced)
        self._settle()

    def add(self, *, replaced: bool) -> None:
        """Count one statement that looked like noise, judged replacing (else inserted)."""
        if replaced:
            self.replaced += 1
        else:
            self.inserted += 1
        self._settle()

    def _settle(self) -> None:
        while self.inserted + self.replaced >= self.halve_at:  # one pass but after a load
            self.inserted //= 2
            self.replaced //= 2
        i, r = self.inserted + 1, self.replaced + 1
        self.odds = (1.0, r / i) if i >= r else (i / r, 1.0)


@dataclass(frozen=True, slots=True)
class Scorer:
    """What a tracker predicts from: its shapes, session starts, options and the noise
    kinds it learned (None: not learned)."""

    shapes: Mapping[str, ShapeStats]
    starts: Followers
    min_support: int
    window: int
    loops: bool
    noise_floor: float
    kinds: NoiseKinds | None = None

    def context(
        self, shape: str, prev: str | None, history: History = (), i: int = 0
    ) -> tuple[Followers | None, int]:
        """Return the most confident table predicting what follows ``shape``, and its order.

        ``prev`` is the shape before it (None: first order only); ``history[i]`` is
        ``shape`` in the session's history, for its loop count (no history: no loop
        context). None when nothing ever followed.
        """
        if shape == START:
            return (self.starts if self.starts.total else None), 1
        stats = self.shapes.get(shape)
        if stats is None:
            return None, 1
        best, order, confidence = stats.followers, 1, -1.0
        if prev is not None:
            table = stats.contexts.get(prev)
            if table is not None and table.total >= self.min_support:
                confidence = best.confidence()
                c = table.confidence()
                if c >= confidence:
                    best, order, confidence = table, 2, c
        if history and stats.loops:
            recent = history[max(0, i + 1 - self.window) : i + 1]  # loop_count, inlined
            n = recent.count(shape)
            if len(recent) > 1:
                n2 = recent.count(recent[-2])
                if n2 > n:
                    n = n2
            table = stats.loops.get(n)
            if table is not None and table.total >= self.min_support:
                if confidence < 0:
                    confidence = best.confidence()
                if table.confidence() >= confidence:
                    best, order = table, 3
        return (best if best.total else None), order

    def predict(self, h: History, recorded: bool) -> Mixture | None:
        """Return what follows ``h[-1]`` given the shapes before it; None when unknown.

        ``recorded``: whether ``h[-1]`` was recorded (its transition counted) already.
        """
        m = len(h)
        b = h[-1]
        a = h[-2] if m > 1 else None
        z = h[-3] if m > 2 else None
        loops = h if self.loops else ()
        clean, order = self.context(b, a, loops, m - 1)
        theta = self.noise_floor
        if theta <= 0 or a is None:
            return _single(clean, order)
        after_a, _ = self.context(a, z, loops, m - 2)
        lb = after_a.share(b, 0 if recorded else 1) if after_a is not None else 1.0
        kinds = self.kinds
        inserted, replaced = kinds.odds if kinds is not None else (1.0, 1.0)
        after_z = self._first_order(z) if z is not None else None
        la = after_z.share(a) if after_z is not None else 1.0
        hypotheses = [(la * lb, clean, order)]
        y = after_a.lead if after_a is not None else None  # the step b displaced or replaced
        # b replaced y
        if (
            kinds is not None
            and after_a is not None
            and y is not None
            and lb < REPLACED_BELOW * theta
            and la >= theta
        ):
            path = (*h[:-1], y)
            after_y = self.context(y, a, path if loops else (), m - 1)[0]
            w_inserted, w_replaced = _split(inserted, replaced, after_a.top / after_a.total)
            hypotheses.append((la * theta * w_inserted, after_a, BACKOFF))
            hypotheses.append((la * theta * w_replaced, after_y, BACKOFF))
        else:
            hypotheses.append((la * theta * inserted, after_a, BACKOFF))
        if z is None:  # a is START (or the window is too short to look further)
            return _mix(hypotheses)
        lzb = after_z.share(b) if after_z is not None else 0.0
        if lzb > 0 or la == 0:  # else its weight is 0 and some other is not: no need
            path = (*h[:-2], b) if loops and kinds is not None else ()  # a left out
            hypotheses.append((theta * lzb * inserted, self.context(b, z, path, m - 2)[0], BACKOFF))
        if la < theta and after_z is not None:  # a looks like noise: did it replace a step?
            y, lb_y = self._replaced(after_z, b)
            if y is not None:
                path = (*h[:-2], y, b) if loops and kinds is not None else ()
                table = self.context(b, y, path, m - 1)[0]
                hypotheses.append((theta * lb_y * replaced, table, BACKOFF))
        return _mix(hypotheses)

    def judge(self, a: str, c: str) -> bool | None:
        """Return whether ``b``, a statement after ``a`` that looked like noise, replaced a
        step (True) or was inserted (False), now that ``c`` followed it; None when both
        guesses or neither matched ``c``.

        Inserted, the step ``y`` after ``a`` (the best follower of its first-order table)
        comes next; replacing ``y``, the step after ``y`` (the best follower of the context
        (``a``, ``y``), or of ``y`` when there is none). A few dict lookups: this runs in
        ``record``.
        """
        after_a = self._table(a, None)
        y = after_a.lead if after_a is not None else None
        if y is None:
            return None
        after_y = self._table(y, a)
        if (c == y) == (after_y is not None and c == after_y.lead):
            return None
        return c != y

    def _table(self, shape: str, prev: str | None) -> Followers | None:
        """Return the second-order table (``prev``, ``shape``), else ``shape``'s first."""
        if shape == START:
            return self.starts
        stats = self.shapes.get(shape)
        if stats is None:
            return None
        table = stats.contexts.get(prev) if prev is not None else None
        return table if table is not None else stats.followers

    def _replaced(self, after_z: Followers, b: str) -> tuple[str | None, float]:
        """Return the step ``y`` after ``z`` most likely to have been followed by ``b``
        (the step a noise statement replaced), and P(b two after z) = Σ P(y | z) P(b | y)."""
        shapes = self.shapes
        best, best_w, total_w = None, 0.0, 0.0
        for y, edge in after_z.edges.items():
            stats = shapes.get(y)
            if stats is not None:
                w = edge.count * stats.followers.share(b)
                total_w += w
                if w > best_w:
                    best, best_w = y, w
        return best, total_w / after_z.total

    def _first_order(self, shape: str) -> Followers | None:
        if shape == START:
            return self.starts if self.starts.total else None
        stats = self.shapes.get(shape)
        return stats.followers if stats is not None and stats.followers.total else None


def _split(inserted: float, replaced: float, share: float) -> tuple[float, float]:
    """Return the weights of "inserted" and "replaced" for a "replaced" hypothesis that
    predicts from one step, of ``share`` among the candidates: ``replaced`` scaled by
    ``share``, then both scaled to add up to ``inserted + replaced`` again.

    >>> _split(1.0, 1.0, 1.0), _split(1.0, 1.0, 0.5)
    ((1.0, 1.0), (1.3333333333333333, 0.6666666666666666))
    """
    scale = (inserted + replaced) / (inserted + replaced * share)
    return inserted * scale, replaced * share * scale


def _mix(hypotheses: list[Hypothesis]) -> Mixture | None:
    total, heaviest, support, order, present = 0.0, -1.0, 0, 0, 0
    for weight, table, kind in hypotheses:
        if table is not None:
            present += 1
            total += weight
            if weight > heaviest:  # the first of equals
                heaviest, support, order = weight, table.total, kind
    if not present:
        return None
    probabilities: dict[str, float] | None = None
    for weight, table, _ in hypotheses:
        if table is None or (total > 0 and weight <= 0):
            continue
        f = (weight / total if total > 0 else 1.0 / present) / table.total
        if probabilities is None:
            probabilities = {name: f * edge.count for name, edge in table.edges.items()}
            continue
        get = probabilities.get
        for name, edge in table.edges.items():
            probabilities[name] = get(name, 0.0) + f * edge.count
    return probabilities or {}, support, order


def _single(table: Followers | None, order: int) -> Mixture | None:
    if table is None:
        return None
    total = table.total
    return {name: edge.count / total for name, edge in table.edges.items()}, total, order
