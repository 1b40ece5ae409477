"""`WorkflowConnectionPool`: the Kailash node surface over the pool engine.

A thin adapter: ``process({"operation": ...})`` dicts become engine calls and engine
results become the dict shapes Kailash users know (see docs/pool.md). No pool logic here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from kailash_nodes.config import PoolConfig, check_bool, check_number, redact_options
from kailash_nodes.context import run_id_var
from kailash_nodes.errors import (
    ConfigError,
    ParameterError,
    PoolClosed,
    QueryError,
    UnknownConnection,
    UnknownOperation,
)
from kailash_nodes.learning import QueryLearner, QueryPatternTracker
from kailash_nodes.nodes.operations import (
    Handler,
    check_inputs,
    find_handler,
    query_and_params,
    show,
)
from kailash_nodes.nodes.results import execute_result
from kailash_nodes.pool import ConnectionPool, PooledConnection, ResultStream, open_idle
from kailash_nodes.runtime import Node, current_run_id, register_node_type

if TYPE_CHECKING:
    from kailash_nodes.sizing import AdaptivePoolController

__all__ = ["WorkflowConnectionPool"]

logger = logging.getLogger("kailash_nodes.nodes")


@register_node_type
class WorkflowConnectionPool(Node):
    """A database connection pool node (PostgreSQL, MySQL/MariaDB or SQLite).

    Options are keyword-only and validated at once (ConfigError names the bad one); the
    first ``acquire`` opens the pool if ``initialize`` was not called.
    """

    def __init__(self, **options: Any) -> None:
        self.pool_config = PoolConfig.from_options(options)
        super().__init__(**{**options, "name": self.pool_config.name})
        self.engine = ConnectionPool(self.pool_config)
        self._leases: dict[str, PooledConnection] = {}
        # connection id -> the workflow run that acquired it (abort_run gives those back)
        self._lease_runs: dict[str, str] = {}
        # Runtime pre-warms (prewarm()): connections opened ahead of an acquire, failures.
        self.prewarm_counts = {"connections_opened": 0, "errors": 0}
        self.learner: QueryLearner | None = None  # created by enable_query_routing
        # Called after enable_query_routing changes (a router re-wires its predictor and
        # its replica pools' observers), whichever of the toggles is set first.
        self.learning_listeners: list[Callable[[], None]] = []
        self.enable_query_routing = self.pool_config.enable_query_routing
        self.adaptive_controller: AdaptivePoolController | None = None
        if self.pool_config.adaptive_sizing:
            # Imported here: a pool without adaptive sizing does not load the controller.
            from kailash_nodes.sizing import AdaptivePoolController

            self.adaptive_controller = AdaptivePoolController(self.engine)
        self._handlers: dict[str, Handler] = {
            "initialize": self._op_initialize,
            "acquire": self._op_acquire,
            "execute": self._op_execute,
            "release": self._op_release,
            "stats": self._op_stats,
            "get_pool_statistics": self._op_pool_statistics,
            "get_status": self._op_status,
            "adjust_pool_size": self._op_adjust,
            "close": self._op_close,
        }

    @classmethod
    def redact_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return the options with ``password`` and ``connection_string`` in `Secret` holders."""
        return redact_options(config)

    @property
    def adaptive_sizing_enabled(self) -> bool:
        """Return whether the adaptive controller adjusts the pool (settable live)."""
        return self.adaptive_controller is not None and self.adaptive_controller.enabled

    @adaptive_sizing_enabled.setter
    def adaptive_sizing_enabled(self, value: bool) -> None:
        check_bool("adaptive_sizing_enabled", value)
        if self.adaptive_controller is not None:
            self.adaptive_controller.enabled = value
        elif value:
            raise ConfigError("adaptive sizing needs adaptive_sizing=True at construction")

    @property
    def enable_query_routing(self) -> bool:
        """Return whether executions are recorded for pattern learning (settable live)."""
        return self.engine.observer is not None

    @enable_query_routing.setter
    def enable_query_routing(self, value: bool) -> None:
        PoolConfig.check("enable_query_routing", value)
        learner = self.learner
        if value and learner is None:
            learner = self.learner = QueryLearner(
                QueryPatternTracker(persist_path=self.pool_config.pattern_store),
                dialect=self.engine.driver.dialect,
                run_id=current_run_id,
            )
        self.engine.observer = learner.observe_lease if value and learner is not None else None
        for listener in self.learning_listeners:
            listener()

    @property
    def pattern_tracker(self) -> QueryPatternTracker | None:
        """Return the tracker that learns this pool's statement sequences (None until
        ``enable_query_routing`` is first set)."""
        return self.learner.tracker if self.learner is not None else None

    def abort_run(self, run_id: str) -> None:
        """A workflow run failed or was cancelled: the connections it acquired through
        the ``acquire`` operation and did not release can never be released by anyone
        (their ids never reached the caller), so they go back to the pool now (rolled
        back and reset as on any release, in a pool-owned task)."""
        for cid in [c for c, run in self._lease_runs.items() if run == run_id]:
            del self._lease_runs[cid]
            pc = self._leases.pop(cid, None)
            if pc is not None:
                self.engine.release_soon(pc)

    def end_run(self, run_id: str) -> None:
        """A workflow run finished: its statements count as one finished run for the
        pattern tracker's run templates (see `QueryPatternTracker.end_session`). A run
        that succeeded may hand its connection ids on (its results carry them): those
        stay checked out until released."""
        for cid in [c for c, run in self._lease_runs.items() if run == run_id]:
            del self._lease_runs[cid]
        if self.learner is not None:
            self.learner.end_session(run_id)

    def predict_next_query(self, shape: str, session: str | None) -> str | None:
        """Return the query text likely to follow ``shape`` in ``session``, if confident
        (`QueryLearner.next_query`); None without ``enable_query_routing``."""
        return self.learner.next_query(shape, session) if self.learner is not None else None

    # ------------------------------------------------------------------ process() surface

    def process(self, inputs: Mapping[str, Any]) -> Coroutine[Any, Any, dict[str, Any]]:
        """Run one operation: ``await pool.process({"operation": "acquire" | ..., ...})``.

        Raises ParameterError when ``inputs`` is not a mapping or an input has the wrong
        type, UnknownOperation for an operation this node does not have; see docs/pool.md
        for each operation's inputs, result keys and errors.

        Not ``async def``, yet awaited the same way: it returns the operation's own
        coroutine, so that the answer of every statement resumes one frame less (an
        ``async def`` here would wrap each operation in a second coroutine). An error
        found here is raised when the result is awaited, as from an ``async def``.
        """
        if type(inputs) is not dict:  # a plain dict (nearly every call) needs no check
            try:
                check_inputs(inputs, self.name)
            except ParameterError as exc:
                return _raise(exc)
        op = inputs.get("operation")
        handler = self._handlers.get(op) if type(op) is str else None
        if handler is None:
            try:
                handler = find_handler(self._handlers, op)
            except UnknownOperation as exc:
                return _raise(exc)
        return handler(inputs)

    async def async_run(self, **inputs: Any) -> dict[str, Any]:
        """Run one operation from keyword inputs (the workflow-runtime entry point)."""
        return await self.process(inputs)

    async def prewarm(self, inputs: Mapping[str, Any]) -> int:
        """Make sure a connection is idle for a coming ``acquire``; return 1 if one opened.

        Called by the runtime before the node runs: when the operation is ``acquire``, the
        pool is open, nothing is idle and the pool has room, opens one connection and
        leaves it idle (``prewarm_counts["connections_opened"]``). Other operations run on
        a connection already checked out (or none), so there is nothing to warm. A pool
        not open yet is left to its first operation. A failure is logged at debug level
        and counted (``prewarm_counts["errors"]``), never raised.
        """
        if inputs.get("operation") != "acquire":
            return 0
        try:
            opened = await open_idle(self.engine, self.pool_config.timeout)
        except Exception as exc:  # the operation reports it when it runs
            self.prewarm_counts["errors"] += 1
            logger.debug("pre-warming pool %s failed: %s", self.name, exc)
            return 0
        self.prewarm_counts["connections_opened"] += opened
        return int(opened)

    async def _op_initialize(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return await self.initialize()

    async def _op_acquire(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if not self.engine.opened:
            await self.initialize()
        pc = await self.engine.acquire(inputs.get("timeout"))
        cid = pc.id
        self._leases[cid] = pc
        run_id = run_id_var.get()
        if run_id is not None:
            self._lease_runs[cid] = run_id
        return {
            "connection_id": cid,
            "health_score": pc.entry.health,
            "acquisition_time_ms": pc.wait * 1000.0,
        }

    async def _op_execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        cid = inputs.get("connection_id")
        pc = self._leases.get(cid) if type(cid) is str else None
        if pc is None or self.engine.closed:
            pc = self._lease(cid, "execute")  # raises, naming what was wrong
        query, params = query_and_params(inputs, "execute")
        try:  # the engine checks every argument (and refuses a second statement at once)
            res = await self.engine.execute(
                pc,
                query,
                params,
                fetch_mode=inputs.get("fetch_mode", "all"),
                fetch_size=inputs.get("fetch_size", 100),
                max_rows=inputs.get("max_rows"),
            )
        except QueryError as exc:
            return execute_result(pc.id, None, exc)
        return execute_result(pc.id, res, None)

    async def _op_release(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        cid = inputs.get("connection_id")
        pc = self._leases.get(cid) if type(cid) is str else None
        if pc is None:
            pc = self._lease(cid, "release")  # raises, naming what was wrong
        status = await self.engine.release(pc)  # refuses while a statement is running
        cid = pc.id
        del self._leases[cid]
        if self._lease_runs:
            self._lease_runs.pop(cid, None)
        return {"status": status, "connection_id": cid}

    async def _op_stats(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.get_stats()

    async def _op_pool_statistics(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.get_pool_statistics()

    async def _op_status(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.get_status()

    async def _op_adjust(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        new_size = inputs.get("new_size")
        cfg = self.pool_config
        if (
            isinstance(new_size, int)
            and not isinstance(new_size, bool)
            and not cfg.min_connections <= new_size <= cfg.max_connections
        ):
            return {
                "success": False,
                "reason": f"Size must be between {cfg.min_connections} and {cfg.max_connections}",
            }
        previous = self.engine.resize(new_size)  # type: ignore[arg-type]  # checked there
        return {"success": True, "previous_size": previous, "new_size": new_size}

    async def _op_close(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await self.close()
        return {"status": "closed"}

    def _lease(self, cid: Any, op: str) -> PooledConnection:
        if cid is None:
            raise UnknownConnection(f"connection_id required for {op} (got None)")
        if not isinstance(cid, str):
            raise UnknownConnection(
                f"{op} needs 'connection_id' as the string acquire returned (got {show(cid)})"
            )
        if op != "release" and self.engine.closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        pc = self._leases.get(cid) if isinstance(cid, str) else None
        if pc is None:
            raise UnknownConnection(
                f"connection {cid!r} is not checked out from pool {self.name!r} "
                "(unknown, or already released)"
            )
        return pc

    # ------------------------------------------------------------------ Python API

    async def initialize(self) -> dict[str, Any]:
        """Open ``min_connections`` now; raise ConnectionFailed if the database is down."""
        already = self.engine.opened
        await self.engine.open()
        if self.adaptive_controller is not None and self.adaptive_controller.enabled:
            await self.adaptive_controller.start()
        if already:
            return {"status": "already_initialized"}
        cfg = self.pool_config
        return {
            "status": "initialized",
            "min_connections": cfg.min_connections,
            "max_connections": cfg.max_connections,
            "adaptive_sizing": self.adaptive_sizing_enabled,
            "query_routing": self.enable_query_routing,
        }

    async def acquire(self, timeout: float | None = None) -> PooledConnection:
        """Check out a connection (see ConnectionPool.acquire for waits and errors)."""
        if not self.engine.opened:  # first use: open the pool and start its controller
            await self.initialize()
        pc = await self.engine.acquire(timeout)
        self._leases[pc.id] = pc
        return pc

    async def execute(
        self,
        conn: PooledConnection | str,
        query: str,
        params: Any = None,
        *,
        fetch_mode: str = "all",
        fetch_size: int = 100,
        max_rows: int | None = None,
    ) -> dict[str, Any]:
        """Run ``query`` on a checked-out connection; return the execute result dict.

        Database errors come back as ``success: False`` with ``error``, ``error_type`` and
        ``sqlstate`` (a query past ``max_rows`` too: ``error_type`` ``"ResultTooLarge"``);
        misuse raises (ParameterError, UnknownConnection, ConnectionFailed).
        """
        pc = self._lease(_connection_id(conn), "execute")
        return await self._execute(pc, query, params, fetch_mode, fetch_size, max_rows)

    def stream(
        self,
        conn: PooledConnection | str,
        query: str,
        params: Any = None,
        *,
        batch_size: int = 1000,
    ) -> ResultStream:
        """Return the rows of a query in batches of dict rows (``ConnectionPool.stream``):
        ``async for batch in pool.stream(conn, query, params, batch_size=1000)``."""
        pc = self._lease(_connection_id(conn), "stream")
        return self.engine.stream(pc, query, params, batch_size=batch_size)

    async def _execute(
        self,
        pc: PooledConnection,
        query: str,
        params: Any,
        fetch_mode: Any,
        fetch_size: Any,
        max_rows: Any = None,
    ) -> dict[str, Any]:
        try:  # the engine checks every argument (and refuses a second statement at once)
            res = await self.engine.execute(
                pc, query, params, fetch_mode=fetch_mode, fetch_size=fetch_size, max_rows=max_rows
            )
        except QueryError as exc:
            return execute_result(pc.id, None, exc)
        return execute_result(pc.id, res, None)

    async def release(self, conn: PooledConnection | str) -> dict[str, Any]:
        """Return a connection; result ``{"status": "released"|"recycled", "connection_id"}``."""
        return await self._op_release({"connection_id": _connection_id(conn)})

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[PooledConnection]:
        """Check out a connection for an ``async with`` block; released on exit."""
        pc = await self.acquire(timeout)
        try:
            yield pc
        finally:
            if pc.id in self._leases:
                await self.release(pc)

    async def close(self, timeout: float = 5.0) -> dict[str, Any]:
        """Drain (up to ``timeout`` s) and close every connection; later use raises PoolClosed.

        Raises ParameterError for a ``timeout`` that is not a finite number >= 0.
        """
        check_number("timeout", timeout, low=0, error=ParameterError)
        if self.adaptive_controller is not None:
            await self.adaptive_controller.stop()
        if self.pattern_tracker is not None and self.pool_config.pattern_store:
            await self.pattern_tracker.save_async()
        await self.engine.close(timeout)
        self._leases.clear()
        return {"status": "closed"}

    async def __aenter__(self) -> WorkflowConnectionPool:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ reporting

    def get_stats(self) -> dict[str, Any]:
        """Return the ``stats`` result: the pool's own report (``ConnectionPool.get_stats``)."""
        return self.engine.get_stats()

    def get_pool_statistics(self) -> dict[str, Any]:
        """Return the flat statistics the original's adaptive controller read."""
        return self.engine.get_pool_statistics()

    def get_status(self) -> dict[str, Any]:
        """Return per-connection status (health, checked out or idle, queries, ages)."""
        return self.engine.get_status()


def _connection_id(conn: Any) -> Any:
    """Return the id of a `PooledConnection`, or ``conn`` itself (checked by ``_lease``)."""
    return conn.id if isinstance(conn, PooledConnection) else conn


async def _raise(exc: Exception) -> dict[str, Any]:
    """Raise ``exc`` when awaited: `WorkflowConnectionPool.process` reports its errors so."""
    raise exc
