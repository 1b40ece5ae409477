"""`LocalRuntime`: holds registered nodes, runs their lifecycle, and executes workflows."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import Any

from kailash_nodes.config import RuntimeSettings
from kailash_nodes.context import CausalContext, causal_var, current_run_id, run_id_var
from kailash_nodes.errors import (
    NodeExecutionError,
    UnknownNode,
    WorkflowValidationError,
)
from kailash_nodes.runtime.node import Node
from kailash_nodes.runtime.prewarm import LevelLookAhead, PrewarmStats, overrides_prewarm
from kailash_nodes.runtime.workflow import Workflow

__all__ = ["LocalRuntime", "Results", "current_run_id"]

logger = logging.getLogger("kailash_nodes.runtime")

Results = dict[str, dict[str, Any]]
_run_id = run_id_var


class LocalRuntime:
    """Register nodes by name, open and close them together, and execute workflows.

    ``async with runtime:`` (or ``start``/``stop``) initializes the registered nodes in
    registration order and closes them in reverse.

    ``prewarm`` (default False, settable live): while a workflow level runs, call
    ``prewarm(known_inputs)`` of the next level's nodes (look ahead); off by default
    because it measured slower end to end (docs/runtime.md). ``prewarm_timeout``
    (seconds, default 0.05) bounds how long the next level waits for hooks still running
    before they are cancelled. Raises ConfigError for a bad value.
    """

    def __init__(self, *, prewarm: bool = False, prewarm_timeout: float = 0.05) -> None:
        settings = RuntimeSettings.from_options(
            {"prewarm": prewarm, "prewarm_timeout": prewarm_timeout}
        )
        self._prewarm: bool = settings.prewarm
        self._prewarm_timeout: float = settings.prewarm_timeout
        self.prewarm_stats = PrewarmStats()
        self._nodes: dict[str, Node] = {}
        self._started: list[Node] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_nodes: list[Node] = []  # nodes that ran on the private loop

    # ------------------------------------------------------------------ registration

    def register_node(self, name: str, node: Node) -> None:
        """Register ``node`` as ``name`` and set ``node.runtime`` to this runtime.

        Registering the same node under the same name again is a no-op. Raises
        WorkflowValidationError if the name is not a non-empty string, ``node`` is not a
        Node, the name holds another node or the node belongs to another runtime.
        """
        if not isinstance(name, str) or not name:
            raise WorkflowValidationError(f"node name must be a non-empty string (got {name!r})")
        if not isinstance(node, Node):
            raise WorkflowValidationError(
                f"register_node needs a Node for {name!r} (got {type(node).__name__})"
            )
        known = self._nodes.get(name)
        if known is node:
            return
        if known is not None:
            raise WorkflowValidationError(f"node name {name!r} is already registered to {known!r}")
        if node.runtime is not None and node.runtime is not self:
            raise WorkflowValidationError(f"{node!r} is already registered with another runtime")
        node.runtime = self
        self._nodes[name] = node

    def get_node(self, name: str) -> Node:
        """Return the node registered as ``name``; raise UnknownNode listing the names."""
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNode(
                f"no node registered as {name!r}; registered nodes: {list(self._nodes)}"
            ) from None

    @property
    def nodes(self) -> Mapping[str, Node]:
        """Registered nodes by name (a read-only view)."""
        return MappingProxyType(self._nodes)

    @property
    def prewarm(self) -> bool:
        """Return whether the next level's nodes are pre-warmed (settable live)."""
        return self._prewarm

    @prewarm.setter
    def prewarm(self, value: bool) -> None:
        self._prewarm = RuntimeSettings.check("prewarm", value)

    @property
    def prewarm_timeout(self) -> float:
        """Return the seconds a level waits for its pre-warms still running (settable)."""
        return self._prewarm_timeout

    @prewarm_timeout.setter
    def prewarm_timeout(self, value: float) -> None:
        self._prewarm_timeout = RuntimeSettings.check("prewarm_timeout", value)

    def get_prewarm_stats(self) -> dict[str, float]:
        """Return the pre-warm counters since this runtime was made (docs/runtime.md)."""
        return self.prewarm_stats.as_dict()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Await ``initialize()`` of each registered node in registration order.

        Calling it again initializes only nodes registered since; a node registered under
        two names is initialized once. If one fails, the nodes already initialized are
        closed in reverse order and the failure is raised.
        """
        for node in list(self._nodes.values()):
            if node in self._started:
                continue
            try:
                await node.initialize()
            except BaseException:
                try:  # the initialize failure is the one to report; log a close failure
                    await self.stop()
                except Exception:
                    logger.exception("closing nodes after a failed start failed as well")
                raise
            self._started.append(node)

    async def stop(self) -> None:
        """Await ``close()`` of each node ``start`` initialized, in reverse order.

        Every node is closed even if one fails; the first failure is raised afterwards
        and later ones are logged.
        """
        first: Exception | None = None
        while self._started:
            node = self._started.pop()
            try:
                await node.close()
            except Exception as exc:
                if first is None:
                    first = exc
                else:
                    logger.error("closing %r failed as well", node, exc_info=exc)
        if first is not None:
            raise first

    async def __aenter__(self) -> LocalRuntime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ workflows

    def execute(
        self, workflow: Workflow, parameters: Mapping[str, Mapping[str, Any]] | None = None
    ) -> tuple[Results, str]:
        """Run ``workflow`` to completion on this runtime's private event loop.

        The loop persists across calls (so nodes keep their connections) until
        ``close()``. Raises RuntimeError when called from a running event loop (await
        ``execute_async`` there), plus whatever ``execute_async`` raises.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "LocalRuntime.execute() cannot run inside a running event loop; "
                "use 'await runtime.execute_async(workflow, parameters)' instead"
            )
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        for node in workflow.nodes.values():
            if node not in self._loop_nodes:
                self._loop_nodes.append(node)
        return self._loop.run_until_complete(self.execute_async(workflow, parameters))

    def close(self) -> None:
        """Close what ``execute()`` used, then its private event loop.

        The nodes that ran there and the registered nodes are closed (in reverse order)
        on that loop first, so their connections and threads do not outlive it. A later
        ``execute()`` opens a new loop. Safe to call more than once.
        """
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        nodes = [n for n in (*self._nodes.values(), *self._loop_nodes) if n not in self._started]
        self._loop_nodes = []
        for node in reversed(list(dict.fromkeys(nodes))):
            try:
                loop.run_until_complete(node.close())
            except Exception:
                logger.exception("closing %r failed", node)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def execute_async(
        self, workflow: Workflow, parameters: Mapping[str, Mapping[str, Any]] | None = None
    ) -> tuple[Results, str]:
        """Run ``workflow`` and return ``(results, run_id)``; results map node id -> output.

        A node's inputs are its static params from ``add_node``, overlaid by
        ``parameters[node_id]``, overlaid by its connected outputs. Levels run in order;
        the nodes of one level run concurrently. While the run executes,
        ``current_run_id()`` returns ``run_id``. A node found with no runtime is bound to
        this one. With ``prewarm`` on, the next level's ``prewarm`` hooks run alongside
        each level (bounded by ``prewarm_timeout``; their failures never fail the run).
        Errors:

        - WorkflowValidationError for ``parameters`` that is not a mapping of node id ->
          mapping, a key that is not a node id, or an upstream result missing a connected
          output key.
        - A node's NodeExecutionError (or subclass, e.g. PoolTimeout) propagates as is,
          with a note naming the node and run, so callers can catch the typed error.
        - Any other exception becomes ``NodeExecutionError("node 'id' failed: ...")``
          with the original as ``__cause__``. The rest of a failed level is cancelled.
        """
        params = _check_parameters(parameters)
        unknown = [k for k in params if k not in workflow.nodes]
        if unknown:
            raise WorkflowValidationError(
                f"parameters name unknown nodes {unknown}; workflow nodes: {list(workflow.nodes)}"
            )
        run_id = uuid.uuid4().hex
        token = _run_id.set(run_id)
        causal = _Causal(workflow, run_id, causal_var.get())
        warming: LevelLookAhead | None = None
        failed = True  # until the last level returns: a failure or a cancellation
        try:
            results: Results = {}
            order = workflow.order
            for index, level in enumerate(order):
                if warming is not None:  # this level's hooks: done, or cut off at the bound
                    await warming.settle(self._prewarm_timeout)
                inputs = [self._inputs(workflow, params, n, results) for n in level]
                if index + 1 < len(order):
                    warming = self._start_prewarm(workflow, params, order[index + 1], run_id)
                outputs = await self._run_level(workflow, level, inputs, causal)
                results.update(zip(level, outputs, strict=True))
            failed = False
        finally:
            if warming is not None:  # the run failed or was cancelled: stop them, await them
                await warming.cancel()
            _run_id.reset(token)
            causal.hand_back()
            self._end_run(workflow, run_id, failed)
        return results, run_id

    def _end_run(self, workflow: Workflow, run_id: str, failed: bool) -> None:
        """Tell every registered node and every node of ``workflow`` that the run ended
        (``abort_run`` first, when it failed or was cancelled)."""
        for node in dict.fromkeys((*self._nodes.values(), *workflow.nodes.values())):
            try:
                if failed:
                    node.abort_run(run_id)
                node.end_run(run_id)
            except Exception:  # a hook must not fail the run that just finished
                logger.exception("end_run of %r failed for run %s", node, run_id)

    def _start_prewarm(
        self,
        workflow: Workflow,
        params: Mapping[str, Mapping[str, Any]],
        level: tuple[str, ...],
        run_id: str,
    ) -> LevelLookAhead | None:
        """Start the pre-warm hooks of ``level`` with the inputs known before it runs."""
        if not self._prewarm:
            return None
        warming = LevelLookAhead(self.prewarm_stats)
        for node_id in level:
            node = workflow.nodes[node_id]
            if not overrides_prewarm(node):
                continue  # the base hook does nothing: no task for it
            if node.runtime is None:
                node.runtime = self
            connected = {c.to_input for c in workflow.connections if c.to_node == node_id}
            known = {**workflow.params[node_id], **params.get(node_id, {})}
            inputs = {k: v for k, v in known.items() if k not in connected}
            warming.start(node_id, node, inputs, run_id)
        return warming if len(warming) else None

    @staticmethod
    def _inputs(
        workflow: Workflow, params: Mapping[str, Mapping[str, Any]], node_id: str, results: Results
    ) -> dict[str, Any]:
        inputs = {**workflow.params[node_id], **params.get(node_id, {})}
        for c in workflow.connections:
            if c.to_node != node_id:
                continue
            upstream = results[c.from_node]
            if c.from_output not in upstream:
                raise WorkflowValidationError(
                    f"node {c.from_node!r} has no output {c.from_output!r} for input "
                    f"{c.to_input!r} of node {node_id!r}; its outputs: {sorted(upstream)}"
                )
            inputs[c.to_input] = upstream[c.from_output]
        return inputs

    async def _run_level(
        self,
        workflow: Workflow,
        level: tuple[str, ...],
        inputs: list[dict[str, Any]],
        causal: _Causal,
    ) -> list[dict[str, Any]]:
        if len(level) == 1:
            return [await self._run_node(workflow, level[0], inputs[0], causal)]
        run_id = causal.run_id
        tasks = [
            asyncio.create_task(self._run_node(workflow, n, i, causal), name=f"node {n} {run_id}")
            for n, i in zip(level, inputs, strict=True)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # On failure (or our own cancellation) stop the siblings and wait for them, so
            # no node is still running when the run reports its outcome.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:  # the first failure in level order wins, deterministically
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                raise exc
        return [task.result() for task in tasks]

    async def _run_node(
        self, workflow: Workflow, node_id: str, inputs: dict[str, Any], causal: _Causal
    ) -> dict[str, Any]:
        node = workflow.nodes[node_id]
        if node.runtime is None:
            node.runtime = self
        reset = causal_var.set(causal.start(node_id))  # this node's, for what it awaits
        try:
            result = await node.process(inputs)
        except NodeExecutionError as exc:
            exc.add_note(f"raised by workflow node {node_id!r} in run {causal.run_id}")
            raise
        except Exception as exc:
            raise NodeExecutionError(f"node {node_id!r} failed: {exc}") from exc
        finally:
            causal_var.reset(reset)
        if not isinstance(result, dict):
            raise NodeExecutionError(
                f"node {node_id!r} returned {type(result).__name__}, expected a dict"
            )
        return result


def _check_parameters(parameters: Any) -> dict[str, Mapping[str, Any]]:
    """Return ``parameters`` as a dict; raise WorkflowValidationError unless it maps node
    ids to mappings of inputs (None means no parameters)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping) or not all(
        isinstance(v, Mapping) for v in parameters.values()
    ):
        raise WorkflowValidationError(
            "parameters must map node ids to mappings of inputs, e.g. {'db': {'operation': "
            f"'acquire'}} (got {type(parameters).__name__})"
        )
    return dict(parameters)


class _Causal:
    """The causal contexts of one run's node executions (docs/runtime.md#causal-contexts).

    A node's context starts as the merge of the contexts of the nodes connected into it
    (and of ``outer``, the context of the node that started this run, if any); the router
    raises it after the node's writes. When the run ends, ``outer`` takes in every node's,
    so the nodes downstream of the one that ran this workflow see its writes.
    """

    __slots__ = ("contexts", "outer", "run_id", "upstream")

    def __init__(self, workflow: Workflow, run_id: str, outer: CausalContext | None) -> None:
        self.run_id = run_id
        self.outer = outer
        self.contexts: dict[str, CausalContext] = {}
        self.upstream: dict[str, list[str]] = {}
        for c in workflow.connections:
            self.upstream.setdefault(c.to_node, []).append(c.from_node)

    def start(self, node_id: str) -> CausalContext:
        """Return a new context for ``node_id``, covering its upstream nodes' writes."""
        ctx = CausalContext(
            self.run_id, tuple(self.contexts[n] for n in self.upstream.get(node_id, ()))
        )
        if self.outer is not None:
            ctx.merge(self.outer)
        self.contexts[node_id] = ctx
        return ctx

    def hand_back(self) -> None:
        """Let the context of the node that started this run cover every write of it."""
        if self.outer is not None:
            for ctx in self.contexts.values():
                self.outer.merge(ctx)
