"""Database drivers behind one protocol; each driver library is imported lazily."""

from __future__ import annotations

import importlib

from kailash_nodes.drivers.base import (
    FETCH_MODES,
    ConnectionLimit,
    Driver,
    DriverConnection,
    DriverCursor,
    FunctionCatalog,
    ReplicaStatus,
    Rows,
    catalog_read,
)
from kailash_nodes.errors import ConfigError

__all__ = [
    "FETCH_MODES",
    "ConnectionLimit",
    "Driver",
    "DriverConnection",
    "DriverCursor",
    "FunctionCatalog",
    "ReplicaStatus",
    "Rows",
    "catalog_read",
    "get_driver",
]

# A backend: its module (which defines DRIVER), its client library, and the extra that
# installs it (see docs/backends.md, "Adding a backend").
_MODULES = {
    "postgresql": ("kailash_nodes.drivers.postgres", "asyncpg", "postgres"),
    "mysql": ("kailash_nodes.drivers.mysql", "aiomysql", "mysql"),
    "sqlite": ("kailash_nodes.drivers.sqlite", "aiosqlite", "sqlite"),
}


def get_driver(backend: str) -> Driver:
    """Return the driver for ``backend``, importing its client library only now.

    Raises ConfigError naming the extra to install when the library is missing.
    """
    try:
        module_name, library, extra = _MODULES[backend]
    except KeyError:
        raise ConfigError(f"no driver for database_type {backend!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != library:
            raise
        raise ConfigError(
            f"database_type {backend!r} needs the {library} package: "
            f"pip install 'kailash-nodes[{extra}]'"
        ) from exc
    driver: Driver = module.DRIVER
    return driver
