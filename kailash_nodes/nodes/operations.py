"""The process() dispatch both nodes share: operation name -> handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kailash_nodes.errors import UnknownOperation

__all__ = ["Handler", "find_handler"]

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


def find_handler(handlers: Mapping[str, Handler], op: Any) -> Handler:
    """Return the handler of operation ``op``; raise UnknownOperation naming the known ones."""
    try:
        return handlers[op]
    except (KeyError, TypeError):  # unknown, or not even hashable
        raise UnknownOperation(
            f"Unknown operation: {op!r}; known operations: {sorted(handlers)}"
        ) from None
