"""The query router: classify, choose a target, check out, execute, return.

Writes and anything not provably a plain read go to the primary; plain reads go to a
usable replica (round-robin, lag under the threshold, not banned) when the split is on.
A session's reads see its writes: after a write the session carries the primary's WAL
position, and a replica serves its reads only once it has replayed that far (waiting up
to ``consistency_timeout``), else the primary does. In a workflow run the token is the
node's (`kailash_nodes.context.CausalContext`, merged along the workflow's edges), so
concurrent nodes run concurrently and only nodes downstream of a write wait for it; the
run's session (and its lock) serves only its transactions and session state. A failed
replica read is retried on the primary, so no request is lost to a replica outage.
Classification is cached per text, so a repeated statement costs a dictionary hit before
its I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from kailash_nodes.background import BackgroundTasks
from kailash_nodes.context import CausalContext, Token, causal_var, current_run_id, merge_token
from kailash_nodes.errors import (
    ConnectionFailed,
    OutcomeUnknown,
    ParameterError,
    PoolTimeout,
    QueryError,
    SessionError,
    TooManyRequests,
)
from kailash_nodes.pool import ConnectionPool, PooledConnection, QueryResult, Ran, run_once
from kailash_nodes.router.call import Call, Routed
from kailash_nodes.router.consistency import ReadYourWrites
from kailash_nodes.router.functions import FunctionRules
from kailash_nodes.router.metrics import RouterMetrics, routing_metadata
from kailash_nodes.router.pinned import PinnedSessions
from kailash_nodes.router.plan import Plan, PlanCache
from kailash_nodes.router.prewarm import PREDICTOR, RUNTIME, prepare_ahead
from kailash_nodes.router.replicas import ReplicaSet
from kailash_nodes.router.sessions import Session, SessionTable
from kailash_nodes.sql import Category, Classification, rewrite

__all__ = ["QueryRouter", "Routed", "RouterOptions"]

logger = logging.getLogger("kailash_nodes.router")
_OTHER_TRANSACTION = frozenset({"commit_prepared", "rollback_prepared"})
_OTHER_COMMITS = frozenset({"commit_prepared"})  # raises a workflow node's token
# Not prepared ahead: DDL (it invalidates, and preparing it buys nothing) and session
# state (it pins a session connection).
_NOT_PREWARMED = frozenset({Category.DDL, Category.SESSION_STATE})
# Replica answers that mean "ask the primary instead" (read-only, recovery conflict).
_RETRY_ON_PRIMARY = frozenset({"25006", "40001"})
Predictor = Callable[[str, str | None], str | None]  # (shape, session id) -> next query text
Observer = Callable[[str, float, int, bool, PooledConnection], None]  # a pool's observer
_NO_TEXT = ("", False)  # a connection that caches no statements: no text, no hit
_MAX_AHEAD = 16  # predicted statements being prepared at once, at most


@dataclass(frozen=True, slots=True)
class RouterOptions:
    """Validated router settings (see docs/router.md)."""

    enable_read_write_split: bool = True
    cache_size: int = 1000
    replica_lag_threshold: float = 5.0
    reads_on_primary: bool = False
    session_timeout: float = 60.0
    consistency_timeout: float = 0.5
    replica_check_interval: float = 1.0
    # Seconds between reads of the primary's function catalog that look for changes made
    # outside the router (0: never; DDL through the router always reads it at once)
    function_catalog_refresh: float = 60.0
    prepare: bool = True
    # Prepare the statement the learned patterns predict next, after each statement, in
    # the background. Off by default: it measured slower end to end (docs/router.md).
    prepare_predicted: bool = False


class QueryRouter(PinnedSessions):
    """Route statements over a primary pool and optional replica pools."""

    def __init__(
        self,
        primary: ConnectionPool,
        replicas: Mapping[str, ConnectionPool],
        options: RouterOptions,
    ) -> None:
        self.primary = primary
        self.options = options
        self.replicas = ReplicaSet(dict(replicas), options.replica_check_interval)
        self.sessions = SessionTable(options.session_timeout)
        self.metrics = RouterMetrics()
        self.split = options.enable_read_write_split
        self.dialect = primary.driver.dialect
        self._style = primary.driver.placeholder_style
        # A plan's text is rewritten for the primary's placeholders: a replica pool whose
        # driver takes others (a misconfiguration, but possible) keeps the general path
        self._replicas_one_shot = all(s.pool.style is self._style for s in self.replicas.states)
        # Configured server-side prepare (a connection may still not: prepares_on_server)
        self._prepare = options.prepare and options.cache_size > 0 and primary.driver.can_prepare
        self.consistency = ReadYourWrites(
            primary,
            track_lsn=primary.driver.tracks_positions and bool(self.replicas.states),
            replicas=bool(self.replicas.states),
            window=options.replica_lag_threshold,
            timeout=options.consistency_timeout,
        )
        self._statement_tables: LRUCache[str, frozenset[str]] = LRUCache(
            maxsize=max(options.cache_size, 1) * 4
        )
        # What the primary's catalog says a replica may run decides classification; a
        # new catalog (or none) clears the plans classified by the old one.
        self.functions = FunctionRules(
            enabled=bool(self.replicas.states),
            changed=lambda: self.plans.clear(),
            refresh=options.function_catalog_refresh,
        )
        # Per text: classification, driver text and routing facts, one lookup a statement.
        # Its hits are the reuse cache_stats reports where no connection caches statements
        # ("client_text": MySQL, or PostgreSQL behind a transaction-pooling proxy).
        self.plans = PlanCache(lambda q: self.functions.classify(q, self.dialect), self._style)
        self._started = False
        self._turn = 0
        # Pattern learning: shape, session -> the query text predicted next (use_learning)
        self.predictor: Predictor | None = None
        self._ahead = BackgroundTasks("kailash_nodes-router:prepare-ahead")

    async def start(self) -> None:
        """Open the pools, size their statement caches, start the monitor and reaper."""
        if self._started:
            return
        self._started = True
        size = self.options.cache_size if self.options.prepare else 0
        for pool in self.pools():  # first: a pool opened now opens at this size (SQLite)
            pool.set_statement_cache_size(size)
        await self.primary.open()
        if self.replicas.states:
            await self.functions.load(self.primary)  # only replicas need it; never raises
            self.functions.start_refresh()
            await self.replicas.check_all()
        self.replicas.start()
        self.sessions.start()

    async def close(self) -> None:
        """Stop background tasks and return every session's connection.

        Statements being prepared ahead are cancelled; their connections go back.
        """
        await self._ahead.cancel_all()
        await self.functions.close()
        await self.replicas.stop()
        await self.sessions.stop()

    def use_learning(self, predictor: Predictor | None, observer: Observer | None) -> None:
        """Prepare predicted statements ahead with ``predictor`` (None: stop doing so).

        Only with ``RouterOptions.prepare_predicted``; without it ``predictor`` is ignored.

        ``predictor(shape, session_id)`` returns the query text likely to follow a
        statement of fingerprint ``shape``, or None. ``observer`` becomes the replica
        pools' observer, so that reads served there are recorded like the primary's (pass
        the primary pool's own observer).
        """
        self.predictor = predictor if self.options.prepare_predicted else None
        for state in self.replicas.states:
            state.pool.observer = observer

    async def wait_prepared_ahead(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` s for the predicted statements being prepared ahead."""
        await self._ahead.wait_all(timeout)

    # ------------------------------------------------------------------ routing

    async def route(self, query: str, params: Any = None, session_id: str | None = None) -> Routed:
        """Classify ``query``, run it where it belongs and return the result.

        Raises ParameterError for bad input, SessionError for a transaction statement that
        does not fit its session, ConnectionFailed/PoolTimeout when no target can serve it.
        Database errors come back in ``Routed.error``.
        """
        if not self._started:
            await self.start()
        if type(query) is not str and not isinstance(query, str):
            raise ParameterError(f"'query' must be a string (got {type(query).__name__})")
        plan = self.plans.get(query)
        start = time.monotonic()
        self.metrics.routed += 1
        if (
            plan.one_shot
            and session_id is None
            and ((causal := causal_var.get()) is None or self._plain_read_in_run(plan, causal))
            and self.predictor is None
            and (
                not (read := plan.replica_safe and self.split and bool(self.replicas.states))
                or self._replicas_one_shot
            )
        ):
            try:
                if read:  # a replica's, unless none serves it (then the primary's)
                    routed = await self._one_shot_replica(plan, query, params, start)
                    if routed is not None:
                        return routed
                # The primary's, here rather than in a method of its own: every frame
                # in the await chain is resumed once more when the answer arrives
                pool = self.primary
                rq = plan.rq
                assert rq is not None  # plan.one_shot
                lookup = rq.text if pool.statement_cache_size else None
                ran = await run_once(pool, query, rq, params, lookup)
                return self._one_shot_routed(plan, ran, start, "primary")
            except BaseException:
                self.metrics.routing_errors += 1
                raise
        call = Call(plan, query, params, start)
        try:
            if session_id is not None:
                return await self._explicit(call, session_id)
            causal = causal_var.get()
            cls = call.cls
            op = cls.transaction_op
            if causal is None:  # outside any workflow run: no session, no token
                if op and op not in _OTHER_TRANSACTION:
                    raise SessionError(
                        f"{cls.statement} needs a session_id (or a workflow run) so that "
                        "the statements of the transaction share one connection"
                    )
                return await self._stateless(call)
            # The node's token for this primary (its upstream's writes and its own); a
            # statement that may write gets one, a plain read without one carries none.
            token = call.token = causal.tokens.get(self.primary)
            if token is None and not cls.replica_safe:
                call.token = causal.token(self.primary)
            sessions = self.sessions.sessions
            session = sessions.get(causal.run_id) if sessions else None
            if (
                op is None
                and (session is None or not (session.pinned or session.expired))
                and (cls.replica_safe or Category.SESSION_STATE not in cls.parts)
            ) or op in _OTHER_TRANSACTION:  # nothing pinned for the run: no lock, concurrent
                return await self._stateless(call)
            session = call.session = self.sessions.get(causal.run_id)
            async with session.lock:  # the run's pinned connection: one statement at a time
                return await self._in_session(call, session)
        except BaseException:
            self.metrics.routing_errors += 1
            raise

    def _plain_read_in_run(self, plan: Plan, causal: CausalContext) -> bool:
        """Return whether a statement inside a workflow run may take the one-shot path: a
        plain read whose node has no write to see on this primary (no token), while the
        run holds no pinned connection. (That is what `route` would send to `_stateless`
        with no token; the one-shot path then excludes replica reads itself.)"""
        if not plan.replica_safe or causal.tokens.get(self.primary) is not None:
            return False
        sessions = self.sessions.sessions
        session = sessions.get(causal.run_id) if sessions else None
        return session is None or not (session.pinned or session.expired)

    async def _explicit(self, call: Call, session_id: str) -> Routed:
        """Run ``call`` in the session the caller named (its token is the session's).

        Inside a workflow run, the session's token first takes in the node's (so the
        node's reads see what is upstream of it), and the node's takes in the session's
        after a write (so the nodes downstream see it).
        """
        if call.cls.transaction_op in _OTHER_TRANSACTION:  # a prepared one: any connection
            return await self._stateless(call)
        session = call.session = call.token = self.sessions.get(session_id)
        causal = causal_var.get()
        token = causal.tokens.get(self.primary) if causal is not None else None
        if token is not None:
            merge_token(session, token)
        async with session.lock:
            try:
                return await self._in_session(call, session)
            finally:
                if causal is not None and session.tracked:
                    merge_token(causal.token(self.primary), session)

    async def _stateless(self, call: Call) -> Routed:
        """Run ``call`` on a replica when it may and one serves it, else on the primary.

        ``call.token`` (a session's, or the workflow node's) holds what its reads must see;
        a pending position is read (an await) only when there is one.
        """
        token = call.token
        if (
            call.cls.replica_safe
            and self.split
            and self._read_from_replica(token)
            and (
                token is None
                or not token.lsn_pending
                or await self.consistency.position_known(token)
            )
        ):
            routed = await self._try_replica(call)
            if routed is not None:
                return routed
        pool = self.primary
        pc = await pool.acquire(prefer=self._statement_text(call, pool))
        try:
            routed = await self._run(pool, pc, call, "primary")
            if token is not None and (
                call.plan.writes or call.cls.transaction_op in _OTHER_COMMITS
            ):
                await self.consistency.note_write(token, pool, pc)
        except OutcomeUnknown:
            if token is not None:  # it may have been applied: reads must be able to see it
                self.consistency.note_unknown_write(token)
            raise
        finally:
            await pool.release(pc)
        if call.predict:  # after the release: the caller never waits for it
            self._prepare_predicted_later(call)
        return routed

    def _read_from_replica(self, token: Token | None, *, advance: bool = True) -> bool:
        """Return whether this read should try a replica (not the primary).

        ``advance=False`` answers for the next read without taking its turn (a pre-warm).
        """
        if not self.replicas.states:
            return False
        if token is not None and token.primary_until and token.primary_until > time.monotonic():
            return False
        if self.options.reads_on_primary:  # the primary takes its turn in the rotation
            turn = (self._turn + 1) % (len(self.replicas.states) + 1)
            if advance:
                self._turn = turn
            return turn != 0
        return True

    async def _try_replica(self, call: Call) -> Routed | None:
        """Run a plain read on a usable replica; None sends it to the primary instead."""
        state = self.replicas.pick(self.options.replica_lag_threshold)
        if state is None:
            self.metrics.fallbacks += 1
            return None
        token = call.token.write_lsn if call.token is not None else 0
        try:
            pc = await state.pool.acquire(
                timeout=state.checkout_timeout,
                prefer=self._statement_text(call, state.pool),
            )
        except (ConnectionFailed, PoolTimeout, TooManyRequests) as exc:
            state.ban(time.monotonic(), exc)
            self.metrics.fallbacks += 1
            return None
        try:
            if token > state.replay_lsn and not await self.consistency.caught_up(state, pc, token):
                self.consistency.fallbacks += 1
                return None
            routed = await self._run(state.pool, pc, call, state.target)
        except ConnectionFailed as exc:  # a plain read on a standby changed nothing: retry
            state.ban(time.monotonic(), exc)
            self.metrics.fallbacks += 1
            return None
        except QueryError:  # the replay-position poll was refused (recovery conflict)
            self.consistency.fallbacks += 1
            return None
        finally:
            await state.pool.release(pc)
        err = routed.error
        if err is not None and (err.sqlstate in _RETRY_ON_PRIMARY):
            self.metrics.fallbacks += 1
            return None
        state.reads += 1
        if call.predict:
            self._prepare_predicted_later(call)
        return routed

    def _statement_text(self, call: Call, pool: ConnectionPool) -> str | None:
        """Return the text the driver prepares for ``call`` (None without prepare on
        ``pool``, or for a text that does not rewrite)."""
        rq = call.plan.rq
        return rq.text if rq is not None and pool.statement_cache_size else None

    async def _run(
        self, pool: ConnectionPool, pc: PooledConnection, call: Call, target: str
    ) -> Routed:
        """Execute ``call`` on ``pc`` and count it; a database error is returned, not raised.

        Steps: look the statement up in the connection's cache, count the routing,
        drop statements a DDL part makes stale, execute, note the tables of a statement
        prepared now, and mark a successful prepared statement for predicting what follows.
        The counting is `RouterMetrics.count_lookup` / `count_routed`, shared with
        the one-shot path's `_one_shot_routed` (two calls measured within bench_overhead.py's
        noise).
        """
        conn = pc.connection
        plan = call.plan
        rq = plan.rq
        metrics = self.metrics
        text, cache_hit = _NO_TEXT
        if rq is not None and (conn.server_prepare or conn.client_statement_cache):
            text = rq.text  # the text the driver prepares, or sqlite3 caches
            cache_hit = conn.has_statement(text)
            metrics.count_lookup(conn, text, cache_hit)
        pc.session = call.session.id if call.session is not None else None
        routing_time = time.monotonic() - call.start
        metrics.count_routed(target, plan.counts_as_write, routing_time)
        cls = plan.cls
        ddl = plan.ddl
        if ddl and cls.tables:  # a DDL part anywhere in the text (tables: all parts')
            self.invalidate(cls.tables)
        error: QueryError | None = None
        result: QueryResult | None = None
        try:  # the plan's text was rewritten for this driver's placeholders: not again
            result = await pool.execute(
                pc, call.query, call.params, rewritten=rq if pool.style is self._style else None
            )
        except QueryError as exc:
            error = exc
        except OutcomeUnknown:
            if ddl:  # it may have changed functions: builtins only until the catalog is read
                self.functions.after_lost_ddl(call.query, self.dialect, pool)
            raise
        if ddl and error is None:  # it may have changed functions: read their catalog again
            pinned = call.session is not None and call.session.conn is pc
            await self.functions.after_ddl(call.query, self.dialect, pool, pc, pinned)
        if text and error is None:
            if not cache_hit and cls.tables:
                self._statement_tables[text] = cls.tables  # once per prepare, not per query
            call.predict = self.predictor is not None  # set only with prepare_predicted
        metadata = routing_metadata(cls, plan.query_type, target, pc.id, cache_hit, routing_time)
        return Routed(result, error, metadata, pc.id)

    async def _one_shot_replica(
        self, plan: Plan, query: str, params: Any, start: float
    ) -> Routed | None:
        """`_try_replica` for a one-shot plain read (no token: nothing to wait for) in one
        call to the replica's pool; None sends it to the primary, as `_try_replica` does:
        no usable replica, its connection failed or could not be had in time (the replica
        is banned), or the standby refused the statement with an error the primary would
        not give (`_RETRY_ON_PRIMARY`)."""
        if not self._read_from_replica(None):
            return None
        state = self.replicas.pick(self.options.replica_lag_threshold)
        if state is None:
            self.metrics.fallbacks += 1
            return None
        pool = state.pool
        rq = plan.rq
        assert rq is not None  # plan.one_shot
        try:
            ran = await run_once(
                pool,
                query,
                rq,
                params,
                rq.text if pool.statement_cache_size else None,
                state.checkout_timeout,
            )
        except (ConnectionFailed, PoolTimeout, TooManyRequests) as exc:
            state.ban(time.monotonic(), exc)  # a plain read on a standby changed nothing
            self.metrics.fallbacks += 1
            return None
        routed = self._one_shot_routed(plan, ran, start, state.target)
        err = ran.error
        if err is not None and err.sqlstate in _RETRY_ON_PRIMARY:
            self.metrics.fallbacks += 1
            return None
        state.reads += 1
        return routed

    def _one_shot_routed(self, plan: Plan, ran: Ran, start: float, target: str) -> Routed:
        """Count what `run_once` ran for ``plan`` on ``target`` as `_run` counts it, and
        return it as routed."""
        conn = ran.conn
        rq = plan.rq
        cache_hit = False
        if rq is not None and (conn.server_prepare or conn.client_statement_cache):
            cache_hit = ran.hit
            self.metrics.count_lookup(conn, rq.text, cache_hit)
            if not cache_hit and ran.error is None and plan.cls.tables:
                self._statement_tables[rq.text] = plan.cls.tables
        routing_time = ran.sent - start
        self.metrics.count_routed(target, plan.counts_as_write, routing_time)
        metadata = routing_metadata(
            plan.cls, plan.query_type, target, ran.lease_id, cache_hit, routing_time
        )
        return Routed(ran.result, ran.error, metadata, ran.lease_id)

    def _prepare_predicted_later(self, call: Call) -> None:
        """Prepare the statement predicted to follow ``call`` in an owned background task.

        Started after ``call``'s connection went back, so the caller never waits for it;
        at most ``_MAX_AHEAD`` run at once (more predictions are dropped).
        """
        if len(self._ahead) < _MAX_AHEAD:
            session = call.session
            seen = session.last_used if session is not None else 0.0
            self._ahead.spawn(
                self._prepare_predicted(call.cls.fingerprint, session, seen), "prepare-predicted"
            )

    async def _prepare_predicted(self, shape: str, session: Session | None, seen: float) -> bool:
        """Prepare the statement predicted to follow ``shape`` where it will run; return if
        it did. Only on a connection idle now (none is opened for it); never for a session
        holding a pinned connection (its next statement runs there, maybe in a transaction)
        or one whose next statement has arrived since ``seen`` (too late to help: the
        prediction is not even computed, so a caller sending statements back to back pays
        nothing for it).
        """
        predictor = self.predictor
        if predictor is None or (
            session is not None and (session.pinned or session.last_used != seen)
        ):
            return False
        try:
            query = predictor(shape, session.id if session is not None else current_run_id())
        except Exception as exc:  # a prediction never fails anything
            self.metrics.prewarm.failed(PREDICTOR)
            logger.debug("predicting after %r failed: %s", shape, exc)
            return False
        if query is None:
            return False
        return await self._prepare_ahead(query, session, PREDICTOR, open_connection=False)

    async def prewarm(self, query: str, session_id: str | None = None) -> bool:
        """Prepare ``query`` where its next run will check out a connection; return if done.

        For a caller about to send ``query`` (the workflow runtime, before a router node
        runs): the statement is prepared on the connection the next checkout of its
        target pool gets (the primary, or for a plain read with the split on, the replica
        the next read would pick), opening one when nothing is idle and the pool has
        room. Nothing is done without server-side prepare, for a statement its session's
        pinned connection would run, for transaction control, session state, DDL or a
        multi-statement string, or when every connection is busy. ``session_id``
        defaults to the current workflow run. Never raises for a failed warm-up: it is
        logged at debug level and counted (``prewarm`` metrics, source ``runtime``).
        """
        if not self._started:
            await self.start()
        if not isinstance(query, str) or not self._prepare:
            return False
        sid = session_id if session_id is not None else current_run_id()
        session = self.sessions.sessions.get(sid) if sid is not None else None
        if session is not None and session.pinned:  # it runs on the pinned connection
            return False
        return await self._prepare_ahead(query, session, RUNTIME, open_connection=True)

    async def _prepare_ahead(
        self, query: str, session: Session | None, source: str, *, open_connection: bool
    ) -> bool:
        """Prepare ``query`` on the connection its target pool's next checkout gets.

        Skips transaction control, session state, DDL and multi-statement strings. A
        failure is counted for ``source`` and logged at debug level, never raised.
        """
        try:
            cls = self.functions.classify(query, self.dialect)
            rq = rewrite(query, self._style)
        except Exception as exc:  # the statement's own call raises it, typed
            self.metrics.prewarm.failed(source)
            logger.debug("pre-warming %r failed: %s", query, exc)
            return False
        if cls.transaction_op or cls.category in _NOT_PREWARMED or rq.statements != 1:
            return False
        pool = self._target_pool(cls, session)
        prepared = await prepare_ahead(
            pool, rq.text, self.metrics.prewarm, source, open_connection=open_connection
        )
        if prepared and cls.tables:  # so that DDL on its tables drops it
            self._statement_tables[rq.text] = cls.tables
        return prepared

    def _target_pool(self, cls: Classification, session: Session | None) -> ConnectionPool:
        """Return the pool ``route`` would send this statement to next, without choosing."""
        if not (
            cls.replica_safe and self.split and self._read_from_replica(session, advance=False)
        ):
            return self.primary
        state = self.replicas.peek(self.options.replica_lag_threshold)
        return self.primary if state is None else state.pool

    def prepares_on_server(self) -> bool:
        """Return whether statements are prepared on the server now, as measured on the
        connections: behind a transaction-pooling proxy the driver turns server-side
        prepare off per connection, whatever was configured."""
        return self._prepare and any(p.prepares_on_server() for p in self.pools())

    def invalidate(self, tables: frozenset[str] | None) -> int:
        """Drop prepared statements that use ``tables`` (every statement when None).

        Runs on DDL (outside the hot path); returns how many cached statements were dropped.
        """
        names = None if tables is None else {t.rpartition(".")[2] for t in tables}
        texts = [
            t
            for t, used in self._statement_tables.items()
            if names is None or any(u.rpartition(".")[2] in names for u in used)
        ]
        self.metrics.invalidations += 1
        forget = None if tables is None else texts
        dropped = sum(pool.forget_statements(forget) for pool in self.pools())
        for text in texts:
            self._statement_tables.pop(text, None)
        return dropped

    def pools(self) -> tuple[ConnectionPool, ...]:
        """Return the primary pool and every replica pool."""
        return (self.primary, *(s.pool for s in self.replicas.states))

    def cached_statements(self) -> int:
        """Return the number of statements prepared over every connection of every pool."""
        return sum(p.cached_statements() for p in self.pools())

    def metrics_report(self) -> dict[str, Any]:
        """Return the ``get_metrics()`` dict (keys in docs/router.md): the counters'
        sections (`RouterMetrics`) and what the parts report; reads every pool's
        connections and each replica's state, no I/O."""
        m = self.metrics
        routing = m.routing()
        routing["consistency_waits"] = self.consistency.waits
        routing["consistency_fallbacks"] = self.consistency.fallbacks
        plans = self.plans
        hits, misses = plans.lookups - plans.misses, plans.misses
        kind = self.primary.driver.statement_cache
        cache = m.cache(kind, self.prepares_on_server(), (hits, misses))
        routing["cache_hits"], routing["cache_misses"] = cache["hits"], cache["misses"]
        cache["total_entries"] = self.cached_statements()
        cache["max_entries_per_connection"] = self.options.cache_size
        cache["server_side_prepare"] = self.prepares_on_server()
        cache["invalidations"] = m.invalidations
        now = time.monotonic()
        return {
            "router_metrics": routing,
            "cache_stats": cache,
            "pattern_learning": m.learning(self.predictor is not None),
            "prewarm": m.prewarm.report(),
            "active_transactions": self.sessions.active_transactions(),
            "pinned_sessions": self.sessions.pinned(),
            "sessions_expired": self.sessions.expired,
            "replicas": {s.name: s.describe(now) for s in self.replicas.states},
            "function_catalog": {
                "source": self.functions.source or None,
                "reads": self.functions.loads,
                "failed_reads": self.functions.failures,
                "refreshes": self.functions.refreshes,
                "refresh_changes": self.functions.refresh_changes,
                "refresh_interval_seconds": self.functions.refresh_every,
            },
        }
