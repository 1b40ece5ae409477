"""kailash_nodes: a connection pool and query router for Kailash-style workflows."""

from __future__ import annotations
