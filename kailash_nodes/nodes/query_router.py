"""`QueryRouterNode`: the Kailash node surface over the router engine.

``await router.process({"query", "parameters", "session_id"?})`` acquires, executes and
releases; the caller never handles connections. The pools are found by name in the runtime
the node is registered with (or given with ``set_connection_pool``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from kailash_nodes.config import RouterSettings
from kailash_nodes.errors import ConfigError, ConnectionFailed, ParameterError
from kailash_nodes.nodes.operations import (
    Handler,
    check_inputs,
    find_handler,
    optional_str,
    query_and_params,
    show,
)
from kailash_nodes.nodes.results import execute_result
from kailash_nodes.nodes.workflow_connection_pool import WorkflowConnectionPool
from kailash_nodes.router import QueryRouter, Routed, RouterOptions
from kailash_nodes.runtime import Node, register_node_type

__all__ = ["QueryRouterNode"]

logger = logging.getLogger("kailash_nodes.nodes")


@register_node_type
class QueryRouterNode(Node):
    """Route queries over a primary pool and optional read-replica pools.

    Options (keyword-only, validated at once): ``connection_pool`` (required: the name of
    the primary pool node), ``enable_read_write_split``, ``cache_size`` (prepared
    statements kept per connection), ``pattern_learning``, ``health_threshold``,
    ``read_replicas`` (names of replica pool nodes), ``replica_lag_threshold`` (s), and
    ``reads_on_primary``, ``session_timeout``, ``consistency_timeout``,
    ``replica_check_interval``, ``prepare_statements``, ``prepare_predicted`` (see
    docs/router.md).
    """

    def __init__(self, **options: Any) -> None:
        settings = RouterSettings.from_options(options)
        super().__init__(**{**options, "name": settings.name})
        self.settings = settings
        self.connection_pool = settings.connection_pool
        self.read_replicas = list(settings.read_replicas)
        self.health_threshold = settings.health_threshold
        self._learning: bool = settings.pattern_learning
        self.options = RouterOptions(**settings.engine_options())
        self._split = self.options.enable_read_write_split
        self._pool: WorkflowConnectionPool | None = None
        self.engine: QueryRouter | None = None
        self._starting: asyncio.Task[QueryRouter] | None = None
        self._prewarm_start_errors = 0
        self._handlers: dict[str, Handler] = {
            "route": self._op_route,
            "end_session": self._op_end_session,
            "get_metrics": self._op_metrics,
            "invalidate_cache": self._op_invalidate,
        }

    # ------------------------------------------------------------------ live toggles

    @property
    def enable_read_write_split(self) -> bool:
        """Return whether plain reads may go to replicas (settable live)."""
        return self._split

    @enable_read_write_split.setter
    def enable_read_write_split(self, value: bool) -> None:
        self._split = RouterSettings.check("enable_read_write_split", value)
        if self.engine is not None:
            self.engine.split = self._split

    @property
    def pattern_learning(self) -> bool:
        """Return whether predicted statements are prepared ahead (settable live).

        Needs the pool's ``enable_query_routing`` (it records what runs; without it there
        is nothing to predict from) and the ``prepare_predicted`` option (off by default).
        """
        return self._learning

    @pattern_learning.setter
    def pattern_learning(self, value: bool) -> None:
        self._learning = RouterSettings.check("pattern_learning", value)
        self._wire_learning()

    def _wire_learning(self) -> None:
        if self.engine is None:
            return
        pool = self._find_pool(self.connection_pool)
        # Only when the pool records what runs: otherwise there is nothing to predict from,
        # and the per-query call is saved. The pool calls this again whenever its
        # enable_query_routing changes, so the two toggles work in either order.
        learner = pool.learner if self._learning and pool.enable_query_routing else None
        self.engine.use_learning(
            learner.next_query if learner is not None else None, pool.engine.observer
        )

    # ------------------------------------------------------------------ wiring

    def set_connection_pool(self, pool: WorkflowConnectionPool) -> None:
        """Use ``pool`` as the primary instead of looking it up in the runtime."""
        self._pool = pool

    def _find_pool(self, name: str) -> WorkflowConnectionPool:
        if self._pool is not None and name == self.connection_pool:
            return self._pool
        if self.runtime is None:
            raise ConfigError(
                f"router {self.name!r} is not registered with a runtime, so pool {name!r} "
                "cannot be found: runtime.register_node(...) both, or set_connection_pool()"
            )
        node = self.runtime.get_node(name)
        if not isinstance(node, WorkflowConnectionPool):
            raise ConfigError(f"node {name!r} is a {type(node).__name__}, not a pool")
        return node

    async def _engine(self) -> QueryRouter:
        if self.engine is not None:
            return self.engine
        # One start for concurrent first callers (a node and the runtime's pre-warm of it).
        # Shielded: a caller cancelled meanwhile must not cut a pool's opening short (its
        # half-opened connections would leak); the start finishes and the next call uses it.
        loop = asyncio.get_running_loop()
        task = self._starting
        if (
            task is None
            or task.get_loop() is not loop
            or (task.done() and (task.cancelled() or task.exception() is not None))
        ):
            task = self._starting = loop.create_task(
                self._start_engine(), name=f"{self.name}:start"
            )
            task.add_done_callback(_retrieve)  # a failure is raised to the callers, not lost
        return await asyncio.shield(task)

    async def _start_engine(self) -> QueryRouter:
        if self.engine is None:
            await self._find_pool(self.connection_pool).initialize()  # opens it, starts sizing
            for name in self.read_replicas:  # a replica that is down now joins when it is up
                try:
                    await self._find_pool(name).initialize()
                except ConnectionFailed as exc:
                    logger.warning("replica pool %s is not reachable yet: %s", name, exc)
            primary = self._find_pool(self.connection_pool).engine
            replicas = {n: self._find_pool(n).engine for n in self.read_replicas}
            engine = QueryRouter(primary, replicas, self.options)
            engine.split = self._split
            await engine.start()
            self.engine = engine
            pool = self._find_pool(self.connection_pool)
            if self._wire_learning not in pool.learning_listeners:
                pool.learning_listeners.append(self._wire_learning)
            self._wire_learning()
        return self.engine

    async def initialize(self) -> dict[str, Any]:
        """Find the pools, open them, start replica monitoring and the session reaper."""
        await self._engine()
        return {"status": "initialized"}

    async def close(self) -> dict[str, Any]:
        """Stop the router's tasks and return every session's connection."""
        if self.engine is not None:
            await self.engine.close()
        return {"status": "closed"}

    # ------------------------------------------------------------------ process()

    async def process(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Route one query: ``{"query", "parameters"?, "session_id"?}`` (see docs/router.md).

        Also ``{"operation": "end_session" | "get_metrics" | "invalidate_cache", ...}``.
        Raises ParameterError when ``inputs`` is not a mapping or an input has the wrong
        type, UnknownOperation for an operation the router does not have.
        """
        engine = self.engine
        if engine is not None and type(inputs) is dict and "operation" not in inputs:
            # A route (nearly every call), run here rather than in _op_route: every frame
            # in the await chain is resumed once more when the statement's answer arrives
            query, params = inputs.get("query"), inputs.get("parameters")
            if type(query) is str and "params" not in inputs and "session_id" not in inputs:
                return _route_result(await engine.route(query, params, None))
        op = check_inputs(inputs, self.name).get("operation", "route")
        return await find_handler(self._handlers, op)(inputs)

    async def async_run(self, **inputs: Any) -> dict[str, Any]:
        """Route one query from keyword inputs (the workflow-runtime entry point)."""
        return await self.process(inputs)

    async def prewarm(self, inputs: Mapping[str, Any]) -> int:
        """Prepare the node's coming statement ahead (called by the runtime); return 0 or 1.

        With a string ``query`` among the known inputs of a ``route``, prepares it on the
        connection its run will check out (``QueryRouter.prewarm``), starting the router
        first if needed. Failures are logged at debug level and counted in the ``prewarm``
        metrics, never raised.
        """
        query = inputs.get("query")
        session_id = inputs.get("session_id")
        if inputs.get("operation", "route") != "route" or not isinstance(query, str):
            return 0
        if session_id is not None and not isinstance(session_id, str):
            return 0  # the node raises ParameterError for it when it runs
        try:
            engine = await self._engine()
        except Exception as exc:  # the node raises it when it runs
            self._prewarm_start_errors += 1
            logger.debug("pre-warming router %s: the router did not start: %s", self.name, exc)
            return 0
        return int(await engine.prewarm(query, session_id))

    async def _op_route(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        query, params = inputs.get("query"), inputs.get("parameters")
        if type(query) is not str or "params" in inputs:  # checked, or the other key
            query, params = query_and_params(inputs, "route")
        session_id = inputs.get("session_id")
        if session_id is not None:
            session_id = optional_str(inputs, "session_id", "route")
        engine = self.engine
        if engine is None:  # first use: start it (the pools open)
            engine = await self._engine()
        return _route_result(await engine.route(query, params, session_id))

    async def _op_end_session(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        sid = optional_str(inputs, "session_id", "end_session")
        if sid is None:
            raise ParameterError("end_session needs 'session_id' as a non-empty string (got None)")
        ended = await (await self._engine()).end_session(sid)
        self._find_pool(self.connection_pool).end_run(sid)  # its statements: one finished run
        return {"session_id": sid, "ended": ended}

    async def _op_metrics(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return await self.get_metrics()

    async def _op_invalidate(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return await self.invalidate_cache(inputs.get("tables"))

    async def invalidate_cache(self, tables: list[str] | str | None = None) -> dict[str, Any]:
        """Drop prepared statements using ``tables`` (all of them when None).

        ``tables`` is None, a table name, or a list or tuple of names; anything else raises
        ParameterError naming the value.
        """
        if isinstance(tables, str):
            tables = [tables]
        if tables is not None and (
            not isinstance(tables, list | tuple)
            or not all(isinstance(t, str) and t for t in tables)
        ):
            raise ParameterError(
                "invalidate_cache needs 'tables' as None, a table name or a list of table names "
                f"(got {show(tables)})"
            )
        engine = await self._engine()
        dropped = engine.invalidate(
            None if tables is None else frozenset(t.lower() for t in tables)
        )
        return {"invalidated": True, "tables": tables, "statements_dropped": dropped}

    async def get_metrics(self) -> dict[str, Any]:
        """Return router metrics, statement cache stats, sessions and replicas."""
        engine = await self._engine()
        report = engine.metrics_report()
        report["prewarm"]["router_start_errors"] = self._prewarm_start_errors
        return report


def _retrieve(task: asyncio.Task[QueryRouter]) -> None:
    """Mark a failed start's exception retrieved (its callers got it through the shield)."""
    if not task.cancelled():
        task.exception()


def _route_result(routed: Routed) -> dict[str, Any]:
    """Return the result dict of a routed statement: execute's keys and routing_metadata."""
    result = execute_result(routed.connection_id, routed.result, routed.error)
    result["routing_metadata"] = routed.metadata
    return result
