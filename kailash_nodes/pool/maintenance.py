"""The pool's periodic upkeep: retire old and long-idle connections, refill to the floor.

`maintenance` returns the pool's one `Periodic` job: every ``maintenance_interval`` seconds
(±20 %), a `sweep` that never touches a checked-out connection.
"""

from __future__ import annotations

import time

from kailash_nodes.background import Periodic
from kailash_nodes.pool.connections import ConnectionSet

__all__ = ["maintenance", "sweep"]


def sweep(pool: ConnectionSet, now: float) -> None:
    """Retire expired idle connections, close idle ones beyond the floor, refill."""
    cfg = pool.config
    idle = pool.idle_entries()
    for entry in [e for e in idle if now >= e.deadline]:
        # Above the floor an old connection just goes; at the floor its replacement opens
        # first when there is room; at max_connections one goes at a time, the replacement
        # opening once it has closed.
        if len(pool.entries()) > pool.floor or pool.has_room() or not pool.closing:
            idle.remove(entry)
            pool.retire(entry, "lifetime")
    if cfg.max_idle is not None:
        # idle is a LIFO stack: the coldest connections are at the bottom.
        while idle and len(pool.entries()) > pool.floor and now - idle[0].last_used > cfg.max_idle:
            pool.retire(idle.pop(0), "idle")
    pool.replenish()


def maintenance(pool: ConnectionSet) -> Periodic:
    """Return the (not yet started) periodic job that sweeps ``pool``."""
    return Periodic(
        f"{pool.config.name}-pool:maintenance",
        lambda: sweep(pool, time.monotonic()),
        pool.config.maintenance_interval,
    )
