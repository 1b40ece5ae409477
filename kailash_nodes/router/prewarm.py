"""Statements prepared ahead of their first use: where, by whom, and whether it paid off.

Two sources prepare ahead. The pattern predictor prepares the statement likely to follow
the one that just ran, on that statement's connection before it goes back (``predictor``).
The workflow runtime asks a router node, before the node runs, to prepare its statement
on the connection the node's checkout will get (``runtime``). Every such prepare is kept
in a ledger keyed by (connection, statement text); a later statement that finds it
prepared there (a cache hit) marks it used. One that is gone before any use (evicted,
invalidated, its connection closed) was wasted.

A runtime pre-warm also claims its connection for a while (``CLAIM_SECONDS``, or until
used): the nodes of one level are pre-warmed at once and then run at once, each taking
the idle connection holding its statement, so a second node's pre-warm must not go to
the connection a first one just prepared on (both nodes would want it; one would miss).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container
from dataclasses import dataclass

from kailash_nodes.drivers import DriverConnection
from kailash_nodes.errors import (
    ConnectionFailed,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
)
from kailash_nodes.pool import ConnectionPool, PooledConnection, checkout_for_warming

__all__ = [
    "CLAIM_SECONDS",
    "PREDICTOR",
    "PREWARM_TIMEOUT",
    "RUNTIME",
    "PreparedAheadLedger",
    "PrewarmLedger",
    "SourceCounts",
    "prepare_ahead",
    "prepare_on",
]

logger = logging.getLogger("kailash_nodes.router")

PREDICTOR = "predictor"
RUNTIME = "runtime"
PREWARM_TIMEOUT = 2.0  # longest prepare (and checkout) a pre-warm waits for
_MAX_PENDING = 4096
CLAIM_SECONDS = 5.0  # how long a runtime pre-warm keeps other pre-warms off its connection


@dataclass(slots=True)
class SourceCounts:
    """Counters of one pre-warm source."""

    issued: int = 0  # statements prepared ahead
    used: int = 0  # of those, found prepared by a later statement on that connection
    already_prepared: int = 0  # nothing to do: the connection already had it
    errors: int = 0  # prepares (or checkouts for them) that failed


class PreparedAheadLedger:
    """Statements prepared ahead and not yet used, and the counters of each source."""

    __slots__ = ("claims", "connections_opened", "counts", "pending")

    def __init__(self) -> None:
        # (connection, text) -> source, oldest first; a plain dict so that the check on a
        # cache hit (``pending.pop``) stays a C call.
        self.pending: dict[tuple[DriverConnection, str], str] = {}
        self.counts = {PREDICTOR: SourceCounts(), RUNTIME: SourceCounts()}
        self.connections_opened = 0  # runtime pre-warms that found nothing idle and opened one
        # connection -> when a runtime pre-warm prepared on it, until a statement uses it
        self.claims: dict[DriverConnection, float] = {}

    def prepared(self, conn: DriverConnection, text: str, source: str) -> None:
        """Record a statement prepared ahead on ``conn``."""
        self.counts[source].issued += 1
        pending = self.pending
        pending.pop((conn, text), None)  # prepared again: the earlier one went unused
        pending[(conn, text)] = source
        if source == RUNTIME:
            self.claims[conn] = time.monotonic()
        if len(pending) > _MAX_PENDING:
            self._trim()

    def claimed(self) -> Container[DriverConnection]:
        """Return the connections runtime pre-warms claimed in the last ``CLAIM_SECONDS``
        and no statement has used since (forgetting older claims).

        Live, not a copy: a pre-warm waiting for a connection to open must see the claims
        the pre-warms running alongside it make meanwhile.
        """
        claims = self.claims
        if claims:
            since = time.monotonic() - CLAIM_SECONDS
            for conn in [c for c, at in claims.items() if at < since]:
                del claims[conn]
        return claims.keys()

    def _trim(self) -> None:
        """Forget entries whose statement is gone, then the oldest, down to 3/4 of the bound.

        Down to 3/4, not to the bound: the scan is O(bound), so it runs once per
        ``bound / 4`` prepares, not on every one.
        """
        pending = self.pending
        for key in [k for k in pending if not _alive(k)]:
            del pending[key]
        while len(pending) > _MAX_PENDING * 3 // 4:
            del pending[next(iter(pending))]  # untracked from now on: counts as wasted

    def use(self, conn: DriverConnection, text: str) -> None:
        """Mark a pre-warmed statement used: a statement found it prepared (a cache hit)."""
        source = self.pending.pop((conn, text), None)
        if source is not None:
            self.counts[source].used += 1
            if source == RUNTIME:
                self.claims.pop(conn, None)

    def failed(self, source: str) -> None:
        """Count a pre-warm that failed."""
        self.counts[source].errors += 1

    def report(self) -> dict[str, object]:
        """Return the ``prewarm`` section of the router metrics (docs/router.md)."""
        alive = dict.fromkeys(self.counts, 0)
        for key, source in self.pending.items():
            alive[source] += _alive(key)
        by_source = {s: _source_report(c, alive[s]) for s, c in self.counts.items()}
        totals = {
            k: sum(r[k] for r in by_source.values())
            for k in ("issued", "used", "pending", "wasted", "already_prepared", "errors")
        }
        return {**totals, "connections_opened": self.connections_opened, "by_source": by_source}


PrewarmLedger = PreparedAheadLedger  # the earlier name


def _alive(key: tuple[DriverConnection, str]) -> bool:
    conn, text = key
    return not conn.is_closed() and conn.has_statement(text)


def _source_report(counts: SourceCounts, pending: int) -> dict[str, int]:
    return {
        "issued": counts.issued,
        "used": counts.used,
        "pending": pending,
        "wasted": counts.issued - counts.used - pending,
        "already_prepared": counts.already_prepared,
        "errors": counts.errors,
    }


async def prepare_on(
    pc: PooledConnection, text: str, ledger: PreparedAheadLedger, source: str
) -> bool:
    """Prepare ``text`` on the checked-out ``pc``; return whether it was prepared now.

    Never inside a transaction (a failed prepare would abort it). A failure is logged at
    debug level and counted, never raised; a connection that failed, or whose prepare was
    interrupted by cancellation, is marked broken so that its release replaces it.
    """
    conn = pc.connection
    if conn.in_transaction():
        return False
    try:
        prepared = await conn.prepare(text, PREWARM_TIMEOUT)
    except Exception as exc:  # the statement's own call reports the error, typed
        if isinstance(exc, ConnectionFailed):
            pc.mark_broken()
        ledger.failed(source)
        logger.debug("pre-warming %r on %s failed: %s", text, pc.id, exc)
        return False
    except BaseException:  # cancelled mid-prepare: the wire state is unknown
        pc.mark_broken()
        raise
    if prepared:
        ledger.prepared(conn, text, source)
    else:
        ledger.counts[source].already_prepared += 1
    return prepared


async def prepare_ahead(
    pool: ConnectionPool,
    text: str,
    ledger: PreparedAheadLedger,
    source: str,
    *,
    open_connection: bool = True,
) -> bool:
    """Prepare ``text`` on the connection ``pool``'s next checkout gets; return if it did.

    Nothing is done when one of the idle connections that checkout looks through already
    has it, or when every connection is busy (a pre-warm never waits for one in use).
    With nothing idle and room to grow, a connection is opened for it first (only with
    ``open_connection``). A runtime pre-warm treats connections other runtime pre-warms
    claimed as not idle, falling back to one of them only when the pool is at its limit.
    The connection goes back on top of the idle stack, where the next checkout finds it.
    Failures are counted and logged at debug level, not raised.
    """
    if pool.closed or not pool.statement_cache_size:
        return False
    if pool.idle_holds(text):
        ledger.counts[source].already_prepared += 1
        return False
    if not open_connection and not pool.idle:
        return False  # nothing idle: the checkout would open one
    try:
        pc, opened = await checkout_for_warming(
            pool,
            min(pool.config.timeout, PREWARM_TIMEOUT),
            ledger.claimed() if source == RUNTIME else (),
        )
    except (ConnectionFailed, PoolTimeout, PoolClosed, TooManyRequests) as exc:
        ledger.failed(source)
        logger.debug("pre-warming %r: no connection from %s: %s", text, pool.config.name, exc)
        return False
    ledger.connections_opened += opened
    if pc is None:
        return False
    try:
        return await prepare_on(pc, text, ledger, source)
    finally:
        await pool.release(pc)
