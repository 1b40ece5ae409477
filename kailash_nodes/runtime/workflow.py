"""Workflows in the original's idiom: `WorkflowBuilder` -> an immutable `Workflow`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from kailash_nodes.errors import WorkflowValidationError
from kailash_nodes.runtime.node import Node, node_type

__all__ = ["Connection", "Workflow", "WorkflowBuilder", "topological_levels"]


class Connection(NamedTuple):
    """One edge: ``from_node``'s output ``from_output`` feeds ``to_node``'s ``to_input``."""

    from_node: str
    from_output: str
    to_node: str
    to_input: str


@dataclass(frozen=True)
class Workflow:
    """A validated, immutable workflow; run it with ``LocalRuntime.execute[_async]``.

    ``nodes`` maps node id -> node, ``params`` node id -> the static inputs given to
    ``add_node``, and ``order`` holds the topological levels (nodes within a level do not
    depend on each other).
    """

    nodes: Mapping[str, Node]
    params: Mapping[str, Mapping[str, Any]]
    connections: tuple[Connection, ...]
    order: tuple[tuple[str, ...], ...]


class WorkflowBuilder:
    """Collect nodes and connections, then ``build()`` a validated `Workflow`."""

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self._params: dict[str, dict[str, Any]] = {}
        self._connections: list[Connection] = []

    def add_node(
        self,
        first: str,
        second: str | type[Node] | Node,
        params: Mapping[str, Any] | None = None,
        /,
        **kwargs: Any,
    ) -> str:
        """Add a node and return its id. Three forms are accepted::

            add_node("NodeType", "node_id", {"param": value})   # registered type name
            add_node("node_id", NodeClass, param=value)         # a Node subclass
            add_node("node_id", node)                           # an instance, e.g. one
                                                                # registered in a runtime

        ``params`` and ``kwargs`` become the node's static inputs; for the first two forms
        they are also the new instance's config (created with ``name=node_id``). Secret
        values (a pool's password or DSN) are kept redacted (`Node.redact_config`). Raises
        WorkflowValidationError for a duplicate id or an unknown type name.
        """
        if params is not None and not isinstance(params, Mapping):
            raise WorkflowValidationError(
                f"add_node params must be a mapping of inputs (got {type(params).__name__})"
            )
        if not isinstance(first, str) or not first:
            raise WorkflowValidationError(
                f"add_node needs a node id or type name string first (got {first!r})"
            )
        static = {**(params or {}), **kwargs}
        if isinstance(second, str):
            node_id, node = second, node_type(first)(name=second, **static)
        elif isinstance(second, Node):
            node_id, node = first, second
        elif isinstance(second, type) and issubclass(second, Node):
            node_id, node = first, second(name=first, **static)
        else:
            raise WorkflowValidationError(
                f"add_node needs a type name, a Node subclass or a Node (got {second!r})"
            )
        if node_id in self._nodes:
            raise WorkflowValidationError(f"duplicate node id {node_id!r}")
        self._nodes[node_id] = node
        self._params[node_id] = type(node).redact_config(static)  # no password kept here
        return node_id

    def add_connection(self, from_node: str, from_output: str, to_node: str, to_input: str) -> None:
        """Feed ``from_node``'s output ``from_output`` into ``to_node``'s ``to_input``.

        Raises WorkflowValidationError naming the available nodes if either node is
        unknown, or if ``to_input`` is already fed by another connection.
        """
        for arg in (from_node, from_output, to_node, to_input):
            if not isinstance(arg, str):
                raise WorkflowValidationError(
                    f"add_connection takes four strings (got {arg!r} of type {type(arg).__name__})"
                )
        for node_id in (from_node, to_node):
            if node_id not in self._nodes:
                raise WorkflowValidationError(
                    f"unknown node {node_id!r} in add_connection; "
                    f"available nodes: {list(self._nodes)}"
                )
        for c in self._connections:
            if (c.to_node, c.to_input) == (to_node, to_input):
                raise WorkflowValidationError(
                    f"input {to_input!r} of node {to_node!r} is already fed by "
                    f"{c.from_node!r}.{c.from_output!r}"
                )
        self._connections.append(Connection(from_node, from_output, to_node, to_input))

    def build(self) -> Workflow:
        """Validate and return an immutable `Workflow`.

        Raises WorkflowValidationError naming the cycle if the connections form one.
        """
        edges = [(c.from_node, c.to_node) for c in self._connections]
        return Workflow(
            nodes=MappingProxyType(dict(self._nodes)),
            params=MappingProxyType(
                {k: MappingProxyType(dict(v)) for k, v in self._params.items()}
            ),
            connections=tuple(self._connections),
            order=topological_levels(self._nodes, edges),
        )


def topological_levels(
    nodes: Iterable[str], edges: Iterable[tuple[str, str]]
) -> tuple[tuple[str, ...], ...]:
    """Group ``nodes`` into levels so that every edge ``(a, b)`` puts ``a`` in an earlier level.

    Within a level, nodes keep their order in ``nodes``. Raises WorkflowValidationError
    naming a cycle if there is one.

    >>> topological_levels("abcd", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    (('a',), ('b', 'c'), ('d',))
    >>> topological_levels("ab", [("a", "b"), ("b", "a")])
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.WorkflowValidationError: workflow has a cycle: a -> b -> a
    """
    preds: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        preds[b].add(a)
    levels: list[tuple[str, ...]] = []
    done: set[str] = set()
    while len(done) < len(preds):
        level = tuple(n for n, p in preds.items() if n not in done and p <= done)
        if not level:
            raise WorkflowValidationError(f"workflow has a cycle: {_find_cycle(preds, done)}")
        levels.append(level)
        done.update(level)
    return tuple(levels)


def _find_cycle(preds: Mapping[str, set[str]], done: set[str]) -> str:
    # Every node left has a predecessor left, so walking predecessors must revisit one.
    path = [next(n for n in preds if n not in done)]
    while path.count(path[-1]) == 1:
        path.append(min(preds[path[-1]] - done))
    cycle = path[path.index(path[-1]) :]
    return " -> ".join(reversed(cycle))
