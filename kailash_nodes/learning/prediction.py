"""Predictions: the `Prediction` record, choosing between orders, the original's dict shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kailash_nodes.learning.transitions import Edge, Followers, wilson_lower_bound

__all__ = ["Prediction", "as_original_dict", "choose_table"]

Ranked = list[tuple[str, Edge]]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One likely next shape.

    ``probability`` = count / ``support``, where ``support`` is how many transitions out of
    the context were observed; ``confidence`` = Wilson 95% lower bound of that probability
    (`wilson_lower_bound`), so it grows with support; ``expected_delay_s`` = median gap
    between the end of the current statement and the start of this one in a session (None
    when no gap was kept); ``order`` = 2 when the (previous, current) context decided it.
    """

    shape: str
    probability: float
    confidence: float
    expected_delay_s: float | None
    support: int
    order: int = 1


def choose_table(
    first: Followers, second: Followers | None, min_support: int, live: Callable[[str], bool]
) -> tuple[Followers, Ranked, int]:
    """Return the table to predict from, its live ranked edges and its order (1 or 2).

    The second-order table wins when it has ``min_support`` observations and its best
    follower is at least as confident (Wilson lower bound) as the first-order best, so one
    stray observation of a rare pair cannot override a well-supported transition.
    """
    ranked = first.ranked(live)
    if second is None or second.total < min_support:
        return first, ranked, 1
    ranked2 = second.ranked(live)
    if ranked2 and (not ranked or _best(ranked2, second) >= _best(ranked, first)):
        return second, ranked2, 2
    return first, ranked, 1


def _best(ranked: Ranked, table: Followers) -> float:
    return wilson_lower_bound(ranked[0][1].count, table.total)


def as_original_dict(p: Prediction, now: datetime) -> dict[str, Any]:
    """Return ``p`` as the original tracker's prediction dict (plus delay and support).

    >>> d = as_original_dict(Prediction("q", 0.5, 0.2, 2.0, 10), datetime(2024, 1, 1))
    >>> d["fingerprint"], d["probability"], d["confidence"], d["expected_time"].second
    ('q', 0.5, 0.2, 2)
    """
    delay = p.expected_delay_s if p.expected_delay_s is not None else 0.0
    return {
        "fingerprint": p.shape,
        "probability": p.probability,
        "confidence": p.confidence,
        "expected_time": now + timedelta(seconds=delay),
        "expected_delay_s": p.expected_delay_s,
        "support": p.support,
    }
