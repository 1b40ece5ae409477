"""The names this module held before the split into connections.py and handoff.py."""

from __future__ import annotations

from kailash_nodes.pool.connections import AFFINITY_DEPTH, CLEANUP_TIMEOUT, ConnectionSet

__all__ = ["AFFINITY_DEPTH", "CLEANUP_TIMEOUT", "PoolCore"]

PoolCore = ConnectionSet  # the connection set's former name
