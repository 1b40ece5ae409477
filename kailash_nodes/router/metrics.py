"""The router's counters and its ``get_metrics()`` report.

`RouterMetrics` holds what the engine counts on the query path (plain attribute
increments, no calls) and builds the report's sections on read; `QueryRouter.metrics_report`
puts them together with its parts' figures (consistency, sessions, replicas, pools). Every
key is documented in docs/router.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kailash_nodes.drivers import DriverConnection
from kailash_nodes.measure import Samples
from kailash_nodes.router.prewarm import PREDICTOR, PreparedAheadLedger
from kailash_nodes.sql import Classification

__all__ = ["RouterMetrics", "routing_metadata"]

# Why nothing is prepared on the server (``cache_stats.prepared.why``), by the backend's
# statement cache (``Driver.statement_cache``)
_NOT_PREPARED = {
    "sqlite3": "SQLite has no server: statements are reused from sqlite3's own cache",
    "client_text": (
        "the driver (aiomysql) has no server-side prepared statements (it speaks only the "
        "text protocol): only the router's per-text work is reused"
    ),
    "server_prepared": (
        "no connection prepares statements on the server now: prepare_statements=False, "
        "cache_size=0, or a transaction-pooling proxy (PgBouncer) was detected"
    ),
}


@dataclass(slots=True)
class RouterMetrics:
    """Counters and the routing-time window (seconds) of one router."""

    routed: int = 0
    routing_errors: int = 0
    reads_replica: int = 0
    reads_primary: int = 0
    writes: int = 0
    fallbacks: int = 0
    # statements looked up in a connection's statement cache (server-side prepared or
    # sqlite3's), and of those the ones on a connection that prepares on the server
    cache_lookups: int = 0
    cache_hits: int = 0
    prepared_lookups: int = 0
    prepared_hits: int = 0
    invalidations: int = 0
    prewarm: PreparedAheadLedger = field(default_factory=PreparedAheadLedger)
    routing_time: Samples = field(default_factory=Samples)

    def count_lookup(self, conn: DriverConnection, text: str, hit: bool) -> None:
        """Count one look-up of ``text`` in ``conn``'s statement cache (``hit``: it was
        there): a prepared look-up where the driver prepares on the server, marking a
        statement prepared ahead used. Only for a connection that caches statements
        (``server_prepare`` or ``client_statement_cache``)."""
        self.cache_lookups += 1
        self.cache_hits += hit
        if conn.server_prepare:
            self.prepared_lookups += 1
            self.prepared_hits += hit
            if hit and self.prewarm.pending:  # prepared ahead: its first use?
                self.prewarm.use(conn, text)

    def count_routed(self, target: str, counts_as_write: bool, routing_time: float) -> None:
        """Count a statement routed to ``target`` after ``routing_time`` seconds."""
        self.routing_time.add(routing_time)
        if target != "primary":
            self.reads_replica += 1
        elif counts_as_write:
            self.writes += 1
        else:
            self.reads_primary += 1

    def routing(self) -> dict[str, Any]:
        """Return the ``router_metrics`` counters and routing-time summary (no consistency
        counts: those belong to the router's ReadYourWrites).

        >>> m = RouterMetrics(routed=2, cache_lookups=2, cache_hits=1)
        >>> m.routing_time.add(0.002)
        >>> r = m.routing()
        >>> r["queries_routed"], r["cache_misses"], r["avg_routing_time_ms"]
        (2, 1, 2.0)
        """
        timing = self.routing_time.summary_ms()
        return {
            "queries_routed": self.routed,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_lookups - self.cache_hits,
            "routing_errors": self.routing_errors,
            "avg_routing_time_ms": timing["avg_ms"],
            "p95_routing_time_ms": timing["p95_ms"],
            "p99_routing_time_ms": timing["p99_ms"],
            "routing_samples": timing["samples"],
            "reads_to_replicas": self.reads_replica,
            "reads_to_primary": self.reads_primary,
            "writes_to_primary": self.writes,
            "replica_fallbacks": self.fallbacks,
        }

    def cache(self, kind: str, on_server: bool, text_cache: tuple[int, int]) -> dict[str, Any]:
        """Return the ``cache_stats`` counters (the router adds what it reads from pools).

        ``kind`` is the backend's statement cache (``Driver.statement_cache``);
        ``on_server`` whether a connection prepares on the server now (without, a
        "server_prepared" backend reuses only per-text work: "client_text"). For
        "client_text" the counts are ``text_cache``: (hits, misses) of the router's own
        classification cache. ``prepared`` counts server-side prepares only.

        >>> RouterMetrics(cache_lookups=4, cache_hits=3).cache("sqlite3", False, (0, 0))[
        ...     "hit_rate"]
        0.75
        >>> c = RouterMetrics().cache("client_text", False, (9, 1))
        >>> c["hit_rate"], c["prepared"]["hit_rate"], c["prepared"]["why"][:22]
        (0.9, None, 'the driver (aiomysql) ')
        """
        why = None if on_server else _NOT_PREPARED.get(kind, _NOT_PREPARED["server_prepared"])
        if kind == "client_text" or not (on_server or kind == "sqlite3"):
            kind = "client_text"
            hits, lookups = text_cache[0], text_cache[0] + text_cache[1]
        else:
            lookups, hits = self.cache_lookups, self.cache_hits
        plookups, phits = self.prepared_lookups, self.prepared_hits
        return {
            "statement_cache": kind,
            "hit_rate": (hits / lookups) if lookups else 0.0,
            "lookups": lookups,
            "hits": hits,
            "misses": lookups - hits,
            "prepared": {
                "lookups": plookups,
                "hits": phits,
                "misses": plookups - phits,
                "hit_rate": (phits / plookups) if plookups else None,
                "why": why,
            },
        }

    def learning(self, enabled: bool) -> dict[str, Any]:
        """Return the ``pattern_learning`` section: statements prepared ahead on a
        prediction, and how many of them a later statement used.

        >>> RouterMetrics().learning(False)["prewarms_wasted_or_pending"]
        0
        """
        predicted = self.prewarm.counts[PREDICTOR]
        return {
            "enabled": enabled,
            "prewarms": predicted.issued,
            "prewarms_used": predicted.used,
            "prewarms_wasted_or_pending": predicted.issued - predicted.used,
            "prewarm_errors": predicted.errors,
        }


def routing_metadata(
    cls: Classification,
    query_type: str,
    target: str,
    connection_id: str,
    cache_hit: bool,
    routing_time: float,
) -> dict[str, Any]:
    """Return the ``routing_metadata`` of a routed statement (keys in docs/router.md);
    ``query_type`` is ``cls.category.value``, looked up once per text by the caller."""
    return {
        "query_type": query_type,
        "target": target,
        "connection_id": connection_id,
        "cache_hit": cache_hit,
        "routing_time_ms": routing_time * 1000.0,
        "replica_safe": cls.replica_safe,
        "fingerprint": cls.fingerprint,
        "reason": cls.reason,
    }
