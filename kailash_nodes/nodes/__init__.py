"""Kailash-compatible nodes: thin process() adapters over the engines."""

from __future__ import annotations

from kailash_nodes.nodes.query_router import QueryRouterNode
from kailash_nodes.nodes.workflow_connection_pool import WorkflowConnectionPool

__all__ = ["QueryRouterNode", "WorkflowConnectionPool"]
