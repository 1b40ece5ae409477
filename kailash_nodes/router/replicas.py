"""Read replicas: health, measured lag, bans after failures, and the replay position.

One owned monitor task per router polls every replica (with jitter). On PostgreSQL the lag is
measured on the replica itself: zero when everything received has been replayed, else the
age of the last replayed transaction; the replay LSN is kept for read-your-writes checks.
Other backends are checked for liveness only (their lag is reported as unknown).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from kailash_nodes.errors import KailashNodesError
from kailash_nodes.pool import ConnectionPool

__all__ = ["ReplicaSet", "ReplicaState", "lsn_to_int"]

logger = logging.getLogger("kailash_nodes.router")

# Lag measured on the standby: 0 when everything received is replayed, else the age of the
# last replayed commit. The replay LSN is what read-your-writes compares against.
PG_LAG_SQL = (
    "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replay_lsn, "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
    "AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0.0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag"
)
_BAN_MIN, _BAN_MAX = 1.0, 30.0


def lsn_to_int(lsn: str | None) -> int:
    """Return a PostgreSQL LSN ('16/B374D848') as an integer (0 for None).

    >>> lsn_to_int("0/10"), lsn_to_int("1/0") == 2**32, lsn_to_int(None)
    (16, True, 0)
    """
    if not lsn:
        return 0
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class ReplicaState:
    """What the router knows about one replica pool."""

    __slots__ = (
        "ban_seconds",
        "banned_until",
        "checks",
        "failures",
        "lag",
        "last_error",
        "name",
        "pool",
        "reads",
        "replay_lsn",
    )

    def __init__(self, name: str, pool: ConnectionPool) -> None:
        self.name = name
        self.pool = pool
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
        self._task: asyncio.Task[None] | None = None

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
        """Start the monitor task (idempotent)."""
        if self.states and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._monitor(), name="kailash_nodes-router:replica-monitor"
            )

    async def stop(self) -> None:
        """Stop the monitor task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def check_all(self) -> None:
        """Check every replica once, concurrently."""
        await asyncio.gather(*(self.check(s) for s in self.states))

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            await self.check_all()

    async def check(self, state: ReplicaState) -> None:
        """Measure one replica's lag and replay position; ban it when it fails."""
        state.checks += 1
        try:
            async with asyncio.timeout(max(self.interval, 1.0) * 2):
                async with state.pool.connection() as pc:
                    if state.pool.config.connect.backend == "postgresql":
                        res = await state.pool.execute(
                            pc, PG_LAG_SQL, fetch_mode="one", observe=False
                        )
                        row = res.data
                        if not row["standby"]:
                            raise KailashNodesError("not a standby (pg_is_in_recovery() is false)")
                        state.lag = float(row["lag"] or 0.0)
                        state.replay_lsn = lsn_to_int(row["replay_lsn"])
                    else:
                        await state.pool.execute(pc, "SELECT 1", observe=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.ban(time.monotonic(), exc)
            return
        state.healthy_again()
