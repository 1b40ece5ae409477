"""Read replicas: health, measured lag, bans after failures, and the replay position.

One periodic monitor per router checks every replica (with jitter) through its driver's
``replica_status``: where the backend reports one (PostgreSQL, measured on the replica
itself: zero when everything received has been replayed, else the age of the last replayed
transaction) the lag and the replay position are kept for read-your-writes checks; other
backends are checked for liveness only (their lag is reported as unknown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kailash_nodes.background import Periodic
from kailash_nodes.drivers import catalog_read
from kailash_nodes.errors import KailashNodesError
from kailash_nodes.pool import ConnectionPool

__all__ = ["ReplicaSet", "ReplicaState"]

logger = logging.getLogger("kailash_nodes.router")

_BAN_MIN, _BAN_MAX = 1.0, 30.0


class ReplicaState:
    """What the router knows about one replica pool."""

    __slots__ = (
        "ban_seconds",
        "banned_until",
        "checkout_timeout",
        "checks",
        "failures",
        "lag",
        "last_error",
        "name",
        "pool",
        "reads",
        "replay_lsn",
        "target",
    )

    def __init__(self, name: str, pool: ConnectionPool) -> None:
        self.name = name
        self.pool = pool
        self.target = f"replica:{name}"  # the routing target reads here are reported as
        # How long a read waits for one of its connections before trying the primary.
        self.checkout_timeout = min(pool.config.timeout, 2.0)
        self.lag: float | None = None  # seconds; None until measured (or not measurable)
        self.replay_lsn = 0
        self.banned_until = 0.0
        self.ban_seconds = _BAN_MIN
        self.failures = 0
        self.checks = 0
        self.reads = 0
        self.last_error: str | None = None

    def usable(self, now: float, max_lag: float) -> bool:
        """Return whether reads may go here: not banned and not lagging past ``max_lag``."""
        return now >= self.banned_until and (self.lag is None or self.lag <= max_lag)

    def ban(self, now: float, error: BaseException | str) -> None:
        """Stop sending reads here for a while; repeated failures double the ban."""
        self.failures += 1
        self.last_error = str(error)
        self.banned_until = now + self.ban_seconds
        logger.warning("replica %s banned for %.1fs: %s", self.name, self.ban_seconds, error)
        self.ban_seconds = min(self.ban_seconds * 2, _BAN_MAX)

    def healthy_again(self) -> None:
        """Forget past failures after a successful check."""
        self.banned_until = 0.0
        self.ban_seconds = _BAN_MIN
        self.last_error = None

    def describe(self, now: float) -> dict[str, Any]:
        """Return this replica's state for metrics."""
        return {
            "healthy": now >= self.banned_until,
            "lag_seconds": self.lag,
            "replay_lsn": self.replay_lsn,
            "banned_for_seconds": max(0.0, self.banned_until - now),
            "checks": self.checks,
            "failures": self.failures,
            "reads": self.reads,
            "last_error": self.last_error,
        }


class ReplicaSet:
    """The replicas of one router, chosen round-robin among the usable ones."""

    def __init__(self, replicas: dict[str, ConnectionPool], interval: float) -> None:
        self.states = [ReplicaState(name, pool) for name, pool in replicas.items()]
        self.interval = interval
        self._next = 0
        self._monitor = Periodic(
            "kailash_nodes-router:replica-monitor", self.check_all, lambda: self.interval
        )

    def pick(self, max_lag: float) -> ReplicaState | None:
        """Return the next usable replica, or None when none is."""
        states = self.states
        now = time.monotonic()
        for _ in range(len(states)):
            state = states[self._next % len(states)]
            self._next += 1
            if state.usable(now, max_lag):
                return state
        return None

    def peek(self, max_lag: float) -> ReplicaState | None:
        """Return the replica ``pick`` would return now, without moving the rotation."""
        states = self.states
        now = time.monotonic()
        for i in range(len(states)):
            state = states[(self._next + i) % len(states)]
            if state.usable(now, max_lag):
                return state
        return None

    def start(self) -> None:
        """Start the periodic monitor (idempotent; nothing to do without replicas)."""
        if self.states:
            self._monitor.start()

    async def stop(self) -> None:
        """Stop the monitor and wait for it (a check in progress is cancelled)."""
        await self._monitor.stop()

    async def check_all(self) -> None:
        """Check every replica once, concurrently."""
        await asyncio.gather(*(self.check(s) for s in self.states))

    async def check(self, state: ReplicaState) -> None:
        """Measure one replica's lag and replay position; ban it when it fails."""
        state.checks += 1
        bound = max(self.interval, 1.0) * 2
        try:
            async with asyncio.timeout(bound):
                async with state.pool.connection() as pc:
                    status = await catalog_read(pc, state.pool.driver.replica_status, bound)
            if status is not None:
                if not status.standby:
                    raise KailashNodesError("not a standby (the server is not in recovery)")
                state.lag = status.lag
                state.replay_lsn = status.position or 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.ban(time.monotonic(), exc)
            return
        state.healthy_again()
