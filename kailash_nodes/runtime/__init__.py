"""The node runtime: `Node`, `LocalRuntime` and workflows in the original Kailash idiom."""

from __future__ import annotations

from kailash_nodes.runtime.local import LocalRuntime, Results, current_run_id
from kailash_nodes.runtime.node import Node, NodeRegistry, node_type, register_node_type
from kailash_nodes.runtime.prewarm import PrewarmStats
from kailash_nodes.runtime.workflow import (
    Connection,
    Workflow,
    WorkflowBuilder,
    topological_levels,
)

__all__ = [
    "Connection",
    "LocalRuntime",
    "Node",
    "NodeRegistry",
    "PrewarmStats",
    "Results",
    "Workflow",
    "WorkflowBuilder",
    "current_run_id",
    "node_type",
    "register_node_type",
    "topological_levels",
]
