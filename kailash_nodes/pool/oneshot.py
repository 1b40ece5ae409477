"""One statement on a pooled connection in one call: checkout, execute, give back.

`run_once` is `acquire` → `execute` → `release` for the statement a router sends most:
one statement, already rewritten for the driver, all rows. It exists for speed only.
Between real round trips our code runs with cold caches, and every handle object, call
frame and clock read it takes costs about three times what it costs in a tight loop
(docs/performance.md). So the common case takes no lease handle, reads the clock three
times, and runs in one frame over the driver's.

The common case is an idle connection that `acquire` would lend at once (`take_ready`:
nothing to check or retire), or, with nothing idle, one handed over after a wait in the
pool's queue (`queue`, which `acquire` waits in too), on a pool with no observer. Anything
else (an idle connection due for a check, a pool not open yet, an observer) goes through
`acquire`, `execute` and `release` themselves. Both ways do the same bookkeeping:
the checkout, its wait, the statement's time and outcome, the hold time, the health
credit, and on release the same rollback/reset/retire rules (`ConnectionPool.checkin`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kailash_nodes.errors import ConnectionFailed, ParameterError, QueryError
from kailash_nodes.pool.engine import ConnectionPool, QueryResult
from kailash_nodes.sql import RewrittenQuery, bind, calls_routines

if TYPE_CHECKING:
    from kailash_nodes.drivers import DriverConnection

__all__ = ["Ran", "run_once"]


class Ran:
    """What `run_once` did: the result or the database's error, and where and when."""

    __slots__ = ("conn", "error", "hit", "lease_id", "result", "sent")

    def __init__(
        self,
        result: QueryResult | None,
        error: QueryError | None,
        lease_id: str,
        conn: DriverConnection,
        hit: bool,
        sent: float,
    ) -> None:
        self.result = result
        self.error = error  # the database rejected the statement (the connection is fine)
        self.lease_id = lease_id
        self.conn = conn  # the driver connection it ran on (its statement cache, its mode)
        self.hit = hit  # the ``lookup`` text was in that connection's statement cache
        self.sent = sent  # the clock when the statement went to the driver


async def run_once(
    pool: ConnectionPool,
    query: str,
    rq: RewrittenQuery,
    params: Any,
    lookup: str | None,
    timeout: float | None = None,
) -> Ran:
    """Run ``query`` (``rq``: its one statement rewritten for ``pool.style``) on a pooled
    connection and give the connection back.

    ``lookup``: a statement text to look up in the connection's statement cache before
    running (and to prefer a connection that has it). ``timeout``: how long to wait for
    a connection (None: the pool's ``timeout``), as `acquire`'s. A QueryError (the database
    rejected the statement) is returned in `Ran.error`; anything else `acquire` and
    `execute` raise is raised. The connection always goes back (replaced when it broke,
    or when cancelled mid-statement).
    """
    args = bind(rq, params)  # ParameterError before anything is checked out
    start = time.monotonic()
    if pool.observer is not None:  # it is handed the lease
        return await _leased(pool, query, rq, params, lookup, timeout)
    entry = pool.take_ready(lookup, start)
    acquired = start  # checked out at once: held from here
    if entry is None:
        if pool.idle or not pool.opened or pool.closed:  # a check, a retirement, opening
            return await _leased(pool, query, rq, params, lookup, timeout)
        # Nothing idle: the queue, awaited here (`wait_entry` without its frame, which
        # every hand-over would resume)
        fut = pool.queue(start, pool.acquire_timeout if timeout is None else timeout)
        try:
            entry = await fut
        except BaseException as exc:
            pool.unqueue(fut, exc)
            raise
        pool.lend(entry)
        acquired = time.monotonic()  # the wait is not part of the hold time
    lease_id = f"{entry.name}#{pool.lease_seq}"
    conn = entry.conn
    hit = lookup is not None and conn.has_statement(lookup)
    if pool.routines_dirty and calls_routines(query):
        entry.dirty = True  # a user function may have set a role: reset on release
    was_in = conn.in_transaction()
    sent = time.monotonic()
    pool.stats.acquire_wait.add(sent - start)
    try:
        if pool.max_rows is None:
            data, count = await conn.fetch(rq.text, args, "all", 100, pool.query_timeout)
        else:
            data, count = await pool.fetch_limited(conn, rq, args, "all", 100, None)
    except (QueryError, ConnectionFailed) as exc:
        mapped = pool.failed(entry, None, query, exc, time.monotonic() - sent, was_in, True)
        await pool.checkin(entry, acquired)
        if mapped is exc and isinstance(exc, QueryError):
            return Ran(None, exc, lease_id, conn, hit, sent)
        if mapped is exc:
            raise
        raise mapped from exc
    except ParameterError:  # the driver refused a value before sending: the link is fine
        await pool.checkin(entry, acquired)
        raise
    except BaseException:  # cancelled mid-statement: the wire state is unknown
        entry.broken = True
        await pool.checkin(entry, acquired)
        raise
    duration = pool.succeeded(entry, sent)
    if pool.give_back(entry, acquired) is None:  # `checkin`, with no coroutine when clean
        await pool.cleaned(entry)
    return Ran(QueryResult(data, count, duration), None, lease_id, conn, hit, sent)


async def _leased(
    pool: ConnectionPool,
    query: str,
    rq: RewrittenQuery,
    params: Any,
    lookup: str | None,
    timeout: float | None,
) -> Ran:
    """`run_once` through the lease API: an idle check, opening the pool, an observer."""
    pc = await pool.acquire(timeout, prefer=lookup)
    try:
        conn = pc.connection
        hit = lookup is not None and conn.has_statement(lookup)
        sent = time.monotonic()
        try:
            return Ran(
                await pool.execute(pc, query, params, rewritten=rq), None, pc.id, conn, hit, sent
            )
        except QueryError as exc:
            return Ran(None, exc, pc.id, conn, hit, sent)
    finally:
        await pool.release(pc)
