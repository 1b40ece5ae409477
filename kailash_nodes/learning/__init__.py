"""Query-sequence learning: which statement shape follows which, per session.

`QueryPatternTracker` records executions of normalised query shapes keyed by session (or
workflow run), predicts the next shapes with probability, confidence and expected delay,
reports workload insights and can persist what it learned. numpy is used here for
percentiles only, never on the recording path.
"""

from __future__ import annotations

from kailash_nodes.learning.bounds import Bounds
from kailash_nodes.learning.persist import FORMAT_VERSION, PatternFileError
from kailash_nodes.learning.prediction import Prediction
from kailash_nodes.learning.tracker import QueryPatternTracker
from kailash_nodes.learning.transitions import wilson_lower_bound

__all__ = [
    "FORMAT_VERSION",
    "Bounds",
    "PatternFileError",
    "Prediction",
    "QueryPatternTracker",
    "wilson_lower_bound",
]
