"""kailash_nodes: a connection pool and query router for Kailash-style workflows.

The names Kailash users know (seed 003) are importable from here::

    from kailash_nodes import LocalRuntime, WorkflowConnectionPool
"""

from __future__ import annotations

from kailash_nodes.errors import (
    ConfigError,
    ConnectionFailed,
    ConnectionReleased,
    KailashNodesError,
    NodeExecutionError,
    ParameterError,
    PoolClosed,
    PoolTimeout,
    QueryError,
    SessionError,
    TooManyRequests,
    UnknownConnection,
    UnknownOperation,
)
from kailash_nodes.nodes import QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.runtime import LocalRuntime, Node, WorkflowBuilder

__all__ = [
    "ConfigError",
    "ConnectionFailed",
    "ConnectionReleased",
    "KailashNodesError",
    "LocalRuntime",
    "Node",
    "NodeExecutionError",
    "ParameterError",
    "PoolClosed",
    "PoolTimeout",
    "QueryError",
    "QueryRouterNode",
    "SessionError",
    "TooManyRequests",
    "UnknownConnection",
    "UnknownOperation",
    "WorkflowBuilder",
    "WorkflowConnectionPool",
]

__version__ = "0.1.0"
