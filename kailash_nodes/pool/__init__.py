"""The pool engine: a plain asyncio API with typed exceptions (no process() dicts here)."""

from __future__ import annotations

from kailash_nodes.pool.connections import AFFINITY_DEPTH, ConnectionSet
from kailash_nodes.pool.engine import ConnectionPool, QueryResult
from kailash_nodes.pool.entry import PooledConnection
from kailash_nodes.pool.oneshot import Ran, run_once
from kailash_nodes.pool.stats import PoolStats, Window, percentile
from kailash_nodes.pool.stream import ResultStream
from kailash_nodes.pool.warm import checkout_for_warming, open_idle

__all__ = [
    "AFFINITY_DEPTH",
    "ConnectionPool",
    "ConnectionSet",
    "PoolStats",
    "PooledConnection",
    "QueryResult",
    "Ran",
    "ResultStream",
    "Window",
    "checkout_for_warming",
    "open_idle",
    "percentile",
    "run_once",
]
