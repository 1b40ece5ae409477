"""The pool's periodic upkeep: retire old and long-idle connections, refill to the floor.

Runs as one owned task per pool, every ``maintenance_interval`` seconds with jitter, and
never touches a checked-out connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kailash_nodes.pool.engine import ConnectionPool

__all__ = ["run_maintenance", "sweep"]

logger = logging.getLogger("kailash_nodes.pool")


def sweep(pool: ConnectionPool, now: float) -> None:
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
            pool.retire_idle(idle.pop(0), "idle")
    pool.replenish()


async def run_maintenance(pool: ConnectionPool) -> None:
    """Sweep the pool periodically until it is closed or the task is cancelled."""
    interval = pool.config.maintenance_interval
    while not pool.closed:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        try:
            sweep(pool, time.monotonic())
        except Exception:  # keep the upkeep alive; the next sweep retries
            logger.exception("pool %s maintenance sweep failed", pool.config.name)
