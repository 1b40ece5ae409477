"""`Node`: the base class every runtime node derives from, and the node-type registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from kailash_nodes.errors import WorkflowValidationError

__all__ = ["Node", "NodeRegistry", "node_type", "register_node_type"]


class NodeRegistry(Protocol):
    """What a node may ask of the runtime it is registered with (`LocalRuntime` is one)."""

    def get_node(self, name: str) -> Node:
        """Return the node registered as ``name``; raise UnknownNode if there is none."""
        ...


class Node:
    """Base class for nodes: one ``process(inputs) -> dict`` entry point and a lifecycle.

    Subclasses override one of, from most to least direct: ``process`` (a mapping in),
    ``async_run(**kwargs)`` (the original's ``AsyncNode`` idiom) or a sync ``run(**kwargs)``.
    A sync ``run`` executes on the event loop, so it must not block.
    """

    def __init__(self, name: str | None = None, **config: Any) -> None:
        self.name: str = type(self).__name__ if name is None else name
        self.config: dict[str, Any] = self.redact_config(config)
        self.runtime: NodeRegistry | None = None

    @classmethod
    def redact_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``config`` as it may be shown: secrets replaced by redacted holders.

        ``Node.config`` and a workflow's ``params`` keep this form (the node itself was
        built from the real values). The default returns a copy unchanged; a node with
        secret options (a pool's password) overrides it.
        """
        return dict(config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the node on ``inputs`` and return its output dict (awaits ``async_run``)."""
        return await self.async_run(**inputs)

    async def async_run(self, **kwargs: Any) -> dict[str, Any]:
        """Run the node from keyword inputs; by default call the sync ``run``."""
        return self.run(**kwargs)

    def run(self, **kwargs: Any) -> dict[str, Any]:
        """Run the node synchronously; raise NotImplementedError unless overridden."""
        raise NotImplementedError(
            f"{type(self).__name__} must override process(), async_run() or run()"
        )

    async def prewarm(self, inputs: Mapping[str, Any]) -> int:
        """Prepare what ``process`` will need, given the inputs known before it runs.

        ``LocalRuntime`` calls it while the workflow level before this node's runs, with
        the node's static inputs overlaid by the run's parameters (inputs fed by
        connections are not known yet and are left out). Return how many things were
        warmed (connections opened, statements prepared). Do not raise for a failed
        warm-up: log it at debug level and count it; the node reports the real error
        when it runs. The call may be cancelled at any await (the runtime bounds it), so
        give back whatever it holds on the way out. The default does nothing and
        returns 0.
        """
        return 0

    def abort_run(self, run_id: str) -> None:
        """Give back what a failed or cancelled run holds and nobody can reach any more
        (its results never reached the caller): ``LocalRuntime`` calls it before
        ``end_run`` when a run raised or was cancelled. It must not raise or block; the
        default does nothing."""

    def end_run(self, run_id: str) -> None:
        """Forget per-run state: ``LocalRuntime`` calls it when a workflow run finishes
        (completed, failed or cancelled), on every node registered with it and every node
        of the workflow, each once. It must not raise or block; the default does nothing.
        """

    def get_parameters(self) -> dict[str, Any]:
        """Describe the inputs this node accepts (name -> description); empty by default."""
        return {}

    async def initialize(self) -> Any:
        """Acquire the node's resources; called by ``LocalRuntime.start``. No-op by default."""
        return None

    async def close(self) -> Any:
        """Release the node's resources; called by ``LocalRuntime.stop``. No-op by default."""
        return None


_NodeT = TypeVar("_NodeT", bound=type[Node])
_NODE_TYPES: dict[str, type[Node]] = {}


def register_node_type(cls: _NodeT) -> _NodeT:
    """Register ``cls`` under its class name for ``add_node("TypeName", ...)``; return it.

    Usable as a class decorator. Raises WorkflowValidationError if a different class
    (another module or qualified name) already holds the name; re-registering the same
    class, e.g. after a module reload, replaces the entry.
    """
    name = cls.__name__
    known = _NODE_TYPES.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise WorkflowValidationError(
            f"node type {name!r} is already registered by {known.__module__}.{known.__qualname__}"
        )
    _NODE_TYPES[name] = cls
    return cls


def node_type(name: str) -> type[Node]:
    """Return the node class registered as ``name``.

    Raises WorkflowValidationError naming the known types if there is none.
    """
    try:
        return _NODE_TYPES[name]
    except KeyError:
        raise WorkflowValidationError(
            f"unknown node type {name!r}; known types: {sorted(_NODE_TYPES)}"
        ) from None
