"""Adaptive pool sizing: a pure policy and the periodic job that applies it."""

from __future__ import annotations

from kailash_nodes.sizing.controller import AdaptivePoolController, live_cap
from kailash_nodes.sizing.policy import (
    Decision,
    Observation,
    PolicySettings,
    SizingPolicy,
    observe,
    wanted_size,
)

__all__ = [
    "AdaptivePoolController",
    "Decision",
    "Observation",
    "PolicySettings",
    "SizingPolicy",
    "live_cap",
    "observe",
    "wanted_size",
]
