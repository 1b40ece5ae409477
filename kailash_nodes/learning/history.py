"""Predicting from a session's recent statements: contexts, loop counts and noise back-off.

A session keeps its last ``loop_window + 1`` shapes, with `START` before its first one. The
context that predicts what follows a shape ``b`` preceded by ``a`` is the most confident
(Wilson lower bound of its best follower; the more specific one on a tie) of:

- ``b``'s first-order table (order 1);
- the second-order context (``a``, ``b``) (order 2), ``a`` possibly `START`, once it has
  ``min_context_support`` observations;
- the loop context (``b``, n) (order 3), n >= 2 being `loop_count`: how often ``b`` or
  ``a`` occur among the last ``loop_window`` statements. A loop that runs a fixed number of
  rounds (the third ``SELECT reviews`` of a search is followed by something other than the
  first two) is told apart by its count, which no fixed-length context can do.

Noise back-off. Ad-hoc statements interleave with workflow steps: one may be inserted
between two steps or replace one. With the session's last three shapes ``z, a, b``, the
prediction mixes what follows under these hypotheses, each weighted by how well it explains
what was seen (``P(x | y)`` = the share of ``y``'s observed followers that were ``x``, this
session's own ``y`` -> ``x`` included, as if recorded when it was not yet; for ``z`` and
the inferred step its first-order table, for ``a`` its context as above; θ =
``noise_floor``):

- "``a`` and ``b`` are steps", weight ``P(a | z) · P(b | a)``: predict from the context of
  ``b`` (above);
- "``b`` is noise", weight ``P(a | z) · θ``: predict from the context of ``a``, the step
  ``b`` displaced;
- "``a`` was inserted", weight ``θ · P(b | z)``: predict from the context (``z``, ``b``),
  skipping ``a``;
- "``a`` replaced a step", only when ``P(a | z) < θ``, weight ``θ · Σ P(y | z) · P(b | y)``
  over ``z``'s followers ``y``: predict from the context (``y*``, ``b``), ``y*`` the ``y``
  with the largest term, the step ``a`` most likely replaced.

So θ is the share below which a statement is more likely noise than a step: a statement
that follows its predecessor often keeps the ordinary prediction, one that rarely or never
did (an ad-hoc query, a statement out of place) hands the prediction to the statements
around it. When ``a`` is `START` only the first two hypotheses apply, and "``b`` is noise"
predicts the session's usual first statement. A table with no observations gives no
evidence (likelihood 1); a hypothesis without a table to predict from is left out; when
every weight is 0 the others count equally. The "steps" hypothesis comes first on a tie.

What this cannot do: an inserted statement and a replaced step look the same from the
shapes seen so far. "``b`` is noise" predicts the step ``b`` displaced, right when ``b``
was inserted before it, wrong when ``b`` replaced it (the step after it comes next).
``benchmarks/bench_learning.py`` compares every piece with the best any predictor can do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kailash_nodes.learning.shape import START, ShapeStats
from kailash_nodes.learning.transitions import Followers

__all__ = ["BACKOFF", "History", "Mixture", "Scorer", "loop_count"]

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


@dataclass(frozen=True, slots=True)
class Scorer:
    """What a tracker predicts from: its shapes, session starts and options."""

    shapes: Mapping[str, ShapeStats]
    starts: Followers
    min_support: int
    window: int
    loops: bool
    noise_floor: float

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
                n = max(n, recent.count(recent[-2]))
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
        if z is None:  # a is START (or the window is too short to look further)
            return _mix([(lb, clean, order), (theta, after_a, BACKOFF)])
        after_z = self._first_order(z)
        la = after_z.share(a) if after_z is not None else 1.0
        lzb = after_z.share(b) if after_z is not None else 0.0
        hypotheses = [(la * lb, clean, order), (la * theta, after_a, BACKOFF)]
        if lzb > 0 or la == 0:  # else its weight is 0 and some other is not: no need
            hypotheses.append((theta * lzb, self.context(b, z)[0], BACKOFF))
        if la < theta and after_z is not None:  # a looks like noise: did it replace a step?
            replaced, weight = self._replaced(after_z, b)
            if replaced is not None:
                hypotheses.append((theta * weight, self.context(b, replaced)[0], BACKOFF))
        return _mix(hypotheses)

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
