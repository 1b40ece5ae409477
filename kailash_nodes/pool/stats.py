"""Pool statistics: the counters and windows the engine updates, and the reports built
from them (``ConnectionPool.get_stats`` and friends; every key is listed in docs/pool.md).

Every value is measured; every average or percentile is reported with its sample count.
Windows are :class:`kailash_nodes.measure.Samples` (nearest-rank percentiles over the most
recent samples).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kailash_nodes.measure import Samples, percentile
from kailash_nodes.pool.entry import Entry

__all__ = ["PoolStats", "Window", "connection_status", "flat_statistics", "percentile"]

Window = Samples  # the name this module used before kailash_nodes.measure existed


class PoolStats:
    """Counters and windows of one pool; the engine updates them, readers copy them."""

    __slots__ = (
        "acquire_wait",
        "acquires",
        "affinity_picks",
        "checks_failed",
        "checks_performed",
        "connections_closed",
        "connections_created",
        "connections_failed",
        "connections_recycled",
        "handoffs_deferred",
        "hold_time",
        "queries_executed",
        "query_errors",
        "query_time",
        "requests_rejected",
        "resets",
        "rollbacks",
        "timeouts",
    )

    def __init__(self, window: int = 2048) -> None:
        self.acquire_wait = Samples(window)
        self.query_time = Samples(window)
        self.hold_time = Samples(window)
        self.acquires = 0
        self.affinity_picks = 0
        self.timeouts = 0
        self.requests_rejected = 0
        self.connections_created = 0
        self.connections_failed = 0
        self.connections_recycled = 0
        self.connections_closed = 0
        self.handoffs_deferred = 0
        self.queries_executed = 0
        self.query_errors = 0
        self.checks_performed = 0
        self.checks_failed = 0
        self.resets = 0
        self.rollbacks = 0

    def counters(self) -> dict[str, Any]:
        """Return the plain counters as a dict."""
        return {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("acquire_wait", "query_time", "hold_time")
        }

    def report(self, name: str, uptime: float, state: dict[str, Any]) -> dict[str, Any]:
        """Return the ``stats`` report of pool ``name``: counters, timings with their sample
        counts, and ``state`` (the pool's current counts and health scores) under
        ``current_state``."""
        acquire = self.acquire_wait.summary_ms()
        query = self.query_time.summary_ms()
        executed, errors = self.queries_executed, self.query_errors
        return {
            "pool_name": name,
            "uptime_seconds": uptime,
            "connections": {
                "created": self.connections_created,
                "recycled": self.connections_recycled,
                "failed": self.connections_failed,
                "closed": self.connections_closed,
            },
            "queries": {
                "executed": executed,
                "errors": errors,
                "error_rate": (errors / executed) if executed else 0.0,
            },
            "performance": {
                "avg_acquisition_time_ms": acquire["avg_ms"],
                "p50_acquisition_time_ms": acquire["p50_ms"],
                "p95_acquisition_time_ms": acquire["p95_ms"],
                "p99_acquisition_time_ms": acquire["p99_ms"],
                "acquisition_samples": acquire["samples"],
                "avg_query_time_ms": query["avg_ms"],
                "p50_query_time_ms": query["p50_ms"],
                "p95_query_time_ms": query["p95_ms"],
                "p99_query_time_ms": query["p99_ms"],
                "query_samples": query["samples"],
            },
            "health": {
                "success_rate": ((executed - errors) / executed) if executed else 1.0,
                "checks_performed": self.checks_performed,
                "checks_failed": self.checks_failed,
            },
            "requests": self._requests(),
            "current_state": state,
        }

    def _requests(self) -> dict[str, int]:
        return {
            "acquired": self.acquires,
            "timeouts": self.timeouts,
            "rejected": self.requests_rejected,
            "statement_affinity_picks": self.affinity_picks,
            "handoffs_deferred": self.handoffs_deferred,
            "rollbacks_on_release": self.rollbacks,
            "resets_on_release": self.resets,
        }


def flat_statistics(stats: dict[str, Any]) -> dict[str, Any]:
    """Return the flat summary the original's adaptive controller read, from a ``stats``
    report (`PoolStats.report`).

    >>> state = {"total_connections": 2, "active_connections": 1, "idle_connections": 1,
    ...          "waiting_requests": 0, "health_scores": {"a": 100.0, "b": 80.0}}
    >>> perf = {"avg_acquisition_time_ms": 0.1, "avg_query_time_ms": 2.0, "query_samples": 4}
    >>> flat = flat_statistics({"pool_name": "p", "uptime_seconds": 2.0, "current_state": state,
    ...     "performance": perf, "queries": {"executed": 4, "error_rate": 0.25}})
    >>> flat["utilization_rate"], flat["avg_health_score"], flat["queries_per_second"]
    (0.5, 90.0, 2.0)
    """
    state = stats["current_state"]
    total = state["total_connections"]
    scores = list(state["health_scores"].values())
    uptime = stats["uptime_seconds"]
    return {
        "pool_name": stats["pool_name"],
        "total_connections": total,
        "active_connections": state["active_connections"],
        "idle_connections": state["idle_connections"],
        "queue_depth": state["waiting_requests"],
        "utilization_rate": (state["active_connections"] / total) if total else 0.0,
        "avg_health_score": (sum(scores) / len(scores)) if scores else 0.0,
        "avg_acquisition_time_ms": stats["performance"]["avg_acquisition_time_ms"],
        "avg_query_time_ms": stats["performance"]["avg_query_time_ms"],
        "query_time_samples": stats["performance"]["query_samples"],
        "queries_per_second": (stats["queries"]["executed"] / uptime) if uptime else 0.0,
        "error_rate": stats["queries"]["error_rate"],
    }


def connection_status(entries: Iterable[Entry], now: float) -> dict[str, dict[str, Any]]:
    """Return ``{name: status}`` for ``entries``, sorted by name: health, checked out or
    idle, statements run, age and idle time at monotonic time ``now``."""
    return {
        e.name: {
            "health_score": round(e.health, 1),
            "active_queries": 1 if e.leased else 0,
            "state": "active" if e.leased else "idle",
            "queries": e.queries,
            "age_seconds": now - e.created,
            "idle_seconds": 0.0 if e.leased else now - e.last_used,
        }
        for e in sorted(entries, key=lambda e: e.name)
    }
