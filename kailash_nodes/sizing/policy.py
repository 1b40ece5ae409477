"""The adaptive sizing policy: pure decisions from measured load (no I/O, no clock).

The size wanted is Little's law with headroom: connections busy on average L = λ·W, where
λ is the measured arrival rate of acquires and W the measured time a connection is held.
Waiting callers or an acquire-wait p95 over the objective mean L underestimates the need,
so the pool grows to at least its size plus the callers waiting. Growth is applied at
once; shrinking waits until the wanted size has stayed lower for ``shrink_delay``, then
closes half of the surplus per step (at least one connection), one step per
``cooldown``, and slows down when recent changes flip-flop. Measured by
benchmarks/bench_sizing.py: a 3-second-delay, one-connection-a-second shrink kept ~95% of
a fixed pool's connection-seconds on a bursty load; this keeps the gaps between bursts
cheap while a burst still finds its connections open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kailash_nodes.measure import percentile

__all__ = ["Decision", "Observation", "PolicySettings", "SizingPolicy", "observe", "wanted_size"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the controller measured over one interval."""

    at: float  # monotonic seconds at the end of the interval
    arrival_rate: float  # acquires per second
    hold_time: float  # mean seconds a connection stayed checked out
    utilisation: float  # active / open connections, at the end of the interval
    wait_p95: float  # seconds; 95th percentile of acquire waits in the interval
    waiting: int  # callers waiting now
    size: int  # connections open (or opening) now
    samples: int  # acquires in the interval


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Bounds and tuning of the policy; durations in seconds."""

    min_size: int
    max_size: int
    target_wait: float = 0.005
    headroom: float = 1.25
    shrink_delay: float = 0.5
    cooldown: float = 0.25
    shrink_step: int = 1
    shrink_fraction: float = 0.5  # of the surplus, per step (at least shrink_step)


@dataclass(frozen=True, slots=True)
class Decision:
    """A change of the pool's size and why."""

    from_size: int
    to_size: int
    reason: str


def observe(
    at: float,
    interval: float,
    waits: list[float],
    holds: list[float],
    active: int,
    size: int,
    waiting: int,
) -> Observation:
    """Summarise one interval's raw samples (``wait_p95``: nearest rank, as every
    percentile of the package; numpy's ``inverted_cdf`` gives the same value, measured
    30-180 µs a tick against 1-100 µs for sorting the list, 10-2048 samples).

    >>> o = observe(10.0, 0.5, [0.0, 0.001, 0.02], [0.01, 0.03], 2, 4, 0)
    >>> (o.arrival_rate, round(o.hold_time, 3), o.utilisation, o.samples)
    (6.0, 0.02, 0.5, 3)
    """
    return Observation(
        at=at,
        arrival_rate=len(waits) / interval if interval > 0 else 0.0,
        hold_time=sum(holds) / len(holds) if holds else 0.0,
        utilisation=active / size if size else 0.0,
        wait_p95=percentile(sorted(waits), 95),
        waiting=waiting,
        size=size,
        samples=len(waits),
    )


def wanted_size(obs: Observation, s: PolicySettings, cap: int) -> tuple[int, str]:
    """Return the size the load asks for, clamped to min..min(max, cap), and why.

    >>> s = PolicySettings(min_size=2, max_size=50)
    >>> o = Observation(0, 400.0, 0.05, 1.0, 0.02, 7, 10, 200)   # L = 400 * 0.05 = 20
    >>> wanted_size(o, s, cap=100)
    (25, 'load 20.0 busy (400/s x 50.0 ms), 7 waiting, wait p95 20.0 ms')
    >>> wanted_size(o, s, cap=12)[0]
    12
    """
    busy = obs.arrival_rate * obs.hold_time
    want = math.ceil(busy * s.headroom) if busy > 0 else 0
    reason = f"load {busy:.1f} busy ({obs.arrival_rate:.0f}/s x {obs.hold_time * 1000:.1f} ms)"
    if obs.waiting or obs.wait_p95 > s.target_wait:
        want = max(want, obs.size + obs.waiting)
        reason += f", {obs.waiting} waiting" if obs.waiting else ""
        reason += f", wait p95 {obs.wait_p95 * 1000:.1f} ms" if obs.wait_p95 > s.target_wait else ""
    return max(s.min_size, min(want, s.max_size, cap)), reason


class SizingPolicy:
    """Decide size changes from successive observations (keeps only decision state)."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self._below_since: float | None = None
        self._last_change = -math.inf
        self._directions: list[int] = []

    def decide(self, obs: Observation, current: int, cap: int) -> Decision | None:
        """Return a change of ``current`` (the pool's floor) or None.

        >>> p = SizingPolicy(PolicySettings(1, 20, shrink_delay=2.0, cooldown=1.0))
        >>> busy = Observation(0.0, 200.0, 0.05, 1.0, 0.03, 5, 4, 100)
        >>> p.decide(busy, current=4, cap=100).to_size      # grows at once
        13
        >>> quiet = Observation(1.0, 0.0, 0.0, 0.0, 0.0, 0, 13, 0)
        >>> p.decide(quiet, 13, 100) is None                 # waits before shrinking
        True
        >>> p.decide(Observation(3.5, 0.0, 0.0, 0.0, 0.0, 0, 13, 0), 13, 100).to_size  # half
        7
        """
        s = self.settings
        target, reason = wanted_size(obs, s, cap)
        if current > cap:
            return self._change(obs.at, current, max(cap, s.min_size), f"live cap {cap}")
        if target > current:
            self._below_since = None
            return self._change(obs.at, current, target, "grow: " + reason)
        if target == current:
            self._below_since = None
            return None
        if self._below_since is None:
            self._below_since = obs.at
        waited = obs.at - self._below_since >= s.shrink_delay
        cooled = obs.at - self._last_change >= s.cooldown * (3 if self._flapping() else 1)
        if not (waited and cooled):
            return None
        step = max(s.shrink_step, math.ceil((current - target) * s.shrink_fraction))
        return self._change(obs.at, current, max(target, current - step), "shrink: " + reason)

    def _change(self, at: float, current: int, new: int, reason: str) -> Decision:
        self._last_change = at
        self._directions = [*self._directions[-3:], 1 if new > current else -1]
        return Decision(current, new, reason)

    def _flapping(self) -> bool:
        d = self._directions
        return len(d) == 4 and all(d[i] != d[i + 1] for i in range(3))
