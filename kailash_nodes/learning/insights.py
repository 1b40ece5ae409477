"""Workload insights from a tracker's shapes: the busiest shapes and what follows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kailash_nodes.learning.shape import ShapeStats
from kailash_nodes.measure import Samples, percentile

__all__ = ["build_insights", "duration_percentiles_ms"]

SUCCESSORS = 3  # common successors listed per shape


def duration_percentiles_ms(durations: Samples) -> tuple[float | None, float | None]:
    """Return the (p50, p95) of ``durations`` (seconds) in ms, nearest rank; None when empty.

    Nearest rank reports a duration that was observed, as the pool's own statistics do. A
    window holds at most ``duration_window`` (128) samples: a sort in Python is cheaper
    than importing numpy for it.

    >>> duration_percentiles_ms(Samples(8, [0.001, 0.002, 0.003, 0.010]))
    (2.0, 10.0)
    >>> duration_percentiles_ms(Samples(8))
    (None, None)
    """
    if not len(durations):
        return None, None
    ordered = sorted(durations.ordered())
    return round(percentile(ordered, 50) * 1000.0, 3), round(percentile(ordered, 95) * 1000.0, 3)


def build_insights(
    shapes: Mapping[str, ShapeStats], top: int, totals: dict[str, Any]
) -> dict[str, Any]:
    """Return ``{"top_shapes": [...], "totals": {...}}`` for the ``top`` busiest shapes."""
    busiest = sorted(shapes.items(), key=lambda item: (-item[1].count, item[0]))[:top]
    return {
        "top_shapes": [_shape_insight(name, s, shapes) for name, s in busiest],
        "totals": totals,
    }


def _shape_insight(name: str, s: ShapeStats, shapes: Mapping[str, ShapeStats]) -> dict[str, Any]:
    p50, p95 = duration_percentiles_ms(s.durations)
    followers = s.followers
    successors = [
        {
            "shape": nxt,
            "probability": edge.count / followers.total,
            "count": edge.count,
            "median_delay_s": edge.gaps.median() if edge.gaps is not None else None,
        }
        for nxt, edge in followers.ranked(shapes.__contains__)[:SUCCESSORS]
    ]
    return {
        "shape": name,
        "count": s.count,
        "errors": s.errors,
        "error_rate": s.errors / s.count if s.count else 0.0,
        "kind": s.kind,
        "reads": s.reads,
        "writes": s.writes,
        "p50_ms": p50,
        "p95_ms": p95,
        "duration_samples": len(s.durations),
        "mean_rows": s.rows / s.row_samples if s.row_samples else None,
        "row_samples": s.row_samples,
        "successors": successors,
        "successor_samples": followers.total,
    }
