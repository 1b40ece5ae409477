"""Kailash-compatible nodes: thin process() adapters over the engines."""

from __future__ import annotations

from kailash_nodes.nodes.workflow_connection_pool import WorkflowConnectionPool

__all__ = ["WorkflowConnectionPool"]
