"""The router engine: targets, read/write split, sessions, read-your-writes."""

from __future__ import annotations

from kailash_nodes.router.engine import QueryRouter, Routed, RouterOptions
from kailash_nodes.router.replicas import ReplicaSet, ReplicaState
from kailash_nodes.router.sessions import Session, SessionTable

__all__ = [
    "QueryRouter",
    "ReplicaSet",
    "ReplicaState",
    "Routed",
    "RouterOptions",
    "Session",
    "SessionTable",
]
