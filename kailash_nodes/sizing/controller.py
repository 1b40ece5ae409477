"""`AdaptivePoolController`: the periodic job that applies the sizing policy to one pool.

Every ``interval`` seconds (with jitter) it reads what the pool measured since the last
tick (acquire waits, hold times, arrivals, waiting callers), asks the policy, and moves the
pool's floor. Every ``cap_refresh`` seconds it reads the server's live connection limit and
how many connections other clients hold (``Driver.connection_limit``), and caps the pool at
``db_share`` (80%) of the limit minus those, so several processes sharing one database stay
inside its budget; a backend without a server limit is capped at its driver's
``max_useful_connections``. That read runs on one of the pool's connections, so it waits
for a tick with an idle one (at most ``CAP_DEFER_LIMIT`` x ``cap_refresh``) rather than
take a connection a caller is waiting for while every connection is busy.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections import deque
from functools import partial
from typing import Any

from kailash_nodes.background import Periodic
from kailash_nodes.drivers import ConnectionLimit, catalog_read
from kailash_nodes.pool import ConnectionPool
from kailash_nodes.sizing.policy import Decision, PolicySettings, SizingPolicy, observe

__all__ = ["CAP_DEFER_LIMIT", "AdaptivePoolController", "live_cap"]

logger = logging.getLogger("kailash_nodes.sizing")

CAP_DEFER_LIMIT = 4  # a busy pool reads its live cap at least every 4 x cap_refresh


def live_cap(max_connections: int, reserved: int, others: int, share: float = 0.8) -> int:
    """Return this pool's cap: ``share`` of the usable server limit minus other clients.

    >>> live_cap(200, 3, 10), live_cap(100, 3, 90), live_cap(151, 0, 0)
    (147, 0, 120)
    """
    return max(0, math.floor(share * (max_connections - reserved)) - others)


class AdaptivePoolController:
    """Resize one pool from measured load; see the module docstring."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        interval: float = 0.25,
        cap_refresh: float = 5.0,
        db_share: float = 0.8,
        settings: PolicySettings | None = None,
    ) -> None:
        cfg = pool.config
        self.pool = pool
        self.interval = interval
        self.cap_refresh = cap_refresh
        self.db_share = db_share
        self.policy = SizingPolicy(
            settings or PolicySettings(cfg.min_connections, cfg.max_connections)
        )
        self.enabled = True
        self.cap = cfg.max_connections
        self.cap_source: dict[str, Any] = {"source": "max_connections option"}
        self._history: deque[dict[str, Any]] = deque(maxlen=1000)
        self._job = Periodic(f"{cfg.name}:adaptive-sizing", self.tick, lambda: self.interval)
        self._seen_acquires = pool.stats.acquires
        self._seen_holds = pool.stats.hold_time.total_count
        self._last_tick = time.monotonic()
        self._last_cap = -math.inf
        self.ticks = 0

    async def start(self) -> None:
        """Read the live cap and start the periodic job (idempotent)."""
        if not self._job.running:
            await self.refresh_cap()
            self._last_tick = time.monotonic()
            self._job.start()

    async def stop(self) -> None:
        """Stop adjusting (a tick in progress is cancelled); the pool keeps its size."""
        self.enabled = False
        await self._job.stop()

    @property
    def running(self) -> bool:
        """Return whether the periodic job is running."""
        return self._job.running

    def get_adjustment_history(self) -> list[dict[str, Any]]:
        """Return every size change: timestamp, from_size, to_size, reason and the inputs."""
        return list(self._history)

    async def tick(self) -> Decision | None:
        """Measure the last interval, decide, apply; return the change made, if any."""
        pool, stats = self.pool, self.pool.stats
        now = time.monotonic()
        new_acquires = stats.acquires - self._seen_acquires
        new_holds = stats.hold_time.total_count - self._seen_holds
        interval, self._last_tick = now - self._last_tick, now
        self._seen_acquires, self._seen_holds = stats.acquires, stats.hold_time.total_count
        if not self.enabled or pool.closed:
            return None
        self.ticks += 1
        since = now - self._last_cap
        if since >= self.cap_refresh and (
            pool.state()["idle_connections"] or since >= CAP_DEFER_LIMIT * self.cap_refresh
        ):  # the query takes a connection: not from a caller while every one is busy
            await self.refresh_cap()
        state = pool.state()
        obs = observe(
            now,
            interval,
            stats.acquire_wait.recent(new_acquires),
            stats.hold_time.recent(new_holds),
            state["active_connections"],
            state["total_connections"] + state["opening_connections"],
            state["waiting_requests"],
        )
        pool.set_limit(self.cap)
        decision = self.policy.decide(obs, pool.floor, min(self.cap, pool.limit))
        if decision is None or decision.to_size == pool.floor:
            return None
        pool.resize(max(pool.config.min_connections, min(decision.to_size, pool.limit)))
        self._history.append(
            {
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                "from_size": decision.from_size,
                "to_size": pool.floor,
                "reason": decision.reason,
                "arrival_rate": obs.arrival_rate,
                "hold_time_ms": obs.hold_time * 1000.0,
                "utilisation": obs.utilisation,
                "wait_p95_ms": obs.wait_p95 * 1000.0,
                "waiting": obs.waiting,
                "open_connections": obs.size,
                "samples": obs.samples,
                "cap": self.cap,
            }
        )
        return decision

    async def refresh_cap(self) -> int:
        """Read the server's live limit and other clients' connections; return the cap.

        A failed read keeps the last cap and adds its ``error`` to ``cap_source``.
        """
        self._last_cap = time.monotonic()
        pool = self.pool
        driver, max_connections = pool.driver, pool.config.max_connections
        if driver.max_useful_connections is not None:  # no server limit: no round trip
            self.cap = min(max_connections, driver.max_useful_connections)
            self.cap_source = {"source": driver.name, "cap": self.cap}
            return self.cap
        try:
            limit = await self._read_limit()
        except Exception as exc:  # keep the last cap; report why
            logger.warning("could not read the live connection limit: %s", exc)
            self.cap_source = {**self.cap_source, "error": str(exc)}
            return self.cap
        if limit is None:
            return self.cap
        cap = live_cap(limit.max_connections, limit.reserved, limit.others, self.db_share)
        self.cap = min(max_connections, cap)
        self.cap_source = {
            "source": driver.name,
            "max_connections": limit.max_connections,
            "reserved": limit.reserved,
            "others": limit.others,
            "share": self.db_share,
            "cap": self.cap,
        }
        return self.cap

    async def _read_limit(self) -> ConnectionLimit | None:
        """Run ``Driver.connection_limit`` on one of the pool's connections."""
        pool = self.pool
        async with pool.connection() as pc:
            read = partial(  # counted now: the checkout may have opened one more
                pool.driver.connection_limit,
                application_name=pool.config.connect.application_name,
                own_connections=len(pool.entries()),
            )
            return await catalog_read(pc, read, pool.config.query_timeout)
