"""Exceptions raised by kailash_nodes: one root, each named for what happened."""

from __future__ import annotations

__all__ = [
    "CommitOutcomeUnknown",
    "ConfigError",
    "ConnectionFailed",
    "ConnectionReleased",
    "InvalidQueryText",
    "KailashNodesError",
    "NodeExecutionError",
    "OutcomeUnknown",
    "ParameterError",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "QueryError",
    "ResultTooLarge",
    "SessionError",
    "TooManyRequests",
    "TransactionRolledBack",
    "UnknownConnection",
    "UnknownNode",
    "UnknownOperation",
    "UnsupportedStatement",
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
    """A request's inputs do not fit: ``process()`` given something other than a mapping,
    an input of the wrong type or value (the message names it), or query parameters that do
    not fit the query (count, names, style or types)."""


class InvalidQueryText(ParameterError):
    """The query text itself cannot be sent (a NUL byte, a lone surrogate); the message
    names the position. Nothing reached the server and the connection is unaffected."""


class UnsupportedStatement(ParameterError):
    """The statement cannot run through this operation (``COPY ... FROM STDIN``, a
    multi-statement string where those are refused); the message names the alternative."""


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


class OutcomeUnknown(ConnectionFailed):
    """The connection was lost after a statement that may change data was sent and before
    its answer arrived: it may or may not have taken effect. Never retry it blindly."""


class CommitOutcomeUnknown(OutcomeUnknown):
    """The connection was lost after ``COMMIT`` was sent and before its answer arrived: the
    transaction may or may not have committed."""


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


class TransactionRolledBack(QueryError):
    """``COMMIT`` (or ``PREPARE TRANSACTION``) was answered with a rollback: the transaction
    had failed, so nothing in it was committed (SQLSTATE 40000)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, sqlstate="40000", error_type="TransactionRolledBack")


class ResultTooLarge(QueryError):
    """A statement returned more rows than ``max_rows`` allows; nothing was returned and
    the connection is usable. Read big results with a bounded operation instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, sqlstate="54000", error_type="ResultTooLarge")
