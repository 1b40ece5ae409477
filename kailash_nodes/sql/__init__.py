"""SQL text handling: placeholder rewriting, parameter binding and classification for routing."""

from __future__ import annotations

from kailash_nodes.sql.classify import (
    SAFE_FUNCTIONS,
    Category,
    Classification,
    Classifier,
    calls_routines,
    classify,
)
from kailash_nodes.sql.outcome import lost_in_flight, timed_out
from kailash_nodes.sql.placeholders import FORMAT, NUMERIC, QMARK, RewrittenQuery, bind, rewrite
from kailash_nodes.sql.routines import changes_routines

__all__ = [
    "FORMAT",
    "NUMERIC",
    "QMARK",
    "SAFE_FUNCTIONS",
    "Category",
    "Classification",
    "Classifier",
    "RewrittenQuery",
    "bind",
    "calls_routines",
    "changes_routines",
    "classify",
    "lost_in_flight",
    "rewrite",
    "timed_out",
]
