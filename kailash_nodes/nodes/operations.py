"""The process() dispatch both nodes share: operation name -> handler, and input checks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from kailash_nodes.config import short_repr
from kailash_nodes.errors import ParameterError, UnknownOperation

__all__ = ["Handler", "check_inputs", "find_handler", "optional_str", "query_and_params", "show"]

Handler = Callable[[Mapping[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def show(value: Any) -> str:
    """Return a short ``repr`` of ``value`` and its type, for an error message.

    >>> show(None), show("x" * 100)[-12:]
    ('None (NoneType)', "xxxxx' (str)")
    """
    return f"{short_repr(value)} ({type(value).__name__})"


def check_inputs(inputs: Any, node: str) -> Mapping[str, Any]:
    """Return ``inputs`` if it is a mapping; raise ParameterError naming what it was.

    >>> check_inputs("SELECT 1", "router")
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ParameterError: router.process() takes a mapping of inputs such as {'operation': ...} (got 'SELECT 1' (str))
    """  # noqa: E501
    if not isinstance(inputs, Mapping):
        raise ParameterError(
            f"{node}.process() takes a mapping of inputs such as {{'operation': ...}} "
            f"(got {show(inputs)})"
        )
    return inputs


def find_handler(handlers: Mapping[str, Handler], op: Any) -> Handler:
    """Return the handler of operation ``op``; raise UnknownOperation naming the known ones."""
    try:
        return handlers[op]
    except (KeyError, TypeError):  # unknown, or not even hashable
        raise UnknownOperation(
            f"Unknown operation: {show(op)}; known operations: {sorted(handlers)}"
        ) from None


def optional_str(inputs: Mapping[str, Any], key: str, op: str) -> str | None:
    """Return ``inputs[key]`` if it is a non-empty string or absent/None.

    Raises ParameterError naming the input, the operation and the value's type.
    """
    value = inputs.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ParameterError(f"{op} needs '{key}' as a non-empty string (got {show(value)})")
    return value


def query_and_params(inputs: Mapping[str, Any], op: str) -> tuple[str, Any]:
    """Return ``inputs``' query and its parameters (``params`` or ``parameters``, not both).

    Raises ParameterError when the query is not a string or both parameter keys are given.
    """
    query = inputs.get("query")
    if not isinstance(query, str):
        raise ParameterError(f"{op} needs 'query' as a string (got {show(query)})")
    params, parameters = inputs.get("params"), inputs.get("parameters")
    if params is not None and parameters is not None:
        raise ParameterError("give either 'params' or 'parameters', not both")
    return query, parameters if params is None else params
