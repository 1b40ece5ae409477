"""Predictions: the `Prediction` record and the original tracker's dict shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["Prediction", "as_original_dict"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One likely next shape.

    ``probability`` = count / ``support`` for a prediction from one context, where
    ``support`` is how many transitions out of the context were observed; with the noise
    back-off it is the mixture's probability and ``support`` that of the heaviest
    hypothesis' context (`kailash_nodes.learning.history`). ``confidence`` = Wilson 95%
    lower bound of ``probability`` over ``support`` observations (`wilson_lower_bound`),
    so it grows with support; ``expected_delay_s`` = median gap between the end of the
    current statement and the start of this one in a session (None when no gap was kept);
    ``order`` = the context of the heaviest hypothesis: 1 the shape alone, 2 (previous,
    shape), 3 (shape, loop count), 0 a back-off that skipped the shape or the one before
    it as noise, 4 a template of whole runs (`kailash_nodes.learning.runs`; then
    ``probability`` is the posterior chance that this step comes next and ``support`` how
    many finished runs its heaviest template was seen in).
    """

    shape: str
    probability: float
    confidence: float
    expected_delay_s: float | None
    support: int
    order: int = 1


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
