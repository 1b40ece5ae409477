"""Query-sequence learning: which statement shape follows which, per session.

`QueryPatternTracker` (options: `TrackerOptions`) records executions of normalised query
shapes keyed by session (or workflow run), predicts the next shapes with probability,
confidence and expected delay, reports workload insights and can persist what it learned.
`QueryLearner` is the engine-level entry: it takes executed SQL text, classifies it and
offers the likely next statement's text when the prediction is likely and supported.
"""

from __future__ import annotations

from kailash_nodes.learning.bounds import Bounds
from kailash_nodes.learning.learner import QueryLearner
from kailash_nodes.learning.options import TrackerOptions
from kailash_nodes.learning.persist import FORMAT_VERSION, PatternFileError
from kailash_nodes.learning.prediction import Prediction
from kailash_nodes.learning.tracker import QueryPatternTracker
from kailash_nodes.learning.transitions import wilson_lower_bound

__all__ = [
    "FORMAT_VERSION",
    "Bounds",
    "PatternFileError",
    "Prediction",
    "QueryLearner",
    "QueryPatternTracker",
    "TrackerOptions",
    "wilson_lower_bound",
]
