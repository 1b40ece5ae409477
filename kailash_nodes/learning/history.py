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
``noise_floor``; ι and ρ the learned weights of "inserted" and "replaced", below):

- "``a`` and ``b`` are steps", weight ``P(a | z) · P(b | a)``: predict from the context of
  ``b`` (above);
- "``b`` was inserted", weight ``P(a | z) · θ · ι'``: predict from the context of ``a``,
  the step ``b`` displaced;
- "``b`` replaced a step", only when ``P(b | a) < 2θ`` and ``P(a | z) >= θ``, weight
  ``P(a | z) · θ · ρ'``: predict from the context of ``y``, the best follower of ``a``'s
  context, the step ``b`` most likely replaced. It bets on ``y`` alone, so ``ρ' = ρ ·
  P(y | a) · s`` and ``ι' = ι · s``, ``s`` scaling the two back to ``ι + ρ`` (without
  this hypothesis ``ι' = ι``);
- "``a`` was inserted", weight ``θ · P(b | z) · ι``: predict from the context (``z``,
  ``b``), skipping ``a``;
- "``a`` replaced a step", only when ``P(a | z) < θ``, weight ``θ · Σ P(y | z) · P(b | y)
  · ρ`` over ``z``'s followers ``y``: predict from the context (``y*``, ``b``), ``y*`` the
  ``y`` with the largest term, the step ``a`` most likely replaced;
- "both are noise", only when ``P(a | z) < θ`` and that sum is below θ too: ``a`` replaced
  ``y1``, ``z``'s best follower, and ``b`` came before ``y2``, ``y1``'s best follower
  (weight ``θ² · ρ · ι'``, predict from the context of ``y1``) or replaced it (weight
  ``θ² · ρ · ρ'``, predict from the context of ``y2``), ``ι'`` and ``ρ'`` as above with
  ``P(y2 | y1)``.

Each hypothesis predicts from the history it infers (a noise statement left out, a
replaced step put back), so its second-order context and loop count are those of that
history. So θ is the share below which a statement is more likely noise than a step: a
statement that follows its predecessor often keeps the ordinary prediction, one that rarely
or never did (an ad-hoc query, a statement out of place) hands the prediction to the
statements around it. When ``a`` is `START` only the first three hypotheses apply: "``b``
was inserted" predicts the session's usual first statement, "``b`` replaced a step" what
follows it. A table with no observations gives no evidence (likelihood 1); a hypothesis
without a table to predict from is left out; when every weight is 0 the others count
equally. The "steps" hypothesis comes first on a tie.

Learning the kind of noise. An inserted statement and a replaced step look the same from
the shapes seen so far: after ``b``, the step ``y`` it displaced comes next if it was
inserted, the step after ``y`` if it replaced ``y``. Which is more common is a property of
the workload, so the tracker learns it (`NoiseKinds`, tracker-wide, bounded): when the
statement ``c`` after a ``b`` that looked like noise (``P(b | a) < θ`` by ``a``'s
first-order table when ``b`` was recorded) arrives, `Scorer.judge` checks which guess it
matches, ``y`` (the best follower of ``a``) or the best follower of the context (``a``,
``y``), and counts a hit for "inserted" or "replaced" when exactly one of them did. ι and
ρ are then the Laplace-smoothed odds of the two, the more successful at 1 (so a noise
statement never looks less likely than with fixed weights) and the other at its count + 1
over the leader's count + 1. Where noise only replaces steps, "replaced" wins and
"inserted" fades, and the other way round where it only comes between steps; where both
are as common the two stay close and a prediction after a noise statement stays a guess
between them, which nothing seen so far can settle. With ``learn_noise_kind=False`` ι = ρ
= 1, "``b`` replaced a step" and "both are noise" are left out and "``a`` was inserted"
and "``a`` replaced a step" use no loop count: the back-off as it was before.
``benchmarks/bench_learning.py`` compares every piece with the best any predictor can do.
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
        # b replaced y (when a looks like noise too, see _both_noise)
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
            if kinds is not None and lb_y < theta:  # b no likely step after y: noise too?
                weight = theta * theta * replaced
                self._both_noise(hypotheses, h, after_z, weight, inserted, replaced)
        return _mix(hypotheses)

    def _both_noise(
        self,
        hypotheses: list[Hypothesis],
        h: History,
        after_z: Followers,
        weight: float,
        inserted: float,
        replaced: float,
    ) -> None:
        """Add "``a`` replaced the step ``y1`` after ``z``, and ``b`` came before
        (inserted) or instead of (replaced) the step ``y2`` after ``y1``"."""
        y1 = after_z.lead
        if y1 is None:
            return
        m = len(h)
        path = (*h[:-2], y1)
        after_y1 = self.context(y1, h[-3], path if self.loops else (), m - 2)[0]
        if after_y1 is None or after_y1.lead is None:
            return
        y2 = after_y1.lead
        path = (*path, y2)
        after_y2 = self.context(y2, y1, path if self.loops else (), m - 1)[0]
        w_inserted, w_replaced = _split(inserted, replaced, after_y1.top / after_y1.total)
        hypotheses.append((weight * w_inserted, after_y1, BACKOFF))
        hypotheses.append((weight * w_replaced, after_y2, BACKOFF))

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
