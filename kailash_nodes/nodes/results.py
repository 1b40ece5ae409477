"""The execute-result dict both nodes return (the keys Kailash users know)."""

from __future__ import annotations

from typing import Any

from kailash_nodes.errors import QueryError
from kailash_nodes.pool import QueryResult

__all__ = ["execute_result"]


def execute_result(
    connection_id: str, result: QueryResult | None, error: QueryError | None
) -> dict[str, Any]:
    """Return ``success``/``data``/``row_count``/``error``/... for one statement.

    >>> execute_result("c#1", QueryResult([{"a": 1}], 1, 0.002), None)["execution_time_ms"]
    2.0
    >>> execute_result("c#1", None, QueryError("boom", sqlstate="42601"))["sqlstate"]
    '42601'
    """
    if error is not None or result is None:
        return {
            "success": False,
            "data": None,
            "row_count": 0,
            "error": str(error),
            "error_type": error.error_type if error is not None else "QueryError",
            "sqlstate": error.sqlstate if error is not None else None,
            "execution_time_ms": None,
            "connection_id": connection_id,
        }
    return {
        "success": True,
        "data": result.data,
        "row_count": result.row_count,
        "error": None,
        "error_type": None,
        "sqlstate": None,
        "execution_time_ms": result.duration * 1000.0,
        "connection_id": connection_id,
    }
