"""Warming a pool ahead of a caller: open a connection, or lend the one acquire lends next.

The idle stack is LIFO, so a connection checked out here and given back is the one the
pool's next acquire lends. Nothing here waits for a connection someone else holds: with
nothing idle, a connection is opened (when there is room) and this code waits only for
that opening. A pool that is not open yet is left alone: opening it is its first
caller's job, and a warm-up may be cancelled at any await, which must not cut an opening
short.

``open_idle`` wraps the pool's ``open_ahead`` (open one connection now, for nobody in
particular) with the checks and the bounded wait a warm-up needs.

Both take ``skip``: idle connections a warm-up should pass over (another warm-up has
claimed them for its own caller). Idle means "idle and not skipped" then, among the
few most recently used ones an acquire looks through (``AFFINITY_DEPTH``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Container
from typing import TYPE_CHECKING

from kailash_nodes.errors import ConnectionFailed
from kailash_nodes.pool.connections import AFFINITY_DEPTH

if TYPE_CHECKING:
    from kailash_nodes.pool.engine import ConnectionPool
    from kailash_nodes.pool.entry import PooledConnection

__all__ = ["checkout_for_warming", "open_idle"]

_NONE: frozenset[object] = frozenset()


def _bring_up_unskipped(pool: ConnectionPool, skip: Container[object]) -> bool:
    """Move the most recently used idle connection not in ``skip`` to the top of the idle
    stack (looking ``AFFINITY_DEPTH`` deep); return whether there was one."""
    idle = pool.idle_entries()
    for i in range(len(idle) - 1, max(-1, len(idle) - 1 - AFFINITY_DEPTH), -1):
        if idle[i].conn not in skip:
            if i != len(idle) - 1:
                idle.append(idle.pop(i))
            return True
    return False


async def open_idle(pool: ConnectionPool, timeout: float, skip: Container[object] = _NONE) -> bool:
    """Open one connection when none is idle and the pool has room; return if it did.

    The new connection goes where any new one goes: to the oldest waiter if callers are
    waiting, else on top of the idle stack. Waits up to ``timeout`` for it to open;
    a cancelled or timed-out wait leaves the opening to finish in the pool's own task.
    Raises ConnectionFailed when the opening failed.
    """
    if not pool.opened or pool.closed or not pool.has_room():
        return False
    if any(e.conn not in skip for e in pool.idle_entries()[-AFFINITY_DEPTH:]):
        return False
    failed = pool.stats.connections_failed
    task = pool.open_ahead()  # an owned pool task, counted in the pool's size at once
    if task is None:
        return False
    await asyncio.wait({task}, timeout=timeout)  # not cancelled with us: the pool owns it
    if pool.stats.connections_failed > failed:
        raise ConnectionFailed(f"pool {pool.config.name!r} could not open a connection")
    return True


async def checkout_for_warming(
    pool: ConnectionPool, timeout: float, skip: Container[object] = _NONE
) -> tuple[PooledConnection | None, bool]:
    """Check out the connection the pool's next acquire would lend, if one can be had now.

    Returns ``(connection or None, opened)``. With nothing idle, first opens one when
    the pool has room (``opened`` is True then; see `open_idle`). The connection is None
    when nothing is idle even so (the pool is at its limit, or waiting callers took the
    new one): this never waits for a connection in use. Raises ConnectionFailed when the
    opening failed, and what ``pool.acquire`` raises. Give the connection back with
    ``pool.release``: it goes back on top of the idle stack.

    A connection in ``skip`` is lent only when every idle one is (the pool is at its
    limit): a warm-up on it still helps, just less.
    """
    if not pool.opened or pool.closed:
        return None, False
    opened = await open_idle(pool, timeout, skip)
    if not pool.idle_entries():
        return None, opened
    _bring_up_unskipped(pool, skip)
    return await pool.acquire(timeout), opened  # pops the top of the idle stack, no wait
