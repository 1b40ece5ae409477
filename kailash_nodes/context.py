"""Context shared across layers: the workflow run the current task belongs to.

A leaf module so that the router (which uses a run as a session) does not depend on the
runtime that sets it.
"""

from __future__ import annotations

import contextvars

__all__ = ["current_run_id", "run_id_var"]

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kailash_nodes_run_id", default=None
)


def current_run_id() -> str | None:
    """Return the id of the workflow run executing in this context, or None outside a run."""
    return run_id_var.get()
