"""The sizing policy, decision by decision (pure logic: no server, no clock)."""

from __future__ import annotations

import itertools

import pytest

from kailash_nodes.sizing import (
    Observation,
    PolicySettings,
    SizingPolicy,
    live_cap,
    observe,
    wanted_size,
)

S = PolicySettings(min_size=2, max_size=40, shrink_delay=2.0, cooldown=1.0)


def obs(
    at: float, rate: float, hold: float, *, size: int, waiting: int = 0, p95: float = 0.0
) -> Observation:
    return Observation(at, rate, hold, 0.5, p95, waiting, size, int(rate))


@pytest.mark.parametrize(
    ("rate", "hold", "size", "waiting", "p95", "cap", "want"),
    [
        (0.0, 0.0, 5, 0, 0.0, 100, 2),  # idle: the floor is min
        (100.0, 0.1, 5, 0, 0.0, 100, 13),  # Little: 10 busy x 1.25 headroom
        (100.0, 0.1, 20, 0, 0.0, 100, 13),  # over-provisioned: wants fewer
        (10.0, 0.01, 8, 6, 0.05, 100, 14),  # callers waiting: at least size + waiting
        (1000.0, 1.0, 8, 0, 0.0, 100, 40),  # clamped to max
        (1000.0, 1.0, 8, 0, 0.0, 12, 12),  # clamped to the live cap
    ],
)
def test_wanted_size_follows_littles_law_and_queueing(
    rate: float, hold: float, size: int, waiting: int, p95: float, cap: int, want: int
) -> None:
    assert wanted_size(obs(0, rate, hold, size=size, waiting=waiting, p95=p95), S, cap)[0] == want


def test_growth_is_immediate_and_shrinking_is_gradual() -> None:
    p = SizingPolicy(S)
    grow = p.decide(obs(0.0, 200.0, 0.1, size=4, waiting=3), current=4, cap=100)
    assert grow is not None and grow.to_size == 25 and grow.reason.startswith("grow")
    sizes = [25]
    t = 0.5
    while t < 30.0:
        d = p.decide(obs(t, 0.0, 0.0, size=sizes[-1]), current=sizes[-1], cap=100)
        if d is not None:
            surplus = sizes[-1] - 2
            assert d.to_size == sizes[-1] - max(1, -(-surplus // 2))  # half of the surplus
            sizes.append(d.to_size)
        t += 0.25
    assert sizes[1] == 13  # 25 - ceil(23 / 2)
    assert sizes[-1] == 2  # back to min eventually
    # nothing before the shrink delay, and at most one step per cooldown
    assert len(sizes) - 1 <= int((30.0 - 2.5) / 1.0) + 1


def test_flip_flopping_load_slows_shrinking() -> None:
    p = SizingPolicy(PolicySettings(min_size=1, max_size=20, shrink_delay=0.0, cooldown=1.0))
    t, size, changes = 0.0, 4, []
    for i in range(40):
        busy = i % 2 == 0
        o = obs(t, 200.0 if busy else 0.0, 0.05 if busy else 0.0, size=size, waiting=2 * busy)
        d = p.decide(o, current=size, cap=100)
        if d is not None:
            changes.append((t, d.to_size - size))
            size = d.to_size
        t += 0.5
    downs = [c for c in changes if c[1] < 0]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(downs)]
    assert gaps and min(gaps) >= 1.0


def test_a_lower_live_cap_shrinks_at_once() -> None:
    p = SizingPolicy(S)
    d = p.decide(obs(0.0, 0.0, 0.0, size=30), current=30, cap=10)
    assert d is not None and d.to_size == 10 and "cap" in d.reason


def test_live_cap_is_80_percent_of_the_usable_limit_minus_others() -> None:
    assert live_cap(200, 3, 0) == 157
    assert live_cap(200, 3, 150) == 7
    assert live_cap(50, 3, 100) == 0


def test_wait_p95_is_the_nearest_rank_numpy_inverted_cdf_gives() -> None:
    import random

    import numpy as np

    rng = random.Random(13)
    for n in (1, 2, 19, 20, 21, 100, 2048):
        waits = [rng.expovariate(100.0) for _ in range(n)]
        got = observe(1.0, 1.0, waits, [0.01], 1, 2, 0).wait_p95
        assert got == float(np.percentile(waits, 95, method="inverted_cdf")), n
    assert observe(1.0, 1.0, [], [], 0, 0, 0).wait_p95 == 0.0
