"""Run templates: whole runs that repeat, learned from finished sessions, predicting a
session's next statement from everything it ran so far.

Learning: every finished session (ended, expired or evicted) adds its exact statement
sequence to a bounded count; the sequences seen at least ``min_count`` times and making
up at least ``min_share`` of the counted runs are the templates, each with the prior
count / ``clean ** length`` (a long run comes out free of noise less often).

Predicting: a session's belief is a probability over (template, steps done, an inserted
statement pending). A statement ``x`` advances a template whose step due is ``x``
(weight ``1 - replace - insert``), replaces the step due (``replace / (shapes - 1)``),
or was inserted before it (``insert / shapes``; then that step comes next). The next
statement's probability is the belief's mass on it as the step due. States below a
millionth of the belief or beyond the ``max_states`` heaviest are dropped. ``finish`` is
a dict update (a rebuild scans the bounded counts); ``update`` touches each state once.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

__all__ = ["Belief", "NoiseLevel", "RunTemplates", "SessionRun", "State"]

State = tuple[tuple[str, ...], int, bool]
"""(template, steps done, whether an inserted statement is pending)."""
Belief = dict[State, float]

_KEEP_ABOVE = 1e-6  # a state under this share of the belief is dropped


class RunTemplates:
    """Templates of whole runs, learned from finished sessions (bounded).

    >>> t = RunTemplates(min_count=2, rebuild_every=1)
    >>> for _ in range(3):
    ...     t.finish(("login", "cart", "pay"), clean=0.8)
    >>> t.finish(("login", "x", "cart", "pay"), clean=0.8)     # once: no template
    >>> sorted(t.templates.values())
    [1.0]
    >>> belief = t.start()
    >>> belief, likely = t.update(belief, "login", replace=0.1, insert=0.1, shapes=20)
    >>> belief, likely = t.update(belief, "adhoc", replace=0.1, insert=0.1, shapes=20)
    >>> likely < 3 * (0.1 / 19 + 0.1 / 20)    # no likelier than a noise statement: surprised
    True
    >>> [(shape, round(p, 2)) for shape, p in t.predict(belief, 0.1, 0.1)]  # inserted: cart
    [('cart', 0.49), ('pay', 0.41)]
    """

    __slots__ = (
        "candidates",
        "finished",
        "max_candidates",
        "max_length",
        "max_states",
        "max_templates",
        "min_count",
        "min_share",
        "rebuild_every",
        "templates",
    )

    def __init__(
        self,
        *,
        max_candidates: int = 1024,
        max_templates: int = 64,
        max_length: int = 64,
        max_states: int = 64,
        min_count: int = 3,
        min_share: float = 0.005,
        rebuild_every: int = 50,
    ) -> None:
        self.max_candidates = max_candidates
        self.max_templates = max_templates
        self.max_length = max_length
        self.max_states = max_states
        self.min_count = min_count
        self.min_share = min_share
        self.rebuild_every = rebuild_every
        self.candidates: dict[tuple[str, ...], int] = {}
        self.finished = 0
        self.templates: dict[tuple[str, ...], float] = {}  # prior, summing to 1

    def finish(self, run: Sequence[str], clean: float) -> None:
        """Count one finished run; ``clean`` is the chance a step comes out as itself.

        Runs longer than ``max_length`` are not counted. When more than
        ``max_candidates`` sequences are counted, every count is halved and those that
        reach 0 are dropped (one-off noisy runs go first).
        """
        if not 0 < len(run) <= self.max_length:
            return
        key = tuple(run)
        counts = self.candidates
        n = counts[key] = counts.get(key, 0) + 1
        self.finished += 1
        if len(counts) > self.max_candidates:
            self.candidates = {k: c // 2 for k, c in counts.items() if c >= 2}
        if self.finished % self.rebuild_every == 0 or (
            n == self.min_count and key not in self.templates
        ):
            self.rebuild(clean)

    def rebuild(self, clean: float) -> None:
        """Recompute the templates and their priors from the counted runs."""
        counts = self.candidates
        least = max(self.min_count, self.min_share * sum(counts.values()))
        clean = min(max(clean, 0.05), 1.0)
        weights = {k: n / clean ** len(k) for k, n in counts.items() if n >= least}
        if len(weights) > self.max_templates:
            weights = dict(heapq.nlargest(self.max_templates, weights.items(), key=_second))
        total = sum(weights.values())
        self.templates = {k: w / total for k, w in weights.items()} if total else {}

    def start(self) -> Belief | None:
        """Return a new session's belief (the templates' priors), None without templates."""
        if not self.templates:
            return None
        return {(steps, 0, False): prior for steps, prior in self.templates.items()}

    def update(
        self, belief: Belief, shape: str, replace: float, insert: float, shapes: int
    ) -> tuple[Belief, float]:
        """Return the belief after ``shape``, and how likely ``shape`` was under it.

        The belief comes back empty when no template explains the session any more (it
        ran past the end of all of them).
        """
        keep = 1.0 - replace - insert
        swapped = replace / max(shapes - 1, 1)
        inserted = insert / max(shapes, 1)
        after: Belief = {}
        get = after.get
        for (steps, done, pending), p in belief.items():
            if pending:
                if steps[done] == shape:
                    key = (steps, done + 1, False)
                    after[key] = get(key, 0.0) + p
                continue
            if done < len(steps):
                key = (steps, done + 1, False)
                after[key] = get(key, 0.0) + p * (keep if steps[done] == shape else swapped)
                key = (steps, done, True)
                after[key] = get(key, 0.0) + p * inserted
        total = sum(after.values())
        if total <= 0.0:
            return {}, 0.0
        floor = total * _KEEP_ABOVE
        kept = [(key, p) for key, p in after.items() if p > floor]
        if len(kept) > self.max_states:
            kept = heapq.nlargest(self.max_states, kept, key=_second)
            total = sum(p for _, p in kept)
        return {key: p / total for key, p in kept}, total

    @staticmethod
    def predict(belief: Belief, replace: float, insert: float) -> list[tuple[str, float]]:
        """Return the steps due with their probability of coming next, most likely first."""
        keep = 1.0 - replace - insert
        scores: dict[str, float] = {}
        for (steps, done, pending), p in belief.items():
            if done < len(steps):
                step = steps[done]
                scores[step] = scores.get(step, 0.0) + (p if pending else p * keep)
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    def encode(self, level: NoiseLevel) -> dict[str, Any]:
        """Return the counted runs and the noise level as a JSON-ready dict."""
        return {
            "finished": self.finished,
            "explained": level.explained,
            "surprised": level.surprised,
            "sequences": [[list(k), n] for k, n in self.candidates.items()],
        }

    def restore(self, saved: dict[str, Any], level: NoiseLevel) -> None:
        """Load what `encode` returned (cut to this instance's bounds), then rebuild.

        Raises ValueError or TypeError for malformed content.

        >>> t, level = RunTemplates(min_count=2), NoiseLevel()
        >>> t.restore({"finished": 4, "explained": 9, "surprised": 1,
        ...            "sequences": [[["a", "b"], 3], [["a", "x", "b"], 1]]}, level)
        >>> list(t.templates), level.surprised
        ([('a', 'b')], 1)
        """
        sequences: dict[tuple[str, ...], int] = {}
        for shapes, count in saved["sequences"]:
            key = tuple(shapes) if isinstance(shapes, list) else ()
            if not key or not all(isinstance(x, str) for x in key) or isinstance(count, bool):
                raise TypeError(f"a run must be a list of shapes and a count (got {shapes!r})")
            if int(count) < 1:
                raise ValueError(f"a run's count must be >= 1 (got {count!r})")
            if len(key) <= self.max_length:
                sequences[key] = int(count)
        if len(sequences) > self.max_candidates:
            sequences = dict(heapq.nlargest(self.max_candidates, sequences.items(), key=_second))
        self.candidates = sequences
        self.finished = _natural(saved["finished"])
        level.explained = _natural(saved["explained"])
        level.surprised = _natural(saved["surprised"])
        self.rebuild(1.0 - level.rate)

    def support(self, belief: Belief) -> int:
        """Return how many finished runs the belief's heaviest template was seen in."""
        if not belief:
            return 0
        (steps, _, _), _ = max(belief.items(), key=_second)
        return self.candidates.get(steps, 0)


class NoiseLevel:
    """How many statements fed to beliefs were explained as steps and how many only as
    noise (tracker-wide; both halved when their sum reaches ``halve_at``), and the noise
    rate per step that follows: (surprised + 1) / (all + 10), within 0.01..0.5.

    >>> level = NoiseLevel()
    >>> level.rate  # nothing seen: a prior of 10%
    0.1
    >>> level.explained, level.surprised = 790, 200
    >>> round(level.rate, 3)
    0.201
    """

    __slots__ = ("explained", "halve_at", "surprised")

    def __init__(self, halve_at: int = 10_000) -> None:
        self.halve_at = halve_at
        self.explained = 0
        self.surprised = 0

    @property
    def rate(self) -> float:
        """Return the estimated share of statements that are noise."""
        rate = (self.surprised + 1) / (self.explained + self.surprised + 10)
        return min(0.5, max(0.01, rate))

    def add(self, surprised: bool) -> None:
        """Count one statement fed to a belief."""
        if surprised:
            self.surprised += 1
        else:
            self.explained += 1
        if self.explained + self.surprised >= self.halve_at:
            self.explained //= 2
            self.surprised //= 2


class SessionRun:
    """One session's statements so far and its belief over the templates, fed lazily:
    `record` only appends (``max_length`` at most; longer runs are no template), the
    belief catches up when a prediction is asked for.

    The templates predict only while the session looks like one of them: unless more of
    its statements were explained only as noise ("surprised": less likely than 3 times
    the chance of a noise statement) than as steps, by two or more. So a run whose first
    statement was noise keeps its templates, and a run of a workflow no template knows
    hands the prediction back after two surprises. A session that ran past the end of
    every template stops using them.
    """

    __slots__ = ("belief", "explained", "fed", "shapes", "surprised")

    def __init__(self) -> None:
        self.shapes: list[str] | None = []  # None: longer than max_length
        self.belief: Belief | None = None  # None: not started; {}: no template fits
        self.fed = 0
        self.explained = 0
        self.surprised = 0

    def append(self, shape: str, max_length: int) -> None:
        """Record one statement of the session."""
        shapes = self.shapes
        if shapes is not None:
            if len(shapes) < max_length:
                shapes.append(shape)
            else:
                self.shapes = None

    def predict(
        self,
        templates: RunTemplates,
        shape: str,
        rates: tuple[float, float],
        level: NoiseLevel,
        known_shapes: int,
    ) -> tuple[list[tuple[str, float]], Belief] | None:
        """Return what comes after ``shape`` (the session's last statement, or one about
        to be recorded) and the belief it came from; None when no template fits."""
        shapes = self.shapes
        if shapes is None or self.belief == {}:
            return None
        replace, insert = rates
        noise = 3.0 * (replace / max(known_shapes - 1, 1) + insert / max(known_shapes, 1))
        belief = self.belief
        if belief is None:
            belief = templates.start()
            if belief is None:
                return None
        for x in shapes[self.fed :]:
            belief, likely = templates.update(belief, x, replace, insert, known_shapes)
            as_noise = likely < noise
            level.add(as_noise)
            if as_noise:
                self.surprised += 1
            else:
                self.explained += 1
            if not belief:
                break
        self.fed = len(shapes)
        self.belief = belief
        if not belief:
            return None
        explained, surprised = self.explained, self.surprised
        if not shapes or shapes[-1] != shape:  # asked before recording it: a look ahead
            belief, likely = templates.update(belief, shape, replace, insert, known_shapes)
            if likely < noise:
                surprised += 1
            else:
                explained += 1
        if not belief or surprised > explained + 1:
            return None
        return templates.predict(belief, replace, insert), belief


def _second(item: tuple[object, float]) -> float:
    return item[1]


def _natural(value: Any) -> int:
    if isinstance(value, bool) or int(value) < 0:
        raise ValueError(f"a count must be an integer >= 0 (got {value!r})")
    return int(value)
