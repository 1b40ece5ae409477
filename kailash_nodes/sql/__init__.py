"""SQL text handling: placeholder rewriting and parameter binding for every driver."""

from __future__ import annotations

from kailash_nodes.sql.placeholders import FORMAT, NUMERIC, QMARK, RewrittenQuery, bind, rewrite

__all__ = ["FORMAT", "NUMERIC", "QMARK", "RewrittenQuery", "bind", "rewrite"]
