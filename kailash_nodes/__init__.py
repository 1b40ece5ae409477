"""kailash_nodes: a connection pool and query router for Kailash-style workflows.

The names Kailash users know (seed 003) are importable from here::

    from kailash_nodes import LocalRuntime, WorkflowConnectionPool
"""

from __future__ import annotations

from kailash_nodes.errors import (
    CommitOutcomeUnknown,
    ConfigError,
    ConnectionFailed,
    ConnectionReleased,
    InvalidQueryText,
    KailashNodesError,
    NodeExecutionError,
    OutcomeUnknown,
    ParameterError,
    PoolClosed,
    PoolTimeout,
    QueryError,
    ResultTooLarge,
    SessionError,
    TooManyRequests,
    TransactionRolledBack,
    UnknownConnection,
    UnknownOperation,
    UnsupportedStatement,
)
from kailash_nodes.nodes import QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.runtime import LocalRuntime, Node, WorkflowBuilder

__all__ = [
    "CommitOutcomeUnknown",
    "ConfigError",
    "ConnectionFailed",
    "ConnectionReleased",
    "InvalidQueryText",
    "KailashNodesError",
    "LocalRuntime",
    "Node",
    "NodeExecutionError",
    "OutcomeUnknown",
    "ParameterError",
    "PoolClosed",
    "PoolTimeout",
    "QueryError",
    "QueryRouterNode",
    "ResultTooLarge",
    "SessionError",
    "TooManyRequests",
    "TransactionRolledBack",
    "UnknownConnection",
    "UnknownOperation",
    "UnsupportedStatement",
    "WorkflowBuilder",
    "WorkflowConnectionPool",
]

__version__ = "0.1.0"
