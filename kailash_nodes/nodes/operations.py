"""The process() dispatch both nodes share: operation name -> handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kailash_nodes.errors import ParameterError, UnknownOperation

__all__ = ["Handler", "find_handler", "query_and_params"]

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


def find_handler(handlers: Mapping[str, Handler], op: Any) -> Handler:
    """Return the handler of operation ``op``; raise UnknownOperation naming the known ones."""
    try:
        return handlers[op]
    except (KeyError, TypeError):  # unknown, or not even hashable
        raise UnknownOperation(
            f"Unknown operation: {op!r}; known operations: {sorted(handlers)}"
        ) from None


def query_and_params(inputs: Mapping[str, Any], op: str) -> tuple[str, Any]:
    """Return ``inputs``' query and its parameters (``params`` or ``parameters``, not both).

    Raises ParameterError when the query is not a string or both parameter keys are given.
    """
    query = inputs.get("query")
    if not isinstance(query, str):
        raise ParameterError(f"{op} needs 'query' as a string (got {type(query).__name__})")
    params, parameters = inputs.get("params"), inputs.get("parameters")
    if params is not None and parameters is not None:
        raise ParameterError("give either 'params' or 'parameters', not both")
    return query, parameters if params is None else params
