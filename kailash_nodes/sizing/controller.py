"""`AdaptivePoolController`: the owned task that applies the sizing policy to one pool.

Every ``interval`` seconds (with jitter) it reads what the pool measured since the last
tick (acquire waits, hold times, arrivals, waiting callers), asks the policy, and moves the
pool's floor. Every ``cap_refresh`` seconds it reads the server's live connection limit and
how many connections other clients hold, and caps the pool at ``db_share`` (80%) of the
limit minus those, so several processes sharing one database stay inside its budget. That
read runs on one of the pool's connections, so it waits for a tick with an idle one (at
most ``CAP_DEFER_LIMIT`` x ``cap_refresh``) rather than take a connection a caller is
waiting for while every connection is busy.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import random
import time
from collections import deque
from typing import Any

from kailash_nodes.pool import ConnectionPool
from kailash_nodes.sizing.policy import Decision, PolicySettings, SizingPolicy, observe

__all__ = ["CAP_DEFER_LIMIT", "SQLITE_CAP", "AdaptivePoolController", "live_cap"]

logger = logging.getLogger("kailash_nodes.sizing")

CAP_DEFER_LIMIT = 4  # a busy pool reads its live cap at least every 4 x cap_refresh
SQLITE_CAP = 16  # one writer at a time and a thread per connection: more buys nothing

_PG_LIMIT_SQL = (
    "SELECT current_setting('max_connections')::int AS max_connections, "
    "current_setting('superuser_reserved_connections')::int AS reserved, "
    "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
    "AND application_name IS DISTINCT FROM $1)::int AS others"
)
_MY_LIMIT_SQL = (
    "SELECT @@max_connections AS max_connections, 0 AS reserved, "
    "(SELECT COUNT(*) FROM information_schema.processlist) AS everyone"
)


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
        self._task: asyncio.Task[None] | None = None
        self._seen_acquires = pool.stats.acquires
        self._seen_holds = pool.stats.hold_time.total_count
        self._last_tick = time.monotonic()
        self._last_cap = -math.inf
        self.ticks = 0

    async def start(self) -> None:
        """Read the live cap and start the task (idempotent)."""
        if self._task is None:
            await self.refresh_cap()
            self._last_tick = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self.pool.config.name}:adaptive-sizing"
            )

    async def stop(self) -> None:
        """Stop adjusting; the pool keeps its current size."""
        self.enabled = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def running(self) -> bool:
        """Return whether the task is running."""
        return self._task is not None and not self._task.done()

    def get_adjustment_history(self) -> list[dict[str, Any]]:
        """Return every size change: timestamp, from_size, to_size, reason and the inputs."""
        return list(self._history)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            try:
                await self.tick()
            except Exception:  # keep adjusting; the next tick retries
                logger.exception("adaptive sizing tick failed for %s", self.pool.config.name)

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
        """Read the server's live limit and other clients' connections; return the cap."""
        self._last_cap = time.monotonic()
        pool = self.pool
        backend = pool.config.connect.backend
        if backend == "sqlite":
            self.cap = min(pool.config.max_connections, SQLITE_CAP)
            self.cap_source = {"source": "sqlite", "cap": self.cap}
            return self.cap
        try:
            async with pool.connection() as pc:
                if backend == "postgresql":
                    res = await pool.execute(
                        pc, _PG_LIMIT_SQL, [pool.config.connect.application_name], fetch_mode="one"
                    )
                    row = dict(res.data)
                else:
                    res = await pool.execute(pc, _MY_LIMIT_SQL, fetch_mode="one")
                    row = dict(res.data)
                    row["others"] = int(row.pop("everyone")) - len(pool.entries())
        except Exception as exc:  # keep the last cap; report why
            logger.warning("could not read the live connection limit: %s", exc)
            self.cap_source = {**self.cap_source, "error": str(exc)}
            return self.cap
        cap = live_cap(
            int(row["max_connections"]), int(row["reserved"]), int(row["others"]), self.db_share
        )
        self.cap = min(pool.config.max_connections, cap)
        self.cap_source = {"source": backend, **row, "share": self.db_share, "cap": self.cap}
        return self.cap
