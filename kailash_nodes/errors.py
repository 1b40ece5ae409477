"""Exceptions raised by kailash_nodes: one root, each named for what happened."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectionFailed",
    "ConnectionReleased",
    "KailashNodesError",
    "NodeExecutionError",
    "ParameterError",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "QueryError",
    "SessionError",
    "TooManyRequests",
    "UnknownConnection",
    "UnknownNode",
    "UnknownOperation",
    "WorkflowValidationError",
]


class KailashNodesError(Exception):
    """Root of every error this library raises on purpose."""


class NodeExecutionError(KailashNodesError):
    """A node could not carry out a request (the name Kailash users catch)."""


class ConfigError(NodeExecutionError, ValueError):
    """An option, DSN or environment setting is invalid; the message names it."""


class UnknownOperation(NodeExecutionError, ValueError):
    """`process()` was given an operation the node does not have."""


class ParameterError(NodeExecutionError, ValueError):
    """Query parameters do not fit the query (count, names, style or types)."""


class PoolError(NodeExecutionError):
    """Base of the errors about the pool's own state."""


class PoolClosed(PoolError):
    """The pool is closed (or closing) and takes no more work."""


class PoolTimeout(PoolError, TimeoutError):
    """No connection became available within the acquire timeout."""


class TooManyRequests(PoolError):
    """The queue of callers waiting for a connection is full (`max_waiting`)."""


class UnknownConnection(PoolError, KeyError):
    """A `connection_id` is missing, unknown, or not checked out."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConnectionReleased(UnknownConnection):
    """A connection handle was used after it was released."""


class ConnectionFailed(PoolError, ConnectionError):
    """Opening or using a server connection failed at the connection level."""


class QueryError(NodeExecutionError):
    """The database rejected a statement; carries the driver's SQLSTATE when it has one."""

    def __init__(self, message: str, *, sqlstate: str | None = None, error_type: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.error_type = error_type or type(self).__name__


class UnknownNode(NodeExecutionError, KeyError):
    """No node is registered under that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkflowValidationError(NodeExecutionError, ValueError):
    """A workflow is malformed: unknown node or port, duplicate id, or a cycle."""


class SessionError(NodeExecutionError):
    """A session statement does not fit the session's state (e.g. COMMIT with no open
    transaction, or the session's connection was lost)."""
